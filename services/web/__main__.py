"""Entry point of the `web` program: `python -m services.web` (see supervisor.conf here)."""

from services.common.serve import serve
from services.common.settings import settings_or_exit

if __name__ == "__main__":
    settings = settings_or_exit("web")
    serve("services.web.app:create_app", "web", settings.web_port, settings)
