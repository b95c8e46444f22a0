"""Routes every HTTP program answers the same way: liveness and build identity."""

from typing import Callable

from fastapi import APIRouter

from services.common.buildinfo import build_info
from services.common.settings import Settings


def identity_router(settings: Settings, program: str, extra: Callable[[], dict] = dict) -> APIRouter:
    router = APIRouter(tags=["identity"])

    @router.get("/health")
    async def health() -> dict[str, str]:
        """Liveness: the process answers. Never touches the database."""
        return {"status": "ok"}

    @router.get("/version")
    async def version() -> dict[str, object]:
        """Which build answers, and since when."""
        return {**build_info(settings, program), **extra()}

    return router
