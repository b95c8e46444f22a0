"""botstack — operate a running stack from inside its container.

usage: botstack status              programs, build, health verdict, restarts
       botstack doctor              preflight checks; exit 1 if any fails
       botstack backup              dump the database into BOTSTACK_BACKUP_DIR, verified
       botstack restore <backup>    stop bot and api, restore, start them again
       botstack inbox [retry|drop]  failed updates: list, handle again, delete (botstack inbox -h)
       botstack deploy [--rollback] on the host: lock, doctor, backup, build, up, verify,
                                    roll back on failure (botstack deploy --help)

Exit status: 0 success, 1 a check or operation failed, 2 usage, 78 bad settings.
"""

from __future__ import annotations

import sys
from datetime import timezone
from pathlib import Path

from services.common.settings import settings_or_exit


def status() -> int:
    from services.common.buildinfo import build_info
    from services.common.supervisor import programs, rpc
    from services.common.verdict import read_verdict

    settings = settings_or_exit("botstack")
    info = build_info(settings, "botstack")
    print(f"build {info['version']} sha {info['git_sha']} built {info['build_time']}")
    verdict = read_verdict(settings.run_dir) or {"status": "unknown (no fresh verdict)", "reasons": [], "programs": {}}
    try:
        rows = programs(rpc(settings.supervisor_socket))
    except OSError as exc:
        print(f"supervisord not reachable: {exc}")
        return 1
    for p in rows:
        health = verdict["programs"].get(p.name, {})
        restarts = health.get("restarts", {})
        since = p.started_at.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ") if p.started_at else "-"
        print(f"{p.name:<12} {p.state:<9} pid {p.pid or '-':<6} since {since}  restarts "
              f"crash {restarts.get('crash', 0)} hang {restarts.get('hang', 0)} fatal {restarts.get('fatal', 0)}")
    print(f"health: {verdict['status']}" + "".join(f"\n  - {r}" for r in verdict["reasons"]))
    bot = verdict.get("bot")
    if bot:
        print(f"bot: {bot.get('role')} ({bot.get('mode')} mode), {bot.get('conflicts', 0)} polling conflicts")
    try:
        from services.bot.inbox import COLLECTION
        from services.cli.inbox import counts, summary
        from services.common.db import make_sync_client

        with make_sync_client(settings, "cli") as client:
            print(summary(counts(client[settings.mongodb_db][COLLECTION], settings.bot_id)))
    except Exception as exc:  # status still reports what it can see without the database
        print(f"inbox: unknown (database not reachable: {type(exc).__name__})")
    return 0 if verdict["status"] in ("healthy", "degraded") else 1


def main(argv: list[str]) -> int:
    command, args = (argv[0], argv[1:]) if argv else ("", [])
    if command == "deploy":
        from services.cli import deploy

        return deploy.main(args)
    if command == "status" and not args:
        return status()
    if command == "inbox":
        from services.cli import inbox

        return inbox.main(settings_or_exit("botstack"), args)
    if command == "doctor" and not args:
        from services.cli import doctor

        return doctor.run()
    if command in ("backup", "restore"):
        from services.cli import archive, backups

        settings = settings_or_exit("botstack")
        try:
            if command == "backup" and not args:
                backups.backup(settings)
                return 0
            if command == "restore" and len(args) == 1:
                path = Path(args[0])
                if not path.is_absolute() and not path.exists():
                    path = Path(settings.backup_dir) / path
                backups.restore(settings, path)
                return 0
        except archive.BadArchive as exc:
            print(f"refused: {exc}; the database was not touched", file=sys.stderr)
            return 1
        except Exception as exc:  # one clear line, not a traceback
            print(f"{command} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
    print(__doc__.strip(), file=sys.stderr)
    return 2


def entry() -> None:
    sys.exit(main(sys.argv[1:]))


if __name__ == "__main__":
    entry()
