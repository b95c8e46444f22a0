"""`botstack inbox`: the updates the bot could not handle (the dead letters), and what to do
with them once the cause is fixed.

  botstack inbox                  counts, and the failed updates with their errors
  botstack inbox retry ID|--all   handle failed updates again (attempts start afresh)
  botstack inbox drop ID|--all    delete failed updates for good

ID is the update_id shown in the list (or the full inbox id, "<bot id>:<update_id>").
"""

from __future__ import annotations

import argparse
from datetime import datetime, timezone

from services.bot.inbox import CLAIMED, COLLECTION, FAILED, PENDING
from services.common.db import make_sync_client
from services.common.serverclock import server_clock
from services.common.settings import Settings

SHOWN = 50


def add_arguments(command: argparse.ArgumentParser) -> None:
    sub = command.add_subparsers(dest="action")
    for action, what in (("retry", "handle failed updates again"), ("drop", "delete failed updates")):
        q = sub.add_parser(action, help=what, description=what)
        which = q.add_mutually_exclusive_group(required=True)
        which.add_argument("id", nargs="?", help="an update_id from `botstack inbox`")
        which.add_argument("--all", action="store_true", help="every failed update")
        q.add_argument("--json", action="store_true", help="machine-readable output")


def counts(collection, bot_id: str | None) -> dict[str, int]:
    base = {"bot": bot_id} if bot_id else {}
    return {state: collection.count_documents({**base, "state": state}) for state in (PENDING, CLAIMED, FAILED)}


def summary(c: dict[str, int]) -> str:
    return f"inbox: {c[PENDING]} pending, {c[CLAIMED]} in progress, {c[FAILED]} failed"


def _selector(settings: Settings, args) -> dict:
    base = {"bot": settings.bot_id, "state": FAILED} if settings.bot_id else {"state": FAILED}
    if args.all:
        return base
    if args.id.isdigit():
        return {**base, "update_id": int(args.id)}
    return {**base, "_id": args.id}


def failed(collection, limit: int = SHOWN) -> list[dict]:
    rows = []
    for doc in collection.find({"state": FAILED}).sort("failed_at", -1).limit(limit):
        when = doc.get("failed_at")
        rows.append({"id": doc.get("update_id") or doc["_id"], "attempts": doc.get("attempts", 0),
                     "abandoned": doc.get("abandoned", 0), "error": doc.get("error", ""),
                     "failed_at": when.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")
                     if isinstance(when, datetime) else "-"})
    return rows


def act(collection, settings: Settings, action: str, selector_args) -> int:
    """retry or drop; how many failed updates it applied to."""
    selector = _selector(settings, selector_args)
    if action == "retry":
        return collection.update_many(
            {**selector, "update": {"$exists": True}},
            {"$set": {"state": PENDING, "attempts": 0, "abandoned": 0, "outages": 0,
                      "next_at": server_clock(collection.database)()},  # due now on the dispatchers' clock
             "$unset": {"failed_at": "", "claim": "", "claim_until": ""}},
        ).modified_count
    return collection.delete_many(selector).deleted_count


def run(settings: Settings, args, emit) -> int:
    with make_sync_client(settings, "cli") as client:
        collection = client[settings.mongodb_db][COLLECTION]
        if args.action is None:
            c, rows = counts(collection, settings.bot_id), failed(collection)
            emit(args, {"counts": c, "failed": rows},
                 [summary(c)] + [f"  {r['id']}  failed {r['failed_at']}  attempts {r['attempts']}  {r['error']}"
                                 for r in rows])
            return 0
        n = act(collection, settings, args.action, args)
        done = "will be handled again" if args.action == "retry" else "dropped"
        lines = [f"{n} failed update(s) {done}"]
        if not n:
            lines.append("nothing matched: see `botstack inbox` for the failed updates")
        emit(args, {"action": args.action, "count": n}, lines)
        return 0 if n else 1
