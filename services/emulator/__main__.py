"""Run the Bot API emulator (a test double for Telegram): `python -m services.emulator`."""

import argparse

import uvicorn

from services.common.logs import setup_logging
from services.emulator.server import create_app


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m services.emulator", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--plain-http-webhooks", action="store_true",
                        help="deliver https:// webhook URLs over plain http, as a TLS-terminating proxy would")
    parser.add_argument("--no-flood-control", action="store_true",
                        help="never answer 429 for sending faster than Telegram's published limits")
    args = parser.parse_args()
    setup_logging("emulator")
    uvicorn.run(create_app(plain_http_webhooks=args.plain_http_webhooks, flood_control=not args.no_flood_control), host=args.host, port=args.port,
                log_config=None, access_log=False)


if __name__ == "__main__":
    main()
