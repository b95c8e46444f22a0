"""When the sidecar may act, and how fast it may act again: backoff and escalation.

A program that keeps dying must not be restarted in a tight loop (it floods the log and
starves the others), nor given up on forever (supervisord's FATAL is final): retries back
off exponentially and start over once the program has stayed up for a quiet period.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the sidecar itself never loads the settings (healthcheck/plan.py)
    from services.common.settings import Settings


@dataclass(frozen=True)
class HealPolicy:
    backoff_base_s: float = 10.0
    backoff_max_s: float = 300.0
    quiet_reset_s: float = 600.0
    hang_term_grace_s: float = 2.0
    escalation: str = "retry"  # or "exit": stop supervisord, let the orchestrator replace us
    max_failures: int = 5
    failure_window_s: float = 900.0
    cycle_max_restarts: int = 3  # more restarts than this within cycle_window_s: a crash cycle
    cycle_window_s: float = 3600.0
    # (program, MiB): resident memory above which a program is stopped and started again, gracefully
    memory_ceilings: tuple[tuple[str, int], ...] = ()

    @classmethod
    def from_settings(cls, settings: Settings) -> "HealPolicy":
        return cls(
            backoff_base_s=settings.heal_backoff_base_s,
            backoff_max_s=settings.heal_backoff_max_s,
            quiet_reset_s=settings.heal_quiet_reset_s,
            hang_term_grace_s=settings.heal_hang_term_grace_s,
            escalation=settings.heal_escalation,
            max_failures=settings.heal_max_failures,
            failure_window_s=settings.heal_failure_window_s,
            cycle_max_restarts=settings.heal_cycle_max_restarts,
            cycle_window_s=settings.heal_cycle_window_s,
            memory_ceilings=tuple(settings.memory_ceilings.items()),
        )


@dataclass
class Backoff:
    """Retry schedule of one program: base, 2×base, 4×base … capped; reset after quiet time."""

    policy: HealPolicy
    attempts: int = 0
    next_at: float = 0.0
    failures: deque = field(default_factory=deque)

    def due(self, now: float) -> bool:
        return now >= self.next_at

    def schedule(self, now: float) -> float:
        delay = min(self.policy.backoff_base_s * 2**self.attempts, self.policy.backoff_max_s)
        self.attempts += 1
        self.next_at = now + delay
        return delay

    def note_up_since(self, started: float, now: float) -> None:
        if self.attempts and now - started >= self.policy.quiet_reset_s:
            self.attempts, self.next_at = 0, 0.0

    def restarts_within(self, window_s: float, now: float) -> int:
        return sum(1 for t in self.failures if now - t <= window_s)

    def note_failure(self, now: float) -> bool:
        """Record a failure; True when the window holds more than the policy tolerates."""
        self.failures.append(now)
        keep = max(self.policy.failure_window_s, self.policy.cycle_window_s)
        while self.failures and now - self.failures[0] > keep:
            self.failures.popleft()
        return self.restarts_within(self.policy.failure_window_s, now) > self.policy.max_failures
