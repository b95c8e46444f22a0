"""TEST-ONLY, part of the mongod stand-in: give FerretDB's SQLite tables the _id index its own
lookups can use.

FerretDB v1 (SQLite) finds and updates a document by `_ferretdb_sjson->'$._id'`, but the unique
index it creates is on `_ferretdb_sjson->"_id"`, an expression SQLite does not take as the same
one. So every update of one document scans its whole table and parses each row's JSON: measured
here, 1,000 queued updates took FerretDB 126 s of CPU, and a single update grew linearly with
the collection. mongod finds a document by _id through an index; with this index the stand-in
does too. FerretDB keeps its index list in its own metadata, so an extra SQLite index is
invisible to it (listIndexes is unchanged).

Runs beside FerretDB for as long as the process that started it lives; looks for new tables
every half second.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import time
from pathlib import Path

PERIOD_S = 0.5


def add_missing(db_file: Path) -> None:
    with sqlite3.connect(db_file, timeout=5) as conn:
        tables = [row[0] for row in conn.execute("SELECT table_name FROM _ferretdb_collections")]
        present = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        for table in tables:
            name = f"standin_{table}_id_lookup"
            if name not in present:
                conn.execute(f"CREATE INDEX IF NOT EXISTS \"{name}\" ON \"{table}\" (_ferretdb_sjson->'$._id')")


def main(dbpath: str) -> None:
    parent = os.getppid()
    while os.getppid() == parent:  # FerretDB (exec'd in the parent's place) still runs
        for db_file in Path(dbpath).glob("*.sqlite"):
            try:
                add_missing(db_file)
            except sqlite3.Error:
                pass  # a database being created or dropped: looked at again next time
        time.sleep(PERIOD_S)


if __name__ == "__main__":
    main(sys.argv[1])
