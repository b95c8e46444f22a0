"""Run the Bot API emulator (a test double for Telegram): `python -m services.emulator`."""

import argparse

import uvicorn

from services.common.logs import setup_logging


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m services.emulator", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    args = parser.parse_args()
    setup_logging("emulator")
    uvicorn.run("services.emulator.server:create_app", factory=True, host=args.host, port=args.port,
                log_config=None, access_log=False)


if __name__ == "__main__":
    main()
