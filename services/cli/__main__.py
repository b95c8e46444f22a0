"""botstack — operate a running stack (inside its container) and deploy it (on the host).

Built on argparse subcommands: the standard library's own CLI parser, so the command adds no
dependency to the image, and every command gets `--help`. Every command takes `--json` for
machines (the deploy reads the in-container commands that way, never their prose).

Exit status: 0 success, 1 a check or operation failed, 2 usage, 78 bad settings.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import timezone
from pathlib import Path

from services.common.collections import DEPLOYS
from services.common.logs import redact
from services.common.settings import settings_or_exit

PROGRAM = "botstack"


def emit(args, data: dict, lines: list[str]) -> None:
    """JSON for machines, lines for people; both pass the redaction (no token, no URI password)."""
    if getattr(args, "json", False):
        print(redact(json.dumps(data, default=str)))
    else:
        for line in lines:
            print(redact(line))


def progress(args, lines: list[str]):
    """Where an operation's messages go: printed as they happen, or kept for the JSON answer."""

    def out(line: str) -> None:
        lines.append(line)
        if not getattr(args, "json", False):
            try:
                print(redact(line), flush=True)
            except OSError:  # the terminal went away (a dropped session): the operation goes on
                pass

    return out


def status(args) -> int:
    from services.common import oom
    from services.common.buildinfo import build_info
    from services.common.supervisor import programs, rpc
    from services.common.verdict import read_verdict

    settings = settings_or_exit(PROGRAM)
    info = build_info(settings, PROGRAM)
    verdict = read_verdict(settings.run_dir) or {"status": "unknown (no fresh verdict)", "reasons": [], "programs": {}}
    lines = [f"build {info['version']} sha {info['git_sha']} built {info['build_time']}"]
    try:
        rows = programs(rpc(settings.supervisor_socket))
    except OSError as exc:
        emit(args, {"error": f"supervisord not reachable: {exc}"}, [f"supervisord not reachable: {exc}"])
        return 1
    table = []
    for p in rows:
        restarts = verdict["programs"].get(p.name, {}).get("restarts", {})
        since = p.started_at.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ") if p.started_at else "-"
        rss = oom.resident_mib(p.pid) if p.pid else None
        table.append({"name": p.name, "state": p.state, "pid": p.pid, "since": since, "restarts": restarts,
                      "rss_mib": round(rss, 1) if rss is not None else None})
        lines.append(f"{p.name:<12} {p.state:<9} pid {p.pid or '-':<6} since {since}  restarts "
                     f"crash {restarts.get('crash', 0)} hang {restarts.get('hang', 0)} fatal {restarts.get('fatal', 0)} "
                     f"memory {restarts.get('memory', 0)}"
                     f"  {f'{rss:.0f} MiB' if rss is not None else '-'}")
    memory = {"rss_mib": round(sum(r["rss_mib"] or 0 for r in table), 1), "limit_mib": oom.limit_mib(),
              "oom_kills": oom.oom_kills(), "ceilings_mib": settings.memory_ceilings}
    lines.append(f"memory: {memory['rss_mib']:.0f} MiB resident in the programs; "
                 + (f"the container's limit is {memory['limit_mib']} MiB" if memory["limit_mib"] else
                    "no memory limit on the container")
                 + (f"; {memory['oom_kills']} process(es) killed by the kernel for memory" if memory["oom_kills"]
                    else "")
                 + ("; restarted gracefully above " + ", ".join(f"{n} {m} MiB" for n, m in memory["ceilings_mib"].items())
                    if memory["ceilings_mib"] else ""))
    lines.append(f"health: {verdict['status']}" + "".join(f"\n  - {r}" for r in verdict["reasons"]))
    bot = verdict.get("bot")
    if bot:
        lines.append(f"bot: {bot.get('role')} ({bot.get('mode')} mode), {bot.get('conflicts', 0)} polling conflicts")
    inbox = None
    try:
        from services.bot.inbox import COLLECTION
        from services.cli.inbox import counts, summary
        from services.common.db import make_sync_client

        with make_sync_client(settings, "cli") as client:
            inbox = counts(client[settings.mongodb_db][COLLECTION], settings.bot_id)
        lines.append(summary(inbox))
    except Exception as exc:  # status still reports what it can see without the database
        lines.append(f"inbox: unknown (database not reachable: {type(exc).__name__})")
    emit(args, {"build": info, "programs": table, "memory": memory, "health": verdict, "bot": bot, "inbox": inbox},
         lines)
    return 0 if verdict["status"] in ("healthy", "degraded") else 1


def doctor(args) -> int:
    from services.cli import doctor as checks

    return checks.run(args)


def backup(args) -> int:
    from services.cli import backups

    settings = settings_or_exit(PROGRAM)
    lines: list[str] = []
    path = backups.backup(settings, progress(args, lines))
    emit(args, {"path": str(path), "bytes": path.stat().st_size, "messages": lines}, [])
    return 0


def list_backups(args) -> int:
    from services.cli import backups

    found = backups.listing(settings_or_exit(PROGRAM))
    lines = [f"{b['name']:<60} {b['bytes']:>12} bytes" for b in found] or ["no backups yet"]
    emit(args, {"backups": found}, lines)
    return 0


def restore(args) -> int:
    from services.cli import archive, backups

    settings = settings_or_exit(PROGRAM)
    path = Path(args.backup)
    if not path.is_absolute() and not path.exists():
        path = Path(settings.backup_dir) / path
    lines: list[str] = []
    backups.shielded()
    try:
        backups.restore(settings, path, progress(args, lines))
    except (archive.BadArchive, backups.Refused) as exc:
        return refused(args, exc, lines)
    except backups.Interrupted as exc:
        text = f"restore interrupted ({exc}); the database is as it was before it"
        emit(args, {"error": text, "messages": lines}, [text])
        return 1
    except Exception as exc:
        text = f"restore failed: {type(exc).__name__}: {exc}"
        emit(args, {"error": text, "messages": lines}, [text])
        return 1
    emit(args, {"restored": str(path), "messages": lines}, [])
    return 0


def deploys(args) -> int:
    """The deploy history as MongoDB keeps it (the dashboard reads it there); `record` takes
    one entry, as JSON on stdin, from `botstack deploy` on the host."""
    from datetime import datetime, timezone

    from services.common.db import make_sync_client

    settings = settings_or_exit(PROGRAM)
    with make_sync_client(settings, "cli") as client:
        collection = client[settings.mongodb_db][DEPLOYS]
        if args.action == "record":
            entry = json.loads(sys.stdin.read())
            entry["recorded_at"] = datetime.now(timezone.utc)
            collection.insert_one(entry)
            emit(args, {"recorded": True}, ["recorded"])
            return 0
        entries = list(collection.find({}, {"_id": 0, "steps": 0}).sort("recorded_at", -1).limit(50))
    emit(args, {"deploys": entries},
         [f"{e.get('time')}  {e.get('result'):<22} {str(e.get('from_sha') or '-')[:12]:<12} -> "
          f"{str(e.get('to_sha'))[:12]}" for e in entries] or ["no deploys recorded"])
    return 0


def inbox(args) -> int:
    from services.cli import inbox as dead_letters

    return dead_letters.run(settings_or_exit(PROGRAM), args, emit)


def deploy(args) -> int:
    from services.cli import deploy as deployment

    return deployment.run(args)


def alert(args) -> int:
    """The same delivery as the sidecar's alerts: proves every channel works before it matters."""
    from healthcheck.notify import NotifierProcess, channels_from, url_problems

    settings = settings_or_exit(PROGRAM)
    channels = channels_from(settings)
    for problem in url_problems(channels.urls):
        emit(args, {"error": f"BOTSTACK_ALERT_URLS: {problem}"}, [f"BOTSTACK_ALERT_URLS: {problem}"])
        return 78
    reached = [f"telegram chat {c}" for c in channels.chat_ids] if channels.token else []
    reached += [f"{u.split('://', 1)[0]}://..." for u in channels.urls]
    if not channels:
        emit(args, {"error": "no alert channel", "sent": False},
             ["no alert channel: set BOTSTACK_ALERT_CHAT_IDS (with the bot's token) or BOTSTACK_ALERT_URLS"])
        return 1
    try:
        NotifierProcess(channels)(f"botstack: {args.text}")
    except RuntimeError as exc:
        failed = redact(str(exc), channels.secrets())
        emit(args, {"sent": False, "channels": len(reached), "failed": failed.split("; ")},
             [f"not delivered: {line}" for line in failed.split("; ")])
        return 1
    emit(args, {"sent": True, "channels": len(reached)}, [f"delivered to {', '.join(reached)}"])
    return 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog=PROGRAM, description=__doc__.split("\n\n")[0])
    commands = top.add_subparsers(dest="command", metavar="command", required=True)

    def command(name: str, handler, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("--json", action="store_true", help="machine-readable output")
        sub.set_defaults(handler=handler)
        return sub

    command("status", status, "programs, build, health verdict, restarts, inbox counts")
    command("doctor", doctor, "preflight checks, each failure with what to do; exit 1 if any fails")
    command("backup", backup, "dump the database into BOTSTACK_BACKUP_DIR, verified")
    command("backups", list_backups, "list the backups (name, size, time, build SHA)")
    sub = command("restore", restore, "safety backup, stop the writers, restore (indexes included), start them; "
                                      "a failed restore puts the safety backup back")
    sub.add_argument("backup", help="a file in BOTSTACK_BACKUP_DIR, or a path")
    sub = command("deploys", deploys, "the deploy history kept in MongoDB (botstack deploy records there too)")
    sub.add_argument("action", nargs="?", choices=["record"], help="record: one entry as JSON on stdin")
    sub = command("alert", alert, "send a test alert through every alert channel (Telegram chats, "
                                  "BOTSTACK_ALERT_URLS); exit 1 if one fails")
    sub.add_argument("text", nargs="?", default="a test alert from `botstack alert`: this channel works")
    from services.cli import inbox as dead_letters

    dead_letters.add_arguments(command("inbox", inbox, "failed updates: list, handle again, delete"))
    from services.cli import deploy as deployment

    deployment.add_arguments(command("deploy", deploy, "on the host: lock, preflight, doctor, backup, build, up, "
                                                       "verify the whole stack, roll back on failure"))
    return top


def refused(args, exc: Exception, lines: list[str] | None = None) -> int:
    """A backup or restore that did not start: why, in one line."""
    text = f"refused: {exc}; the database was not touched"
    emit(args, {"error": text, "messages": lines or []}, [text])
    return 1


def main(argv: list[str]) -> int:
    from services.cli import archive

    args = parser().parse_args(argv)
    try:
        return args.handler(args)
    except archive.BadArchive as exc:
        return refused(args, exc)
    except Exception as exc:  # one clear line, not a traceback
        text = f"{args.command} failed: {type(exc).__name__}: {exc}"
        emit(args, {"error": text}, [text])
        return 1


def entry() -> None:
    sys.exit(main(sys.argv[1:]))


if __name__ == "__main__":
    entry()
