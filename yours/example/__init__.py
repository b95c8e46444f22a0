"""The example that ships with botstack: a greeting, notes, a button, an API route that reads the
notes and a job that expires unpaid orders. It uses nothing the platform does not offer you, so
it is the pattern to copy — and `rm -r yours/example` removes all of it (the platform keeps
running: /version, the inbox, health, the API's own routes and the dashboard).

Each hook is imported when a program asks for it, so the API and the dashboard never load
python-telegram-bot for the bot's half of the example (it costs memory in every program).
The integration tests drive the bot through these commands (/start, /remember, /menu), so they
stay in the test images of the platform's own suite.
"""

from importlib import import_module

_HOOKS = {"install": "yours.example.bot", "api_router": "yours.example.api", "SCHEMA_STEPS": "yours.example.schema"}


def __getattr__(name: str):
    if name not in _HOOKS:
        raise AttributeError(name)
    return getattr(import_module(_HOOKS[name]), name)
