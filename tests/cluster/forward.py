"""A TCP forwarder: ``python -m tests.cluster.forward LISTEN_HOST LISTEN_PORT TO_HOST TO_PORT``.

The hosts of the multi-host tests reach the machine's PostgreSQL (listening on loopback only)
through it, on the bridge's address. Killing it cuts every connection at once (the kernel
closes both ends, so PostgreSQL ends their sessions); until it is started again, a connection
to it is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.close()


async def serve(listen: tuple[str, int], target: tuple[str, int]) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            to_reader, to_writer = await asyncio.open_connection(*target)
        except OSError:
            writer.close()
            return
        await asyncio.gather(pipe(reader, to_writer), pipe(to_reader, writer))

    server = await asyncio.start_server(handle, *listen, reuse_address=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str]) -> None:
    listen_host, listen_port, to_host, to_port = argv
    asyncio.run(serve((listen_host, int(listen_port)), (to_host, int(to_port))))


if __name__ == "__main__":
    main(sys.argv[1:])
