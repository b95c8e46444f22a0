"""`botstack inbox`: the updates the bot could not handle (the dead letters), and what to do
with them once the cause is fixed.

  botstack inbox                  counts, and the failed updates with their errors
  botstack inbox retry ID|--all   handle failed updates again (attempts start afresh)
  botstack inbox drop ID|--all    delete failed updates for good

ID is the update_id shown in the list (or the full inbox id, "<bot id>:<update_id>").
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime, timezone

from services.bot.inbox import CLAIMED, COLLECTION, FAILED, PENDING
from services.common.db import make_sync_client
from services.common.settings import Settings

SHOWN = 50


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="botstack inbox", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="action")
    for action, what in (("retry", "handle failed updates again"), ("drop", "delete failed updates")):
        q = sub.add_parser(action, help=what)
        which = q.add_mutually_exclusive_group(required=True)
        which.add_argument("id", nargs="?", help="an update_id from `botstack inbox`")
        which.add_argument("--all", action="store_true", help="every failed update")
    return p


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


def main(settings: Settings, argv: list[str]) -> int:
    args = parser().parse_args(argv)
    with make_sync_client(settings, "cli") as client:
        collection = client[settings.mongodb_db][COLLECTION]
        if args.action is None:
            print(summary(counts(collection, settings.bot_id)))
            for doc in collection.find({"state": FAILED}).sort("failed_at", -1).limit(SHOWN):
                when = doc.get("failed_at")
                when = when.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ") if isinstance(when, datetime) else "-"
                print(f"  {doc.get('update_id') or doc['_id']}  failed {when}  attempts {doc.get('attempts', 0)}  "
                      f"{doc.get('error', '')}")
            return 0
        selector = _selector(settings, args)
        if args.action == "retry":
            result = collection.update_many(
                {**selector, "update": {"$exists": True}},
                {"$set": {"state": PENDING, "attempts": 0, "abandoned": 0, "next_at": datetime.now(timezone.utc)},
                 "$unset": {"failed_at": "", "claim": "", "claim_until": ""}},
            )
            print(f"{result.modified_count} failed update(s) will be handled again")
        else:
            result = collection.delete_many(selector)
            print(f"{result.deleted_count} failed update(s) dropped")
        if not (result.modified_count if args.action == "retry" else result.deleted_count):
            print("nothing matched: see `botstack inbox` for the failed updates", file=sys.stderr)
            return 1
        return 0
