"""Settings given as files: Docker's and Swarm's secrets, Kubernetes' secret volumes.

A secret mounted with `target: TELEGRAM_BOT_TOKEN` is the file /run/secrets/TELEGRAM_BOT_TOKEN.
Any setting may come from such a file, named after its variable (in any case); the settings
(pydantic-settings' own secrets source) read it, so the bot's token, the dashboard's password or
a MongoDB URI with a password in it need not be in the service's definition (`docker service
inspect`, a stack's or a Deployment's spec) nor in any process's environment. A variable set in
the environment wins over a file. BOTSTACK_SECRETS_DIR names another folder (a Kubernetes secret
mounted elsewhere).

Kept apart from settings.py, which loads pydantic: the entry point asks which settings are given
before it starts anything (services/start.py), and loading pydantic there would delay every
program's start.
"""

from __future__ import annotations

import os

DEFAULT_DIR = "/run/secrets"


def secrets_dir() -> str | None:
    """The folder of secret files, or None when there is none (no secret mounted)."""
    path = os.environ.get("BOTSTACK_SECRETS_DIR") or DEFAULT_DIR
    return path if os.path.isdir(path) else None


def given_names() -> set[str]:
    """The settings given, by the environment or as files: their variables' names, upper case."""
    names = {name.upper() for name in os.environ}
    folder = secrets_dir()
    if folder:
        names |= {entry.name.upper() for entry in os.scandir(folder) if entry.is_file()}
    return names
