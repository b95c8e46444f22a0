"""Development only: reload a program when the mounted code changes (compose.dev.yaml).

Reloading needs watchfiles, which only the Dockerfile's `dev` target installs. Without it,
BOTSTACK_RELOAD refuses to start the program (exit 78), instead of letting uvicorn fall back
silently to its polling reloader: a production image has no reloader that could be switched on.
The settings refuse BOTSTACK_RELOAD outside BOTSTACK_ENV=development anyway.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from services.common.settings import refuse

WATCHED = ("/app/services", "/app/yours", "/app/healthcheck")


def watched() -> list[str]:
    return [p for p in WATCHED if Path(p).is_dir()]


def require_reloader(program: str) -> None:
    if importlib.util.find_spec("watchfiles") is None:
        refuse(program, "BOTSTACK_RELOAD: needs watchfiles, which only the Dockerfile's dev target has "
                        "(use compose.dev.yaml); production images cannot reload")


def run_reloading(program: str, target: str) -> None:
    """Run `target` (a function's dotted path) in a child process, started afresh on every change."""
    require_reloader(program)
    import watchfiles

    watchfiles.run_process(*watched(), target=target, target_type="function",
                           callback=lambda changes: print(f"{program}: reloading after {len(changes)} change(s)",
                                                          flush=True))
