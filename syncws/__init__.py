"""syncws: Bun's WebSocket server API for plain, blocking Python.

>>> import syncws
>>> server = syncws.serve(websocket={"message": lambda ws, msg: ws.send(msg)}, port=0)
>>> server.stop(close_active_connections=True)
"""

from ._http import Headers, Request, Response
from .client import ClientWebSocket, connect
from .event_client import CloseEvent, ErrorEvent, Event, MessageEvent, WebSocket
from .exceptions import (
    ConnectionClosed,
    HandshakeError,
    InvalidStateError,
    PayloadTooBig,
    WebSocketError,
)
from .redis_bridge import RedisBridge, RedisPublisher
from .server import Server, WebSocketHandler, serve
from .types import CloseCode, ReadyState, SocketAddress
from .websocket import ServerWebSocket
from .wsgi import wsgi

__all__ = [
    "ClientWebSocket",
    "CloseCode",
    "CloseEvent",
    "ConnectionClosed",
    "ErrorEvent",
    "Event",
    "HandshakeError",
    "Headers",
    "InvalidStateError",
    "MessageEvent",
    "PayloadTooBig",
    "ReadyState",
    "RedisBridge",
    "RedisPublisher",
    "Request",
    "Response",
    "Server",
    "ServerWebSocket",
    "SocketAddress",
    "WebSocket",
    "WebSocketError",
    "WebSocketHandler",
    "connect",
    "serve",
    "wsgi",
]
