"""Your code on top of the platform, without editing it: every module of the `yours` package
(the folder `yours/` next to `services/`, copied into the image) and the modules named in
BOTSTACK_EXTENSIONS, each asked by every program for the hook that program understands.

    install(application)  the bot: add handlers, error handlers, jobs (application.job_queue);
                          application.bot_data["db"] is the database, ["settings"] the settings
    api_router            the API: a FastAPI APIRouter (request.app.state.db is the database)
    web_router            the dashboard: an APIRouter whose pages require the dashboard's login
    SCHEMA_STEPS          [(version, async step(db))]: indexes, applied at start by the bot under
                          the owner name "ext:<module>" (services/common/migrations.py)

A module may define any of them. A module that fails to import stops the program that imports
it, with its traceback: that is your code's bug, and better found at start than at the first
update.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType
from typing import Any

from services.common.settings import Settings

PACKAGE = "yours"


def discovered() -> list[str]:
    """The modules in yours/, in name order (yours/__init__.py itself holds none)."""
    try:
        package = importlib.import_module(PACKAGE)
    except ModuleNotFoundError:
        return []
    return [f"{PACKAGE}.{m.name}" for m in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name)
            if not m.name.startswith("_")]


def modules(settings: Settings) -> list[ModuleType]:
    return [importlib.import_module(name) for name in discovered() + settings.extensions]


def hooks(settings: Settings, name: str) -> list[tuple[str, Any]]:
    """(module name, hook) for every extension module that defines `name`."""
    return [(m.__name__, getattr(m, name)) for m in modules(settings) if hasattr(m, name)]
