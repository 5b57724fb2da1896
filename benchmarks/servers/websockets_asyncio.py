"""python-websockets' asyncio server; ``/fanout`` uses ``websockets.broadcast()``."""

from __future__ import annotations

import asyncio

import _common
from websockets.asyncio.server import ServerConnection, broadcast, serve

clients: set[ServerConnection] = set()


async def handler(ws: ServerConnection) -> None:
    path = ws.request.path if ws.request is not None else ""
    if path == "/echo":
        async for message in ws:
            await ws.send(message)
    elif path == "/fanout":
        clients.add(ws)
        try:
            async for message in ws:
                broadcast(clients, message)
        finally:
            clients.discard(ws)
    else:
        await ws.close(1008, "unknown path")


async def main(host: str, port: int) -> None:
    async with serve(handler, host, port) as server:
        _common.ready("websockets-asyncio", host, port)
        await server.serve_forever()


args = _common.parse_args(__doc__ or "")
asyncio.run(main(args.host, args.port))
