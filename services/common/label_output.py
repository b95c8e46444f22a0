"""`python -m services.common.label_output NAME -- COMMAND...`: run a non-Python program so that
every line it prints starts with NAME, like the lines of botstack's own programs.

supervisord copies a program's output to the container's stdout as it is; mongod's lines do
not say who wrote them. This parent stays small: it forwards the termination signals
(and SIGCONT), takes its child down with it if it is killed itself (PR_SET_PDEATHSIG with
SIGKILL: a hung or stopped child could not honour SIGTERM), and exits with the child's status.
"""

from __future__ import annotations

import ctypes
import signal
import subprocess
import sys

PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: best effort
        pass


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print("usage: python -m services.common.label_output NAME -- COMMAND [ARG...]", file=sys.stderr)
        return 64
    name, command = argv[0], argv[2:]
    child = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent
    )

    def forward(signum, _frame):
        # supervisord's stopasgroup may already have signalled the child too; repeating is harmless.
        if child.poll() is None:
            child.send_signal(signum)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGCONT):
        signal.signal(sig, forward)
    prefix = f"{name} ".encode()
    out = sys.stdout.buffer
    for line in iter(child.stdout.readline, b""):
        if not line.endswith(b"\n"):
            line += b"\n"
        out.write(prefix + line)
        out.flush()
    status = child.wait()
    return 128 - status if status < 0 else status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
