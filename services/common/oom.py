"""Who the kernel kills when the container runs out of memory, and saying that it did.

A container with a memory limit (a Railway plan, Compose's `mem_limit`, Swarm's or Kubernetes'
limits) that reaches it has one process killed by the kernel's OOM killer: the one holding the
most memory, which is mongod (its cache) more often than the handler that leaks. The database
killed mid-write replays its journal while every program waits for it. The api, web and bot are
restarted by supervisord within a second and lose nothing (the inbox hands a killed bot's
updates over again), so each of them asks to go first, the bot before the others (`volunteer`,
at its start): a process may raise its own oom_score_adj, only privileges lower it. mongod, supervisord and the health
sidecar keep 0, and the kernel takes a leaking program instead of them.

supervisord sees only a SIGKILL; the sidecar reads the container's OOM-kill count
(`oom_kills`) to tell the admins that it was memory, and what the limit is.
"""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger("botstack.oom")

# Added to the kernel's score (0-1000 for the share of memory a process holds): a program is
# taken before mongod unless mongod holds half the container's memory more than it does. Among
# them the bot goes first (a tenth of the limit more): killed, it loses nothing (the inbox hands
# its updates over again), where the api drops the requests in flight.
OOM_SCORE_ADJ = {"bot": 600}
OOM_SCORE_ADJ_DEFAULT = 500
# Before any program: the sidecar's short-lived helpers (an alert's notifier, the events
# writer, the plan at its start), from their first instruction. They start right after a crash,
# while memory is short, and the kernel may take a second process before the first one's memory
# is released: dmesg here showed the api killed 4 ms after the leaking bot while three helpers,
# still starting with the sidecar's 0, were the other candidates. Their work is done again if
# the kernel takes one (the plan: the sidecar exits, and supervisord starts it again).
HELPER_OOM_SCORE_ADJ = 1000
# The container's own cgroup: v2 first, then v1 (Docker on older hosts).
EVENTS = (Path("/sys/fs/cgroup/memory.events"), Path("/sys/fs/cgroup/memory/memory.oom_control"))
LIMITS = (Path("/sys/fs/cgroup/memory.max"), Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"))


def volunteer(program: str, proc_file: Path = Path("/proc/self/oom_score_adj")) -> None:
    """Make this program the kernel's first choice when the container runs out of memory."""
    try:
        proc_file.write_text(f"{OOM_SCORE_ADJ.get(program, OOM_SCORE_ADJ_DEFAULT)}\n")
    except OSError as exc:  # not Linux, or a sandbox that forbids it: the kernel's default then
        log.info("%s: oom_score_adj not raised (%s); the kernel picks the largest process", program, exc)


def helper_command(argv: list[str]) -> list[str]:
    """`argv` run as a helper: util-linux's choom sets HELPER_OOM_SCORE_ADJ and execs it, so the
    interpreter's start counts too (a volunteer() in the helper would come after it)."""
    import shutil

    choom = shutil.which("choom")
    return [choom, "-n", str(HELPER_OOM_SCORE_ADJ), "--", *argv] if choom else argv


def oom_kills(files: tuple[Path, ...] = EVENTS) -> int | None:
    """How many processes the kernel killed for the container's memory limit; None where the
    cgroup does not say (no memory controller, not Linux)."""
    for path in files:
        try:
            text = path.read_text()
        except OSError:
            continue
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill" and value.strip().isdigit():
                return int(value)
    return None


def limit_mib(files: tuple[Path, ...] = LIMITS) -> int | None:
    """The container's memory limit; None when it has none ("max", or v1's near-2^63)."""
    for path in files:
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        return int(text) >> 20 if text.isdigit() and int(text) < 1 << 50 else None
    return None


def resident_mib(pid: int) -> float | None:
    """A process's resident memory (VmRSS), as `ps` shows it; None when it is gone or not ours."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    kib = next((line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")), None)
    return int(kib) / 1024 if kib else None


def killed_for_memory() -> str:
    """How a program the kernel killed for memory is described (the verdict, events, alerts)."""
    limit = limit_mib()
    return "killed by the kernel: out of memory" + (f" (the container's limit is {limit} MiB)" if limit else "")
