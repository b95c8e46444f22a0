"""The emulator's flood control: 429 with retry_after past Telegram's published limits, and
a count of calls repeated before their retry_after."""

from __future__ import annotations

import pytest

from services.emulator import flood
from services.emulator.errors import ApiError
from services.emulator.flood import FloodControl


@pytest.fixture
def clock(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(flood.time, "monotonic", lambda: now[0])
    return now


def send(control: FloodControl, chat: int, text: str) -> int | None:
    try:
        control.check("sendMessage", {"chat_id": chat, "text": text})
    except ApiError as exc:
        assert exc.code == 429 and exc.description == f"Too Many Requests: retry after {exc.parameters['retry_after']}"
        return exc.parameters["retry_after"]
    return None


def test_a_private_chat_gets_a_short_burst_then_429_with_retry_after(clock):
    control = FloodControl()
    assert [send(control, 5, f"m{i}") for i in range(3)] == [None, None, None]
    assert send(control, 5, "m3") == 3
    assert send(control, 6, "other chat") is None  # another chat is not held up


def test_a_retry_before_retry_after_is_counted_and_refused_again(clock):
    control = FloodControl()
    for i in range(3):
        send(control, 5, f"m{i}")
    retry_after = send(control, 5, "m3")
    clock[0] += retry_after / 2
    assert send(control, 5, "m3") is not None
    assert control.early_retries == 1
    clock[0] += retry_after + 0.1
    assert send(control, 5, "m3") is None
    assert control.early_retries == 1 and control.refused == 2


def test_overall_limit_holds_every_chat(clock):
    control = FloodControl()
    assert all(send(control, 100 + i, "hi") is None for i in range(30))
    assert send(control, 999, "hi") == 1


def test_group_limit_is_twenty_a_minute(clock):
    control = FloodControl()
    for i in range(20):
        assert send(control, -100123, f"g{i}") is None
        clock[0] += 0.5
    assert send(control, -100123, "g20") == 50


def test_switched_off_it_never_refuses(clock):
    control = FloodControl(enabled=False)
    assert all(send(control, 5, f"m{i}") is None for i in range(100))
    assert control.check("getUpdates", {}) is None


def test_calls_during_a_block_learn_the_time_left_and_do_not_prolong_it(clock):
    control = FloodControl()
    for i in range(3):
        send(control, 5, f"m{i}")
    assert send(control, 5, "m3") == 3
    for step in range(5):  # a client that keeps asking, every half second
        clock[0] += 0.5
        assert send(control, 5, f"impatient {step}") == 3 - int(0.5 * (step + 1))
    clock[0] += 0.6  # 3.1 s after the block began
    assert send(control, 5, "m3") is None
