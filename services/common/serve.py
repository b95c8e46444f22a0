"""Run an ASGI app the production way: uvicorn, no reload, a bounded graceful shutdown."""

from __future__ import annotations

import uvicorn

from services.common import oom
from services.common.logs import setup_logging
from services.common.reloading import require_reloader, watched
from services.common.request_deadline import with_request_deadline
from services.common.settings import Settings


def serve(app_path: str, program: str, port: int, settings: Settings) -> None:
    secrets = (settings.telegram_bot_token.get_secret_value(),) if settings.telegram_bot_token else ()
    setup_logging(program, settings.log_level, secrets)
    oom.volunteer(program)  # out of memory, the kernel takes this program (restarted in a second), not mongod
    if settings.reload:  # development only; needs the dev image target
        require_reloader(program)
    uvicorn.run(
        app_path,
        factory=True,
        host="0.0.0.0",
        port=port,
        # Only development may reload (settings refuse it in production), and only with
        # watchfiles (services/common/reloading.py), which only the dev target installs.
        reload=settings.reload,
        reload_dirs=watched() if settings.reload else None,
        log_config=None,
        access_log=settings.access_log,
        timeout_graceful_shutdown=settings.graceful_timeout,
        proxy_headers=True,
        # uvicorn times no request's arrival: a client sending nothing, or a byte at a time, held a connection.
        http=with_request_deadline(settings.request_timeout),
        server_header=False,
    )
