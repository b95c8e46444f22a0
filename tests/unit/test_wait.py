"""services/common/wait.py: the waits every loop sleeps through end at once for a SIGTERM (and,
waiting for work, for the work), and otherwise after their time."""

from __future__ import annotations

import asyncio
import time

from services.common.wait import wait_for_either, wait_for_stop


def timed(coro_factory) -> tuple[object, float]:
    async def run():
        started = time.monotonic()
        result = await coro_factory()
        return result, time.monotonic() - started
    return asyncio.run(run())


def test_a_stop_ends_the_wait_at_once():
    async def go():
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(0.05, stop.set)
        return await wait_for_stop(stop, 30)
    stopped, took = timed(go)
    assert stopped is True and took < 1


def test_without_a_stop_the_wait_lasts_its_time():
    stopped, took = timed(lambda: wait_for_stop(asyncio.Event(), 0.2))
    assert stopped is False and 0.18 <= took < 1


def test_work_or_a_stop_ends_the_wait_for_either_at_once():
    for which in ("work", "stop"):
        async def go():
            work, stop = asyncio.Event(), asyncio.Event()
            asyncio.get_running_loop().call_later(0.05, (work if which == "work" else stop).set)
            await wait_for_either(work, stop, None)
        _, took = timed(go)
        assert took < 1, which


def test_the_wait_for_either_lasts_its_time_and_leaves_no_task_behind():
    async def go():
        await wait_for_either(asyncio.Event(), asyncio.Event(), 0.2)
        await asyncio.sleep(0)  # the cancelled waits finish
        return len(asyncio.all_tasks()) - 1
    left, took = timed(go)
    assert left == 0 and 0.18 <= took < 1
