"""aiohttp's WebSocketResponse; ``/fanout`` sends to every open /fanout socket."""

from __future__ import annotations

import _common
from aiohttp import WSMsgType, web

clients: set[web.WebSocketResponse] = set()


async def echo(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    async for msg in ws:
        if msg.type == WSMsgType.BINARY:
            await ws.send_bytes(msg.data)
        elif msg.type == WSMsgType.TEXT:
            await ws.send_str(msg.data)
    return ws


async def fanout(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    clients.add(ws)
    try:
        async for msg in ws:
            if msg.type not in (WSMsgType.BINARY, WSMsgType.TEXT):
                continue
            for client in list(clients):
                if client.closed:
                    continue
                try:
                    if msg.type == WSMsgType.BINARY:
                        await client.send_bytes(msg.data)
                    else:
                        await client.send_str(msg.data)
                except ConnectionError:
                    pass
    finally:
        clients.discard(ws)
    return ws


args = _common.parse_args(__doc__ or "")
app = web.Application()
app.add_routes([web.get("/echo", echo), web.get("/fanout", fanout)])
_common.ready("aiohttp", args.host, args.port)
web.run_app(app, host=args.host, port=args.port, print=None, access_log=None)
