"""Run a WSGI application (Flask, Django, ...) as a syncws ``fetch``.

One server, one port: the user's ``fetch`` upgrades the WebSocket requests and
hands every other request to the WSGI app, which runs on the worker pool like
any ``fetch``::

    import flask
    import syncws

    app = flask.Flask(__name__)
    flask_fetch = syncws.wsgi(app)

    @app.post("/announce")
    def announce() -> str:
        server = flask.request.environ["syncws.server"]
        server.publish("chat", flask.request.form["text"])
        return "sent"

    def fetch(req: syncws.Request, server: syncws.Server[str]) -> syncws.Response | None:
        if req.path == "/ws":
            if server.upgrade(req, data=req.query.get("name", "anonymous")):
                return None
            return syncws.Response("Expected a WebSocket", status=400)
        return flask_fetch(req, server)

    server = syncws.serve(fetch=fetch, websocket={"message": ...}, port=3000)
    server.serve_forever()

The environ follows PEP 3333, with two additions: ``environ["syncws.server"]``
is the running ``Server`` (so a view can ``publish`` to WebSocket clients)
and ``environ["syncws.request"]`` the ``syncws.Request``.
"""

from __future__ import annotations

import io
import logging
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_to_bytes, urlsplit

from ._http import Request, Response

if TYPE_CHECKING:
    from _typeshed import OptExcInfo
    from _typeshed.wsgi import WSGIApplication, WSGIEnvironment

    from .server import Server

__all__ = ["wsgi"]

logger = logging.getLogger("syncws.wsgi")

# Headers the environ carries without the HTTP_ prefix (PEP 3333).
_UNPREFIXED = {"content-type": "CONTENT_TYPE", "content-length": "CONTENT_LENGTH"}


class _ErrorStream:
    """``wsgi.errors``: a text stream whose lines go to the ``syncws.wsgi`` logger.

    One per request; an application writes to it from the worker that runs it.
    """

    def __init__(self) -> None:
        self._pending = ""
        # Guarded by self._lock: an app may hand the stream to its own threads.
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        with self._lock:
            self._pending += text
            *lines, self._pending = self._pending.split("\n")
        for line in lines:
            logger.error("%s", line)
        return len(text)

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        with self._lock:
            rest, self._pending = self._pending, ""
        if rest:
            logger.error("%s", rest)


def _split_target(req: Request) -> tuple[str, str]:
    """The raw (still percent-encoded) path and query string of ``req``."""
    target = req.target
    if target.startswith("/") or target == "*":
        path, _, query = target.partition("?")
        return path, query
    split = urlsplit(target)  # absolute-form: http://host/path?query
    return split.path or "/", split.query


def environ_for(req: Request, server: Server[Any] | None = None) -> WSGIEnvironment:
    """The PEP 3333 environ for ``req``. Pure: reads ``req`` and ``server`` only.

    ``PATH_INFO`` is percent-decoded to bytes and carried as a latin-1 string,
    as PEP 3333 wants; ``QUERY_STRING`` stays encoded. Headers whose name
    contains ``_`` are left out (they would be indistinguishable from ``-``
    in the environ and could spoof a proxy's header). ``CONTENT_LENGTH`` is
    the length of the body as received (also for a chunked request), and
    ``wsgi.input`` holds the whole body.
    """
    raw_path, query = _split_target(req)
    scheme = req.url.partition(":")[0] or "http"
    peer = req._peer
    if server is not None:
        server_name, server_port = server.hostname, str(server.port)
    else:
        server_name, server_port = "localhost", "443" if scheme == "https" else "80"
    environ: dict[str, Any] = {
        "REQUEST_METHOD": req.method,
        "SCRIPT_NAME": "",
        "PATH_INFO": unquote_to_bytes(raw_path).decode("latin-1"),
        "QUERY_STRING": query,
        "RAW_URI": req.target,
        "REQUEST_URI": req.target,
        "SERVER_NAME": server_name,
        "SERVER_PORT": server_port,
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": peer[0] if peer is not None else "",
        "REMOTE_PORT": str(peer[1]) if peer is not None else "",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scheme,
        "wsgi.input": io.BytesIO(req.body),
        "wsgi.input_terminated": True,
        "wsgi.errors": _ErrorStream(),
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
        "syncws.server": server,
        "syncws.request": req,
    }
    for name, value in req.headers.raw_items():
        lower = name.lower()
        if "_" in name or lower in _UNPREFIXED:
            continue
        key = "HTTP_" + name.upper().replace("-", "_")
        if key in environ:
            separator = "; " if key == "HTTP_COOKIE" else ", "
            environ[key] = f"{environ[key]}{separator}{value}"
        else:
            environ[key] = value
    if "content-type" in req.headers:
        environ["CONTENT_TYPE"] = req.headers["content-type"]
    if req.body or "content-length" in req.headers:
        environ["CONTENT_LENGTH"] = str(len(req.body))
    return environ


class _Call:
    """One call of a WSGI application: its ``start_response`` and its body."""

    def __init__(self) -> None:
        self.status: int | None = None
        self.headers: list[tuple[str, str]] = []
        self.chunks: list[bytes] = []
        # True once the first body byte exists: a streaming server would have
        # sent the headers by then, so exc_info must re-raise from here on.
        self.committed = False

    def start_response(self, status: str, headers: list[tuple[str, str]],
                       exc_info: OptExcInfo | None = None, /) -> Callable[[bytes], object]:
        if exc_info is not None and exc_info[1] is not None:
            try:
                if self.committed:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None  # no reference cycle through the traceback
        elif self.status is not None:
            raise RuntimeError("start_response called a second time without exc_info")
        if not isinstance(status, str) or len(status) < 3 or not status[:3].isdigit():
            raise ValueError(f"WSGI status must be a str like '200 OK', not {status!r}")
        for pair in headers:
            if (not isinstance(pair, tuple) or len(pair) != 2
                    or not all(isinstance(part, str) for part in pair)):
                raise TypeError(f"WSGI headers must be (str, str) tuples, not {pair!r}")
        self.status = int(status[:3])
        # Whitespace around a value is not part of it (RFC 9110 5.5); Django
        # sends Set-Cookie values with a leading space, which h11 refuses.
        self.headers = [(name, value.strip(" \t")) for name, value in headers]
        return self.write

    def write(self, data: bytes) -> None:
        """The legacy ``write()`` callable: its data goes before the iterable's."""
        if self.status is None:
            raise RuntimeError("write() called before start_response()")
        self.add(data)

    def add(self, data: bytes) -> None:
        if not isinstance(data, (bytes, bytearray)):
            raise TypeError(f"a WSGI body must yield bytes, not {type(data).__name__}")
        if data:
            if self.status is None:
                raise RuntimeError("the WSGI application sent body bytes before start_response()")
            self.committed = True
            self.chunks.append(bytes(data))


def wsgi(app: WSGIApplication) -> Callable[[Request, Server[Any]], Response]:
    """Turn the WSGI application ``app`` into a ``fetch``-shaped callable.

    The returned ``handle(req, server) -> Response`` runs ``app`` with a
    PEP 3333 environ (see ``environ_for``) on the calling thread, which in a
    ``fetch`` is a worker: it blocks that worker until ``app`` is done, and
    several requests run ``app`` at once (``wsgi.multithread`` is True), so
    ``app`` must be thread-safe as under any threaded WSGI server. The
    returned callable itself keeps no state and is safe from any thread.

    The response is buffered: every chunk of the returned iterable (and of
    ``write()``) is joined into one ``Response`` body before anything is
    sent, so a streamed response arrives whole, and an endless generator
    never answers (use a WebSocket for pushes). The iterable's ``close()``
    is always called. ``start_response`` follows PEP 3333: a second call
    needs ``exc_info``, which replaces the status and headers before the
    first body byte and re-raises afterwards. An exception from ``app``
    propagates, so ``serve`` answers 500 and logs it; the server goes on.
    """
    if not callable(app):
        raise TypeError(f"app must be a WSGI application (callable), not {type(app).__name__}")

    def handle(req: Request, server: Server[Any]) -> Response:
        call = _Call()
        result = app(environ_for(req, server), call.start_response)
        try:
            for chunk in result:
                call.add(chunk)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
        if call.status is None:
            raise RuntimeError("the WSGI application returned without calling start_response()")
        return Response(b"".join(call.chunks), call.status, call.headers)

    handle.__doc__ = f"Runs the WSGI application {app!r} for one request (see syncws.wsgi)."
    return handle
