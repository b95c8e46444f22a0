"""The sidecar's rare heavy work (writing health events, delivering an alert) runs in a
short-lived `python -m <module>` so the sidecar never keeps PyMongo, httpx or apprise loaded for
the container's whole life. The work goes in as JSON on stdin, never in argv (it may hold secrets).
Each child is the kernel's first choice when the container runs out of memory, from its start
(`oom.helper_command`): its work is done again. And each is the last for the CPU (HELPER_NICENESS):
a helper starts when the programs do (the plan, with the container) or right after a crash (the
events writer, a notifier), as a program imports and starts again on the same cores; it takes
what they leave, and they answer sooner (see helper_argv)."""

from __future__ import annotations

import shutil
import subprocess
import sys

from services.common.oom import helper_command

# About a tenth of a core that the programs keep busy (the kernel's weights: 110 against 1024), all
# of a core they leave idle. A helper's start (Python, pydantic or PyMongo: about a quarter of a
# second of CPU) then comes after theirs.
HELPER_NICENESS = 10


def helper_argv(module: str) -> list[str]:
    """`python -m module` as a helper: first for the OOM killer, last for the CPU. On the 2-core CI
    machine, 8 cold starts each, alternating, with and without the niceness: all four programs
    answering after 2.27 s against 2.43 on average, the api answering again after a SIGKILL in 0.95 s
    against 1.07 (the events writer starts with it); the medians moved less (2.37 against 2.41)."""
    argv = [sys.executable, "-m", module]
    nice = shutil.which("nice")  # coreutils: in every Debian image
    return helper_command([nice, "-n", str(HELPER_NICENESS), "--", *argv] if nice else argv)


class Killed(RuntimeError):
    """The child died of a signal: the kernel's OOM killer, which takes helpers first
    (services/common/oom.py), while the container is short of memory."""


def run_child(module: str, payload: str, timeout_s: float) -> None:
    """Raises RuntimeError with the child's last words when it fails or outlives `timeout_s`,
    Killed when a signal ended it."""
    try:
        result = subprocess.run(helper_argv(module), input=payload.encode(), capture_output=True,
                                timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"no answer within {timeout_s:.0f} s") from None
    if result.returncode < 0:
        raise Killed(f"killed by signal {-result.returncode}")
    if result.returncode:
        failed = result.stderr.decode(errors="replace").strip()
        raise RuntimeError(failed[-600:].replace("\n", "; ") or f"exit {result.returncode}")
