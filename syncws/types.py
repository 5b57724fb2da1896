"""Small value types shared by the server and the client."""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

__all__ = ["CloseCode", "ReadyState", "SocketAddress"]

# The type of ws.data in Server[T], ServerWebSocket[T] and WebSocketHandler[T].
# Any unless something says otherwise (a typed fetch or handler class), so that
# ``server = syncws.serve(websocket={...})`` type-checks without an annotation.
if TYPE_CHECKING:
    from typing_extensions import TypeVar  # its default= (PEP 696) on every Python

    DataT = TypeVar("DataT", default=Any)
else:  # the default only matters to type checkers; typing_extensions is no dependency
    from typing import TypeVar

    DataT = TypeVar("DataT")


class ReadyState(enum.IntEnum):
    """The state of a WebSocket, numbered as in the browser and Bun."""

    CONNECTING = 0
    OPEN = 1
    CLOSING = 2
    CLOSED = 3


class CloseCode(enum.IntEnum):
    """Close codes of RFC 6455 section 7.4.1 that syncws sends or reports."""

    NORMAL = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003
    NO_STATUS = 1005
    ABNORMAL = 1006
    INVALID_DATA = 1007
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    MANDATORY_EXTENSION = 1010
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012
    TRY_AGAIN_LATER = 1013


class SocketAddress(NamedTuple):
    """A peer's address, as Bun's ``server.requestIP(req)`` returns it."""

    address: str
    port: int
    family: Literal["IPv4", "IPv6"]
