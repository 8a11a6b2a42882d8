"""The daemon's listening socket: the connections asyncio accepts on it send small writes at once."""

from __future__ import annotations

import asyncio
import socket

from localllm.config.values import parse_host
from localllm.daemon import listen


def test_accepted_connections_have_nagle_off() -> None:
    """With Nagle's algorithm on, an answer's body waited for the client's delayed ACK of its headers: 40 ms on
    every request after the first on a kept-alive connection (every SDK keeps them alive)."""
    sock = listen(parse_host("127.0.0.1:0"))
    port = sock.getsockname()[1]
    seen: list[int] = []

    async def main() -> None:
        async def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            seen.append(writer.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        server = await asyncio.start_server(accepted, sock=sock)
        async with server:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            for _ in range(100):
                if seen:
                    break
                await asyncio.sleep(0.01)
            writer.close()

    asyncio.run(main())
    assert seen and seen[0] != 0, "TCP_NODELAY is off on the accepted connection"
