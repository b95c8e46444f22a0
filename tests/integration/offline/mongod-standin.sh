#!/bin/sh
# TEST-ONLY: accepts the mongod flags botstack's supervisor.conf uses and runs FerretDB v1
# (SQLite) in their place. An unknown flag is an error, so the stand-in cannot silently drift
# from the real command line.
set -eu
bind=127.0.0.1 port=27017 dbpath=/data/db
while [ $# -gt 0 ]; do
  case "$1" in
    --bind_ip) bind=$2; shift 2 ;;
    --port) port=$2; shift 2 ;;
    --dbpath) dbpath=$2; shift 2 ;;
    --wiredTigerCacheSizeGB) shift 2 ;;   # storage-engine tuning; no meaning for SQLite
    --quiet) shift ;;
    *) echo "mongod stand-in: unsupported flag $1" >&2; exit 64 ;;
  esac
done
# Built by scripts/setup-host.sh with two one-line changes so that it finds documents by _id
# through its _id index, as mongod does (see patch_ferretdb there).
exec /usr/local/lib/ferretdb-standin/ferretdb --handler=sqlite --sqlite-url="file:$dbpath/" \
  --listen-addr="$bind:$port" --state-dir=- --telemetry=disable --debug-addr=- --log-level=error
