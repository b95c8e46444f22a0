"""healthcheck/policy.py: the backoff schedule and the escalation window, on plain numbers."""

from __future__ import annotations

import pytest

from healthcheck.policy import Backoff, HealPolicy
from services.common.settings import Settings

T = 1_000_000.0


def test_backoff_doubles_from_base_and_is_capped_at_max():
    backoff = Backoff(HealPolicy(backoff_base_s=10.0, backoff_max_s=60.0))

    delays = [backoff.schedule(T) for _ in range(6)]

    assert delays == [10.0, 20.0, 40.0, 60.0, 60.0, 60.0]
    assert backoff.attempts == 6
    assert backoff.next_at == T + 60.0
    assert not backoff.due(T + 59.9) and backoff.due(T + 60.0)


def test_backoff_starts_over_only_after_the_program_stayed_up_for_quiet_reset():
    backoff = Backoff(HealPolicy(backoff_base_s=10.0, quiet_reset_s=600.0))
    backoff.schedule(T)
    backoff.schedule(T + 10)

    backoff.note_up_since(T + 100, now=T + 699)  # up for 599 s: not yet
    assert backoff.schedule(T + 700) == 40.0

    backoff.note_up_since(T + 800, now=T + 1400)  # up for 600 s
    assert backoff.attempts == 0
    assert backoff.schedule(T + 1500) == 10.0


def test_note_failure_is_true_only_beyond_max_failures_within_the_window():
    backoff = Backoff(HealPolicy(max_failures=3, failure_window_s=100.0))

    assert [backoff.note_failure(T + t) for t in (0, 10, 20)] == [False, False, False]
    assert backoff.note_failure(T + 30) is True  # four within 100 s: more than three
    assert backoff.note_failure(T + 125) is False  # 0, 10 and 20 left the window: 30, 125
    assert backoff.note_failure(T + 200) is False


def test_failures_exactly_a_window_apart_still_count_together():
    backoff = Backoff(HealPolicy(max_failures=1, failure_window_s=100.0))

    backoff.note_failure(T)

    assert backoff.note_failure(T + 100.0) is True


def test_policy_defaults_retry_and_follow_the_settings():
    assert HealPolicy().escalation == "retry"

    policy = HealPolicy.from_settings(Settings(
        heal_backoff_base_s=1.5, heal_backoff_max_s=30, heal_quiet_reset_s=90, heal_hang_term_grace_s=0.5,
        heal_escalation="exit", heal_max_failures=7, heal_failure_window_s=120,
    ))

    assert policy == HealPolicy(backoff_base_s=1.5, backoff_max_s=30.0, quiet_reset_s=90.0,
                                hang_term_grace_s=0.5, escalation="exit", max_failures=7,
                                failure_window_s=120.0)


def test_settings_refuse_an_unknown_escalation():
    with pytest.raises(ValueError):
        Settings(heal_escalation="reboot")
