"""Run inside the stack image by test_inbox.py: several webhook-mode replicas' inbox dispatchers
share one inbox and race for its updates.

`URI PROCESSES UPDATES` starts PROCESSES processes. Each stores its
share of UPDATES updates in small batches, as a replica stores the webhooks it receives, while
its dispatcher claims whatever is due, from every replica's share, and a handler takes a few
milliseconds per update. When the inbox has nothing pending or claimed, each reports the update
ids its handler ran to the parent, which prints them all as one JSON line.
Run with `python -c SOURCE URI PROCESSES UPDATES` (processes are forked).
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import sys
import time
from types import SimpleNamespace

BOT = "4242"
TOKEN = f"{BOT}:racing-dispatchers-test-token"
BATCH = 10
DEADLINE_S = 120.0


async def replica(index: int, uri: str, processes: int, updates: int) -> list[int]:
    from pymongo import AsyncMongoClient
    from telegram import Bot

    from services.bot.inbox import COLLECTION, Inbox, counts

    client = AsyncMongoClient(uri, maxPoolSize=20)
    collection = client.botstack[COLLECTION]
    inbox = Inbox(collection, BOT, f"replica-{index}", claim_ttl_s=60, max_attempts=5, retry_base_s=1,
                  retention_s=3600, window=16)
    app = SimpleNamespace(bot=Bot(TOKEN), update_queue=asyncio.Queue())
    stop = asyncio.Event()
    handled: list[int] = []

    async def handle() -> None:
        while True:
            update = await app.update_queue.get()
            handled.append(update.update_id)
            await asyncio.sleep(0.005)
            await inbox.finished(update)

    workers = [asyncio.create_task(handle()) for _ in range(8)]
    dispatching = asyncio.create_task(inbox.dispatch(app, stop))
    mine = list(range(index + 1, updates + 1, processes))
    for start in range(0, len(mine), BATCH):
        await inbox.store([{"update_id": u, "message": {
            "message_id": u, "date": 0, "chat": {"id": 9_000_000 + u % 50, "type": "private"}, "text": f"/n {u}"}}
            for u in mine[start:start + BATCH]])
        await asyncio.sleep(0.01)
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        left = await counts(collection, BOT)
        stored = await collection.count_documents({"bot": BOT})
        if stored == updates and not (left["pending"] or left["claimed"] or inbox.in_flight or inbox._done):
            break
        await asyncio.sleep(0.2)
    stop.set()
    await dispatching
    for worker in workers:
        worker.cancel()
    await client.close()
    return handled


def run(index: int, uri: str, processes: int, updates: int, results) -> None:
    results.put({"replica": index, "handled": asyncio.run(replica(index, uri, processes, updates))})


if __name__ == "__main__":
    uri, processes, updates = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    # The replicas report to the parent, which prints one line: lines printed by several processes
    # into one pipe can run together.
    results = multiprocessing.Queue()
    children = [multiprocessing.Process(target=run, args=(i, uri, processes, updates, results))
                for i in range(processes)]
    for child in children:
        child.start()
    # Before join (a child exits only once its result is taken); bounded, in case one died.
    runs = [results.get(timeout=300) for _ in children]
    for child in children:
        child.join()
    print(json.dumps({"runs": runs}), flush=True)
