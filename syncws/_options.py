"""The ``websocket`` argument of ``serve()``: handlers and options, checked once."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ._deflate import DeflateConfig, parse_config

HANDLER_NAMES = ("open", "message", "close", "drain", "ping", "pong", "error")

_DEFAULTS: dict[str, Any] = {
    "idle_timeout": 120.0,
    "max_payload_length": 16 * 1024 * 1024,
    "backpressure_limit": 1024 * 1024,
    "close_on_backpressure_limit": False,
    "send_pings": True,
    "publish_to_self": False,
    "per_message_deflate": False,
}

Handler = Callable[..., Any]


@dataclass(frozen=True)
class WebSocketConfig:
    """Handlers and options of one server, read-only once built."""

    open: Handler | None
    message: Handler
    close: Handler | None
    drain: Handler | None
    ping: Handler | None
    pong: Handler | None
    error: Handler | None
    idle_timeout: float
    max_payload_length: int
    backpressure_limit: int
    close_on_backpressure_limit: bool
    send_pings: bool
    publish_to_self: bool
    per_message_deflate: bool | Mapping[str, Any]
    # The checked form of per_message_deflate; None when compression is off.
    deflate: DeflateConfig | None = None


# What each handler is called with (fetch's are "req, server").
HANDLER_ARGUMENTS = {"open": "ws", "message": "ws, message", "close": "ws, code, reason",
                     "drain": "ws", "ping": "ws, data", "pong": "ws, data", "error": "ws, exc"}


def check_plain_callable(fn: object, what: str, arguments: str) -> None:
    """``TypeError`` unless ``fn`` is a plain (not ``async def``) callable that
    takes ``arguments`` (a comma-separated list of their names).

    A handler written as in JavaScript, ``lambda ws: ...`` for ``message``,
    would otherwise fail on every call, far from where it was written.
    """
    if not callable(fn):
        raise TypeError(f"{what} must be callable")
    if inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004
    ):
        raise TypeError(f"{what} is async def; syncws runs plain functions on worker threads")
    try:
        # The callable itself: a decorator's wrapper may take other arguments
        # than the function it wraps (functools.wraps sets __wrapped__).
        signature = inspect.signature(fn, follow_wrapped=False)
    except (TypeError, ValueError):
        return  # no signature to read (some builtins): left to the call
    try:
        signature.bind(*arguments.split(", "))
    except TypeError:
        raise TypeError(f"{what} must take ({arguments}), not {signature}") from None


def check_bool(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, not {type(value).__name__}")
    return value


def check_seconds(name: str, value: object) -> float:
    """``value`` as a number of seconds, or ``TypeError`` naming ``name`` (bools refused)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise TypeError(f"{name} must be a number of seconds, not {type(value).__name__}")
    return value


def check_positive_int(name: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value <= 0:
        raise ValueError(f"{name} must be positive, not {value}")
    return value


def parse_websocket(spec: object) -> WebSocketConfig:
    """Read a mapping (Bun style) or an object (``WebSocketHandler`` subclass).

    Raises ``TypeError`` for unknown mapping keys, a missing ``message``,
    ``async def`` handlers or wrongly typed options, ``ValueError`` for
    option values out of range.
    """
    values: dict[str, Any]
    if isinstance(spec, Mapping):
        unknown = sorted(set(spec) - set(HANDLER_NAMES) - set(_DEFAULTS))
        if unknown:
            known = ", ".join((*HANDLER_NAMES, *_DEFAULTS))
            raise TypeError(f"unknown websocket option(s) {unknown}; known: {known}")
        values = dict(spec)
    else:
        values = {name: getattr(spec, name) for name in (*HANDLER_NAMES, *_DEFAULTS)
                  if getattr(spec, name, None) is not None}
    handlers: dict[str, Handler | None] = {}
    for name in HANDLER_NAMES:
        fn = values.get(name)
        if fn is not None:
            check_plain_callable(fn, f"websocket handler {name!r}", HANDLER_ARGUMENTS[name])
        handlers[name] = fn
    message = handlers.pop("message")
    if message is None:
        raise TypeError("websocket needs a 'message' handler")
    options = {name: values.get(name, default) for name, default in _DEFAULTS.items()}
    idle = check_seconds("idle_timeout", options["idle_timeout"])
    if not 0 <= idle < math.inf:  # NaN fails this too
        raise ValueError(f"idle_timeout must be a finite number >= 0 (0 turns it off), not {idle}")
    deflate = options["per_message_deflate"]
    if not isinstance(deflate, (bool, Mapping)):
        raise TypeError("per_message_deflate must be a bool or a dict of RFC 7692 parameters")
    deflate_config = parse_config(deflate)
    return WebSocketConfig(
        message=message,
        idle_timeout=float(idle),
        max_payload_length=check_positive_int("max_payload_length",
                                               options["max_payload_length"]),
        backpressure_limit=check_positive_int("backpressure_limit",
                                               options["backpressure_limit"]),
        close_on_backpressure_limit=check_bool("close_on_backpressure_limit",
                                                options["close_on_backpressure_limit"]),
        send_pings=check_bool("send_pings", options["send_pings"]),
        publish_to_self=check_bool("publish_to_self", options["publish_to_self"]),
        per_message_deflate=deflate,
        deflate=deflate_config,
        **handlers,
    )
