"""The public surface: what API.md names, exported and documented."""

from __future__ import annotations

import inspect

import syncws

API_NAMES = {
    "serve", "Server", "ServerWebSocket", "WebSocketHandler", "Request", "Response",
    "connect", "WebSocket", "wsgi", "ReadyState", "SocketAddress", "WebSocketError",
    "ConnectionClosed", "HandshakeError", "PayloadTooBig",
}


def test_all_lists_the_public_names_sorted() -> None:
    assert set(syncws.__all__) >= API_NAMES
    assert list(syncws.__all__) == sorted(syncws.__all__)
    public = {name for name in dir(syncws) if not name.startswith("_")
              and not inspect.ismodule(getattr(syncws, name))}
    assert set(syncws.__all__) == public


def test_every_public_name_and_method_has_a_docstring() -> None:
    for name in syncws.__all__:
        obj = getattr(syncws, name)
        assert (obj.__doc__ or "").strip(), name
        if inspect.isclass(obj):
            for attr, member in vars(obj).items():
                if attr.startswith("_") or (not callable(member) and not isinstance(
                        member, property)):
                    continue
                assert (member.__doc__ or "").strip(), f"{name}.{attr}"


def test_exceptions_form_one_tree_with_stdlib_bases() -> None:
    assert issubclass(syncws.ConnectionClosed, syncws.WebSocketError)
    assert issubclass(syncws.HandshakeError, syncws.WebSocketError)
    assert issubclass(syncws.HandshakeError, ValueError)
    assert issubclass(syncws.PayloadTooBig, syncws.WebSocketError)
