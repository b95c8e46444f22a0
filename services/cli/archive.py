"""botstack's own backup format, for servers without mongodump (the offline FerretDB stand-in).

A gzip stream of BSON documents: a header naming every collection, its document count and its
index definitions (as list_indexes gives them: keys, name, unique, TTL …), then one
{"c": collection, "d": document} per document, then a trailer repeating the counts.
BSON keeps MongoDB's types (dates, ObjectIds, binary); gzip's CRC and the counts catch a
truncated or damaged file, so a bad backup is refused before anything is touched.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import bson
from pymongo.database import Database

MAGIC = "botstack-backup"
VERSION = 2  # 2: the header carries each collection's indexes; 1 (no indexes) is still read
READABLE = (1, 2)


class BadArchive(Exception):
    pass


def dump(db: Database, path: Path, meta: dict) -> dict[str, int]:
    names = sorted(n for n in db.list_collection_names() if not n.startswith("system."))
    counts = {n: db[n].count_documents({}) for n in names}
    indexes = {n: [dict(spec) for spec in db[n].list_indexes() if spec["name"] != "_id_"] for n in names}
    with gzip.open(path, "wb") as out:
        out.write(bson.encode({"magic": MAGIC, "version": VERSION, "counts": counts, "indexes": indexes, **meta}))
        written = {n: 0 for n in names}
        for name in names:
            for doc in db[name].find({}, sort=[("_id", 1)]):
                out.write(bson.encode({"c": name, "d": doc}))
                written[name] += 1
        out.write(bson.encode({"magic": MAGIC, "end": True, "counts": written}))
    return written


def read(path: Path):
    """Yield (collection, document); raise BadArchive unless the whole file is sound."""
    try:
        with gzip.open(path, "rb") as src:
            docs = bson.decode_file_iter(src)
            header = next(docs, None)
            if not header or header.get("magic") != MAGIC or header.get("version") not in READABLE:
                raise BadArchive("not a botstack backup (bad header)")
            seen: dict[str, int] = {}
            trailer = None
            for item in docs:
                if item.get("end"):
                    trailer = item
                    break
                seen[item["c"]] = seen.get(item["c"], 0) + 1
                yield item["c"], item["d"]
            expected = trailer["counts"] if trailer else None
            if expected is None or set(seen) - set(expected) or any(
                seen.get(name, 0) != n for name, n in expected.items()
            ):
                raise BadArchive("incomplete backup (the trailer is missing or the counts differ)")
    except (OSError, EOFError, zlib.error, bson.errors.BSONError, KeyError) as exc:
        raise BadArchive(f"unreadable backup ({type(exc).__name__}: {exc})") from None


def header(path: Path) -> dict:
    try:
        with gzip.open(path, "rb") as src:
            return next(bson.decode_file_iter(src), None) or {}
    except (OSError, EOFError, zlib.error, bson.errors.BSONError) as exc:
        raise BadArchive(f"unreadable backup ({type(exc).__name__}: {exc})") from None


def collections(path: Path) -> list[str]:
    """The collections a backup holds, empty ones included (from its header)."""
    return sorted(header(path).get("counts", {}))


def indexes(path: Path) -> dict[str, list[dict]]:
    """Each collection's index definitions (none in a version 1 backup)."""
    return header(path).get("indexes", {})


def verify(path: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for collection, _doc in read(path):
        counts[collection] = counts.get(collection, 0) + 1
    return counts
