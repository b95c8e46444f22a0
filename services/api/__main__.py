"""Entry point of the `api` program: `python -m services.api` (see supervisor.conf here)."""

from services.common.serve import serve
from services.common.settings import settings_or_exit

if __name__ == "__main__":
    settings = settings_or_exit("api")
    serve("services.api.app:create_app", "api", settings.api_port, settings)
