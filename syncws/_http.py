"""HTTP request and response objects handed to ``fetch``. Pure: no sockets."""

from __future__ import annotations

import json as _json
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

if TYPE_CHECKING:
    from ._handshake import UpgradeDecision

__all__ = ["Headers", "Request", "Response"]

HeaderItems = Mapping[str, str] | Iterable[tuple[str, str]]

# RFC 9110 token characters: what a header name (or a subprotocol) is made of.
TOKEN_CHARS = frozenset("!#$%&'*+-.^_`|~0123456789"
                        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


def header_pairs(headers: object) -> list[tuple[str, str]]:
    """Check headers a user passes in (a mapping or (name, value) pairs).

    ``TypeError`` or ``ValueError``, naming ``headers``, for anything that
    could not go on the wire as given (a CR or LF would start a header of
    its own).
    """
    if headers is None:
        return []
    if isinstance(headers, Mapping):
        pairs = list(headers.items())
    elif isinstance(headers, Iterable) and not isinstance(headers, (str, bytes)):
        pairs = list(headers)
    else:
        raise TypeError(f"headers must be a dict or a list of (name, value) pairs, "
                        f"not {type(headers).__name__}")
    checked: list[tuple[str, str]] = []
    for pair in pairs:
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
            raise TypeError("headers must be (name, value) pairs")
        name, value = pair
        if not isinstance(name, str) or not isinstance(value, str):
            raise TypeError("headers must map str names to str values")
        if not name or any(ch not in TOKEN_CHARS for ch in name):
            raise ValueError(f"headers: {name!r} is not a valid header name")
        # RFC 9110 5.5: no control characters, no surrounding whitespace,
        # and HTTP/1.1 carries bytes: latin-1 at most.
        value = value.strip(" \t")
        if any((ch < " " and ch != "\t") or ch == "\x7f" for ch in value):
            raise ValueError(f"headers: the value of {name!r} contains a control character")
        if not value.isascii():
            try:
                value.encode("latin-1")
            except UnicodeEncodeError:
                raise ValueError(f"headers: the value of {name!r} is not latin-1; encode it "
                                 f"(RFC 8187, or percent-encoding)") from None
        checked.append((name, value))
    return checked


class Headers(Mapping[str, str]):
    """Case-insensitive, read-only view of HTTP headers.

    ``headers["content-type"]`` and ``headers["Content-Type"]`` are the same;
    a repeated header reads as its values joined with ", ".
    ``get_all(name)`` returns every value.
    """

    __slots__ = ("_items", "_map")

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items: list[tuple[str, str]] = list(items)
        self._map: dict[str, str] = {}
        for name, value in self._items:
            key = name.lower()
            self._map[key] = f"{self._map[key]}, {value}" if key in self._map else value

    def __getitem__(self, name: str) -> str:
        return self._map[name.lower()]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._map

    def __iter__(self) -> Iterator[str]:
        return iter(self._map)

    def __len__(self) -> int:
        return len(self._map)

    def get_all(self, name: str) -> list[str]:
        """Every value of header ``name``, in the order received."""
        key = name.lower()
        return [value for header, value in self._items if header.lower() == key]

    def raw_items(self) -> list[tuple[str, str]]:
        """The headers as received: (name, value) pairs, repeats kept."""
        return list(self._items)

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"


class Request:
    """An HTTP request as ``fetch(req, server)`` sees it.

    ``url`` is absolute (``http://host:port/path?query``, as in Bun), ``path``
    the path alone, ``query`` the query parameters (first value wins),
    ``headers`` case-insensitive, ``body`` the whole body as bytes.
    A Request is immutable; reading it is safe from any thread.
    """

    __slots__ = ("_http_version", "_peer", "_upgrade", "_upgrade_claimed", "body", "headers",
                 "method", "path", "query", "target", "url")

    def __init__(self, method: str, target: str, headers: Headers, body: bytes = b"", *,
                 scheme: str = "http", peer: tuple[str, int] | None = None,
                 http_version: str = "1.1") -> None:
        self.method: str = method
        self.target: str = target
        self.headers: Headers = headers
        self.body: bytes = body
        host = headers.get("host", "localhost")
        # Path and query come from the target alone (a Host header cannot move
        # them), and the scheme from the connection (a client cannot claim https).
        if target.startswith("/"):  # origin-form, RFC 9112 3.2.1
            path_query = target
        elif "://" in target:  # absolute-form
            split = urlsplit(target)
            host = split.netloc or host
            path_query = (split.path or "/") + (f"?{split.query}" if split.query else "")
        else:  # asterisk-form ("OPTIONS *") or authority-form
            path_query = "/" if target == "*" else target
        path_query = path_query.partition("#")[0]
        self.url: str = f"{scheme}://{host}{path_query}"
        path, _, query = path_query.partition("?")
        self.path: str = "*" if target == "*" else path or "/"
        self.query: dict[str, str] = {}
        for key, value in parse_qsl(query, keep_blank_values=True):
            self.query.setdefault(key, value)
        self._peer = peer
        self._http_version = http_version
        # Set by Server.upgrade() on the fetch worker, read by the loop after fetch returns.
        self._upgrade: UpgradeDecision | None = None
        self._upgrade_claimed = False

    def text(self) -> str:
        """The body decoded as UTF-8; bytes that are not UTF-8 become U+FFFD, as in Bun."""
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        """The body parsed as JSON."""
        return _json.loads(self.body)

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.url}>"


class Response:
    """An HTTP response that ``fetch`` returns.

    >>> Response("Not a WebSocket request", status=400).status
    400

    A ``str`` body is sent as UTF-8 ``text/plain`` unless ``headers`` name a
    content type.
    """

    __slots__ = ("body", "headers", "status")

    def __init__(self, body: str | bytes = "", status: int = 200,
                 headers: HeaderItems | None = None) -> None:
        if not isinstance(status, int) or isinstance(status, bool) or not 200 <= status <= 599:
            # As Bun's Response; 1xx are not final answers, 101 is server.upgrade()'s.
            raise ValueError(f"status must be an HTTP status code from 200 to 599, not {status!r}")
        pairs = header_pairs(headers)
        names = {name.lower() for name, _ in pairs}
        if isinstance(body, str):
            body = body.encode("utf-8")
            if "content-type" not in names:
                pairs.append(("Content-Type", "text/plain;charset=utf-8"))
        elif isinstance(body, (bytearray, memoryview)):
            body = bytes(body)
        elif not isinstance(body, bytes):
            raise TypeError(f"body must be str or bytes, not {type(body).__name__}")
        self.body: bytes = body
        self.status: int = status
        self.headers: list[tuple[str, str]] = pairs

    @classmethod
    def json(cls, obj: Any, status: int = 200, headers: HeaderItems | None = None) -> Response:
        """A response whose body is ``obj`` as JSON (``application/json``)."""
        pairs = header_pairs(headers)
        if not any(name.lower() == "content-type" for name, _ in pairs):
            pairs.append(("Content-Type", "application/json"))
        return cls(_json.dumps(obj).encode("utf-8"), status, pairs)

    def __repr__(self) -> str:
        return f"<Response {self.status} {len(self.body)} bytes>"
