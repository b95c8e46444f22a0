"""The sidecar's rare heavy work (writing health events, delivering an alert) runs in a
short-lived `python -m <module>` so the sidecar never keeps PyMongo, httpx or apprise loaded for
the container's whole life. The work goes in as JSON on stdin, never in argv (it may hold secrets).
Each child is the kernel's first choice when the container runs out of memory, from its start
(`oom.helper_command`): its work is done again."""

from __future__ import annotations

import subprocess
import sys

from services.common.oom import helper_command


class Killed(RuntimeError):
    """The child died of a signal: the kernel's OOM killer, which takes helpers first
    (services/common/oom.py), while the container is short of memory."""


def run_child(module: str, payload: str, timeout_s: float) -> None:
    """Raises RuntimeError with the child's last words when it fails or outlives `timeout_s`,
    Killed when a signal ended it."""
    try:
        result = subprocess.run(helper_command([sys.executable, "-m", module]), input=payload.encode(),
                                capture_output=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"no answer within {timeout_s:.0f} s") from None
    if result.returncode < 0:
        raise Killed(f"killed by signal {-result.returncode}")
    if result.returncode:
        failed = result.stderr.decode(errors="replace").strip()
        raise RuntimeError(failed[-600:].replace("\n", "; ") or f"exit {result.returncode}")
