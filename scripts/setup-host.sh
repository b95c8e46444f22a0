#!/usr/bin/env bash
# One-time (idempotent) preparation of a Debian bookworm host for botstack's test suite:
#   1. a running Docker engine with the compose v2 and buildx plugins,
#   2. an offline base image (debootstrap + docker import) for machines that cannot pull images,
#   3. the FerretDB stand-in for `mongod` used only by the offline integration tests,
#   4. libfaketime, which gives a test's containers clocks that disagree.
# CI (.ci/run) calls this; developers on such a machine run it too. Needs root.
set -euo pipefail

BASE_IMAGE_TAG="${BOTSTACK_TEST_BASE_IMAGE:-botstack-ci/python:bookworm}"
FERRETDB_VERSION="${FERRETDB_VERSION:-v1.24.2}"
REPO_DIR="$(cd "$(dirname "$0")/.." && pwd)"
FERRETDB_OUT="$REPO_DIR/tests/integration/offline/build/ferretdb"
# Debian's source of trixie's libfaketime: bookworm's 0.9.10 breaks Python 3.11's time.sleep
# when the monotonic clock is left true (EINVAL, upstream issue #426) and hangs timed waits when
# it is not; this snapshot fixes both.
FAKETIME_VERSION="${FAKETIME_VERSION:-0.9.10+2024-06-05+gba9ed5b2}"
FAKETIME_OUT="$REPO_DIR/tests/integration/offline/build/libfaketime.so.1"
HOST_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
DOCKERD_LOG="${DOCKERD_LOG:-/var/log/dockerd.log}"

log() { printf 'setup-host: %s\n' "$*" >&2; }

need_root() {
  if [ "$(id -u)" != 0 ]; then
    log "must run as root (installs packages and starts dockerd)"; exit 1
  fi
}

install_docker() {
  if docker compose version >/dev/null 2>&1 && docker buildx version >/dev/null 2>&1 \
     && command -v dockerd >/dev/null 2>&1; then
    return
  fi
  need_root
  log "installing docker.io (bookworm) and docker-compose/docker-buildx (trixie, pinned low)"
  cat >/etc/apt/sources.list.d/trixie.sources <<'SRC'
Types: deb
URIs: http://deb.debian.org/debian
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  cat >/etc/apt/preferences.d/trixie <<'PIN'
Package: *
Pin: release n=trixie
Pin-Priority: 100
PIN
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq docker.io debootstrap >/dev/null
  apt-get install -y -qq -t trixie docker-compose docker-buildx >/dev/null
}

start_docker() {
  if docker info >/dev/null 2>&1; then return; fi
  need_root
  log "starting dockerd (log: $DOCKERD_LOG)"
  nohup dockerd >"$DOCKERD_LOG" 2>&1 &
  for _ in $(seq 1 60); do
    if docker info >/dev/null 2>&1; then return; fi
    sleep 1
  done
  log "BLOCKED: dockerd did not answer within 60 s; its log follows"
  tail -n 50 "$DOCKERD_LOG" >&2 || true
  exit 1
}

build_base_image() {
  if docker image inspect "$BASE_IMAGE_TAG" >/dev/null 2>&1; then return; fi
  command -v debootstrap >/dev/null 2>&1 || apt-get install -y -qq debootstrap >/dev/null
  local rootfs; rootfs="$(mktemp -d)"
  log "building offline base image $BASE_IMAGE_TAG with debootstrap"
  debootstrap --variant=minbase --include=ca-certificates,python3,python3-venv \
    bookworm "$rootfs" http://deb.debian.org/debian >/dev/null
  # CI-only: this machine reaches PyPI through a TLS-intercepting proxy whose CA is in the
  # host bundle. It goes into the *test* base image only; the product never sees it.
  install -D -m 0644 "$HOST_CA_BUNDLE" "$rootfs/usr/local/share/botstack-ci/ca-bundle.crt"
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/archives/*.deb
  tar -C "$rootfs" -c . | docker import \
    -c 'ENV LANG=C.UTF-8' \
    -c 'ENV PIP_CERT=/usr/local/share/botstack-ci/ca-bundle.crt' \
    -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    - "$BASE_IMAGE_TAG" >/dev/null
  rm -rf "$rootfs"
}

# FerretDB v1's SQLite backend finds a document by _id with `_ferretdb_sjson->'$._id'`, but
# the unique index it creates is on `_ferretdb_sjson->"_id"`, an expression SQLite does not
# take for the same one; and it narrows a query down to the _id in SQL only for string and
# ObjectId _ids. So every update or delete of one document, and every lookup by an integer _id
# (a Telegram user id), read and decoded the whole table: the stand-in slowed down with every
# stored document, which no mongod does. Two one-line changes make it use its own _id index, as
# mongod does; the stand-in is rebuilt when they change (the stamp beside the binary).
FERRETDB_PATCHES="id-index-expression,integer-id-pushdown"

patch_ferretdb() {
  local src=$1 meta=$1/internal/backends/sqlite/metadata/metadata.go coll=$1/internal/backends/sqlite/collection.go
  sed -i "s|IDColumn = DefaultColumn + \"->'\$._id'\"|IDColumn = DefaultColumn + \`->\"_id\"\`|" "$meta"
  sed -i 's|case string, types.ObjectID:|case string, types.ObjectID, int32, int64:|' "$coll"
  grep -q 'IDColumn = DefaultColumn + `->"_id"`' "$meta" && grep -q 'case string, types.ObjectID, int32, int64:' "$coll" \
    || { log "FerretDB $FERRETDB_VERSION: the _id index patches no longer apply; check $meta and $coll"; exit 1; }
}

build_ferretdb() {
  if [ -x "$FERRETDB_OUT" ] && [ "$(cat "$FERRETDB_OUT.patches" 2>/dev/null)" = "$FERRETDB_VERSION $FERRETDB_PATCHES" ]; then
    return
  fi
  log "building FerretDB $FERRETDB_VERSION (offline stand-in for mongod, tests only; patches: $FERRETDB_PATCHES)"
  local work dir; work="$(mktemp -d)"
  # The module zip lacks the generated build/version/version.txt; a binary built straight
  # from it panics at start, so build from a copy with that file written.
  dir="$(cd "$work" && GOFLAGS=-mod=mod go mod download -json "github.com/FerretDB/FerretDB@$FERRETDB_VERSION" \
        | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')"
  cp -r "$dir" "$work/src"; chmod -R u+w "$work/src"
  printf '%s' "$FERRETDB_VERSION" >"$work/src/build/version/version.txt"
  patch_ferretdb "$work/src"
  mkdir -p "$(dirname "$FERRETDB_OUT")"
  (cd "$work/src" && CGO_ENABLED=0 go build -trimpath -o "$FERRETDB_OUT" ./cmd/ferretdb)
  printf '%s' "$FERRETDB_VERSION $FERRETDB_PATCHES" >"$FERRETDB_OUT.patches"
  rm -rf "$work"
}

build_libfaketime() {
  if [ -f "$FAKETIME_OUT" ] && [ "$(cat "$FAKETIME_OUT.version" 2>/dev/null)" = "$FAKETIME_VERSION" ]; then return; fi
  log "building libfaketime $FAKETIME_VERSION (tests only: containers whose clocks disagree)"
  command -v cc >/dev/null 2>&1 && command -v make >/dev/null 2>&1 \
    || { need_root; apt-get install -y -qq gcc make libc6-dev >/dev/null; }
  local work; work="$(mktemp -d)"
  curl -sSfL -o "$work/src.tar.xz" \
    "http://deb.debian.org/debian/pool/main/f/faketime/faketime_${FAKETIME_VERSION//+/%2b}.orig.tar.xz"
  tar -C "$work" --strip-components=1 -xJf "$work/src.tar.xz"
  make -s -C "$work/src" libfaketime.so.1 >/dev/null
  mkdir -p "$(dirname "$FAKETIME_OUT")"
  install -m 0644 "$work/src/libfaketime.so.1" "$FAKETIME_OUT"
  printf '%s' "$FAKETIME_VERSION" >"$FAKETIME_OUT.version"
  rm -rf "$work"
}

install_browser() {
  # The dashboard's browser test drives Debian's own Chromium through its chromedriver
  # (Playwright's browser download is not reachable here).
  if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then return; fi
  need_root
  log "installing chromium and chromium-driver (bookworm) for the dashboard's browser test"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
}

install_docker
start_docker
install_browser
build_base_image
build_ferretdb
build_libfaketime
log "ready: $(docker version --format 'engine {{.Server.Version}}'), base image $BASE_IMAGE_TAG, $FERRETDB_OUT"
