"""Run inside the stack image by the tests: a TCP proxy that delays every byte by a fixed time
each way, in order, as a database in another region or at a hosted provider would be (this
kernel has no netem). A test points MONGODB_URI at it.

Run with `python -c SOURCE PORT TARGET_HOST TARGET_PORT DELAY_S`.
"""

from __future__ import annotations

import asyncio
import sys
import time


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay_s: float) -> None:
    """Forward what `reader` gets, each chunk `delay_s` after it arrived; close when it ends."""
    chunks: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def send() -> None:
        while True:
            arrived, data = await chunks.get()
            await asyncio.sleep(max(0.0, arrived + delay_s - time.monotonic()))
            if not data:
                break
            writer.write(data)
            await writer.drain()

    sending = asyncio.create_task(send())
    try:
        while data := await reader.read(65536):
            chunks.put_nowait((time.monotonic(), data))
    except OSError:
        pass
    chunks.put_nowait((time.monotonic(), b""))
    try:
        await sending
    except OSError:
        pass
    finally:
        writer.close()


async def main(port: int, host: str, target_port: int, delay_s: float) -> None:
    async def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            far_reader, far_writer = await asyncio.open_connection(host, target_port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(pipe(reader, far_writer, delay_s), pipe(far_reader, writer, delay_s))

    server = await asyncio.start_server(connected, "0.0.0.0", port)
    print(f"delaying {host}:{target_port} by {delay_s * 1000:.0f} ms each way on port {port}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), float(sys.argv[4])))
