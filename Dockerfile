# botstack: one immutable image in which supervisord is the only thing that starts programs.
#
# Targets:
#   app         Python, the code, supervisord; a non-root user. No database server.
#   emulator    Test double of the Telegram Bot API (tests, demo, offline compose). Never shipped:
#               `app` and `standalone` contain no emulator and no test code.
#   standalone  (default, last) app + MongoDB Community Server 8.0 from MongoDB's apt repository.
#
# BASE_IMAGE must be Debian 12 (bookworm) based: MongoDB 8.0 ships server packages for
# Debian 12 only. Offline CI passes a locally built bookworm image here; the default is the
# official Python image.
ARG BASE_IMAGE=python:3.12-slim-bookworm

FROM ${BASE_IMAGE} AS runtime

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONPATH=/app

RUN groupadd --system --gid 10001 botstack \
 && useradd --system --uid 10001 --gid botstack --home-dir /nonexistent --no-create-home \
        --shell /usr/sbin/nologin botstack \
 && install -d -o botstack -g 0 -m 2770 /data/db /data/backups /run/botstack

# Dependencies before code: a code-only change reuses this layer and rebuilds in seconds.
COPY requirements.txt /opt/botstack/requirements.txt
RUN python3 -m venv /opt/venv \
 && pip install --no-cache-dir --disable-pip-version-check -r /opt/botstack/requirements.txt

WORKDIR /app


# The product's code, without the test double. Pruned in a stage of its own, so that no layer of
# `app` ever holds the emulator (a file deleted in a later layer would still ship in the image).
FROM runtime AS code
COPY supervisord.conf /app/supervisord.conf
COPY healthcheck /app/healthcheck
COPY services /app/services
COPY yours /app/yours
RUN rm -rf /app/services/emulator \
 && python -m compileall -q /app


FROM runtime AS app
# The code is owned by root and read-only to the programs; bytecode was compiled in `code`, since
# PYTHONDONTWRITEBYTECODE keeps the running programs from writing it.
COPY --from=code /app /app
RUN printf '#!/bin/sh\nexec python -m services.cli "$@"\n' > /usr/local/bin/botstack \
 && chmod 0755 /usr/local/bin/botstack

# Build identity last, so that a new SHA or build time reuses every layer above.
ARG VERSION=0.0.0+dev
ARG GIT_SHA=unknown
ARG BUILD_TIME=unknown
LABEL org.opencontainers.image.title="botstack" \
      org.opencontainers.image.description="MongoDB, API, dashboard and Telegram bot under supervisord" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${GIT_SHA}" \
      org.opencontainers.image.created="${BUILD_TIME}" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV BOTSTACK_VERSION="${VERSION}" \
    BOTSTACK_GIT_SHA="${GIT_SHA}" \
    BOTSTACK_BUILD_TIME="${BUILD_TIME}" \
    BOTSTACK_MONGOD_AUTOSTART=true

USER botstack
EXPOSE 8000 8080
STOPSIGNAL SIGTERM
# The sidecar's verdict: healthy, or degraded (a dependency down, programs alive) exit 0;
# unhealthy (a program down, hung or crash-looping) exit 1. --start-interval needs engine 25+.
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --start-interval=1s --retries=3 \
    CMD ["python", "-m", "healthcheck", "status"]
# services/start.py: start the container's own mongod only when MONGODB_URI points at it.
CMD ["python", "-m", "services.start"]


# TEST DOUBLE, never shipped: the Bot API emulator (services/emulator/), for the integration tests,
# benchmarks and the offline compose file. It needs only the shared logging code besides its own.
FROM runtime AS emulator
COPY services/__init__.py /app/services/__init__.py
COPY services/common /app/services/common
COPY services/emulator /app/services/emulator
RUN python -m compileall -q /app
LABEL org.opencontainers.image.title="botstack-emulator" \
      org.opencontainers.image.description="Test double of the Telegram Bot API; not for production"
USER botstack
EXPOSE 8081
HEALTHCHECK --interval=5s --timeout=3s --start-period=20s --start-interval=1s --retries=3 \
    CMD ["python", "-m", "services.common.probe", "http://127.0.0.1:8081/_emulator/health"]
CMD ["python", "-m", "services.emulator", "--host", "0.0.0.0", "--port", "8081"]


FROM app AS with-mongodb

# MongoDB Community Server 8.0 (LTS) from MongoDB's own repository, signed with the
# 8.0 release key (checked by fingerprint) and pinned to one version.
ARG MONGODB_SERIES=8.0
ARG MONGODB_VERSION=8.0.15
ARG MONGODB_KEY_FINGERPRINT=4B0752C1BCA238C0B4EE14DC41DE058A4E7DCA05
USER root
RUN set -eux; \
    export DEBIAN_FRONTEND=noninteractive; \
    apt-get update; \
    apt-get install -y --no-install-recommends ca-certificates curl gnupg; \
    export GNUPGHOME="$(mktemp -d)"; \
    curl -fsSL "https://pgp.mongodb.com/server-${MONGODB_SERIES}.asc" -o /tmp/mongodb.asc; \
    gpg --batch --import /tmp/mongodb.asc; \
    gpg --batch --fingerprint --with-colons | grep -q "^fpr:::::::::${MONGODB_KEY_FINGERPRINT}:"; \
    gpg --batch --export "${MONGODB_KEY_FINGERPRINT}" > /usr/share/keyrings/mongodb-server.gpg; \
    echo "deb [signed-by=/usr/share/keyrings/mongodb-server.gpg] https://repo.mongodb.org/apt/debian bookworm/mongodb-org/${MONGODB_SERIES} main" \
        > /etc/apt/sources.list.d/mongodb-org.list; \
    apt-get update; \
    apt-get install -y --no-install-recommends "mongodb-org-server=${MONGODB_VERSION}" mongodb-database-tools; \
    apt-get purge -y --auto-remove curl gnupg; \
    rm -rf "$GNUPGHOME" /tmp/mongodb.asc /var/lib/apt/lists/* /var/lib/mongodb /etc/mongod.conf
USER botstack


# DEVELOPMENT ONLY (compose.dev.yaml): the standalone image plus watchfiles, so that api, web and
# the bot reload when the mounted code changes. No production target contains it, and without it
# BOTSTACK_RELOAD refuses to start (services/common/reloading.py).
FROM with-mongodb AS dev
USER root
RUN pip install --no-cache-dir --disable-pip-version-check watchfiles==1.3.0
USER botstack


# The default target (last, so that `docker build .` and Railway build it): the app and its mongod.
FROM with-mongodb AS standalone
