"""Alerts to the admins: what the sidecar saw and did, as a few readable messages.

They go to the admins' Telegram chats (sendMessage with the bot's token, so they go out while
the bot program is down) and to any other channel in BOTSTACK_ALERT_URLS: healthcheck/notify.py
delivers them. Never in the way of healing: the sidecar only queues a message; a background
thread per channel (a lane) hands it over, so a channel that is down and tried again (Telegram
for half a minute per alert while the Bot API is out of reach) never makes the alerts of the
others wait in line behind it, and each channel still gets them in order.

Grouped and rate limited, so a crash loop is one message with a count and not one per crash:
the first event of a kind for a program is sent at once; more of that kind within
BOTSTACK_ALERT_GROUP_S are counted and sent as one summary when that time is up. Every text is
passed through the log redaction (no token, no password in a URI).

Kept in the run folder until a lane takes them (`spool`): a sidecar killed by its watchdog, or
crashed, leaves the alerts still waiting in a lane and the events counted into a group; the
next sidecar sends them (marked late). One a lane took is being delivered by a child process,
which outlives the sidecar and finishes it: taken once, never sent twice.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from services.common.logs import redact
from services.common.runfiles import write_json

log = logging.getLogger("botstack.healthcheck.alerts")

QUEUE_MAX = 100


@dataclass
class _Group:
    first_at: float
    count: int = 0  # events after the first one, not yet reported
    last_text: str = ""


@dataclass
class _Lane:
    send: Callable[[str], None]
    queue: queue.Queue = field(default_factory=lambda: queue.Queue(QUEUE_MAX))
    thread: threading.Thread | None = None
    waiting: list[str] = field(default_factory=list)  # queued, not yet taken: what the spool keeps


@dataclass
class Alerts:
    """`send(text)` delivers one message, or one per lane when a sequence (one per channel:
    healthcheck.notify.lanes); None: alerts are off."""

    send: Callable[[str], None] | Sequence[Callable[[str], None]] | None
    group_s: float = 300.0
    clock: Callable[[], float] = time.monotonic  # a wall clock stepped back would hold a group for the step
    secrets: tuple[str, ...] = ()
    spool: Path | None = None
    _groups: dict[str, _Group] = field(default_factory=dict)
    _lanes: list[_Lane] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        senders = [] if self.send is None else [self.send] if callable(self.send) else list(self.send)
        self._lanes = [_Lane(send) for send in senders]
        if self._lanes and self.spool is not None:
            self._resume()

    def event(self, key: str, text: str) -> None:
        """An event of kind `key` (e.g. "bot:restart"): sent now, or counted into its group."""
        if not self._lanes:
            return
        now = self.clock()
        group = self._groups.get(key)
        if group is None or self._over(group, now):
            self._flush(key)
            self._groups[key] = _Group(first_at=now)
            self._enqueue(text)
        else:
            group.count += 1
            group.last_text = text
        self._save()

    def tick(self) -> None:
        """Send the summaries whose grouping time is up."""
        now = self.clock()
        due = [k for k, g in self._groups.items() if self._over(g, now)]
        for key in due:
            self._flush(key)
            del self._groups[key]
        if due:
            self._save()

    def _over(self, group: _Group, now: float) -> bool:
        """Its grouping time is up, or it began in a future: a predecessor's group from before
        the machine restarted (the monotonic clock starts again at boot)."""
        return not 0 <= now - group.first_at < self.group_s

    def _flush(self, key: str) -> None:
        group = self._groups.get(key)
        if group and group.count:
            minutes = max(1, round(self.group_s / 60))
            self._enqueue(f"{group.count} more of the same in the last {minutes} min; the last one: "
                          f"{group.last_text}")
            group.count = 0

    def _enqueue(self, text: str) -> None:
        text = redact(f"botstack: {text}", self.secrets)[:4000]
        for lane in self._lanes:
            self._put(lane, text)

    def _put(self, lane: _Lane, text: str) -> None:
        with self._lock:
            try:
                lane.queue.put_nowait(text)
                lane.waiting.append(text)
            except queue.Full:
                log.warning("alert dropped: %d alerts are waiting to be sent", QUEUE_MAX)
        if lane.thread is None:
            lane.thread = threading.Thread(target=self._sender, args=(lane,), name="alerts", daemon=True)
            lane.thread.start()

    def close(self, timeout_s: float) -> None:
        """At the sidecar's stop: the events counted into a group are told now (their summary
        would never come otherwise), and what is queued gets `timeout_s` to leave."""
        for key in list(self._groups):
            self._flush(key)
        self._groups.clear()
        self.drain(timeout_s)
        self._save()  # what is still waiting: for the next sidecar

    def drain(self, timeout_s: float) -> None:
        """Give queued alerts a moment to leave (before the sidecar stops the container)."""
        deadline = time.monotonic() + timeout_s
        while any(lane.queue.unfinished_tasks for lane in self._lanes) and time.monotonic() < deadline:
            time.sleep(0.1)

    def _sender(self, lane: _Lane) -> None:
        while True:
            text = lane.queue.get()
            with self._lock:
                lane.waiting.remove(text)
            self._save()
            try:
                lane.send(text)
            except Exception as exc:  # an alert must never take the sidecar down
                log.warning("alert not delivered: %s", redact(str(exc), self.secrets))
            finally:
                lane.queue.task_done()

    # --- the spool: what a sidecar that dies leaves to the next one ---------------------------
    def _save(self) -> None:
        if self.spool is None or not self._lanes:
            return
        with self._lock:
            state = {"lanes": [list(lane.waiting) for lane in self._lanes],
                     "groups": {key: asdict(group) for key, group in self._groups.items()}}
            try:
                write_json(self.spool, state)
            except OSError as exc:  # alerts still go out; only a successor would not know of them
                log.warning("%s not written: %s", self.spool, exc)

    def _resume(self) -> None:
        """Send what a predecessor left queued, marked late, and go on counting its groups."""
        try:
            saved_at = time.strftime("%H:%M:%S UTC", time.gmtime(self.spool.stat().st_mtime))
            state = json.loads(self.spool.read_text())
            left = [[str(text) for text in texts] for texts in state["lanes"]]
            groups = {str(k): _Group(**g) for k, g in state["groups"].items()}
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("%s unreadable, alerts a predecessor left are lost: %s", self.spool, exc)
            return
        self._groups.update(groups)
        if len(left) != len(self._lanes):  # other channels now: every one gets them
            left = [sorted({text for texts in left for text in texts})] * len(self._lanes)
        for lane, texts in zip(self._lanes, left):
            for text in texts:
                self._put(lane, f"{text} (sent late: queued by {saved_at} by a sidecar that stopped first)")
        self._save()
