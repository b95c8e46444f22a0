# botstack: one immutable image in which supervisord is the only thing that starts programs.
#
# Targets:
#   app         Python, the code, supervisord; a non-root user. No database server.
#   standalone  (default, last) app + MongoDB Community Server 8.0 from MongoDB's apt repository.
#
# BASE_IMAGE must be Debian 12 (bookworm) based: MongoDB 8.0 ships server packages for
# Debian 12 only. Offline CI passes a locally built bookworm image here; the default is the
# official Python image.
ARG BASE_IMAGE=python:3.12-slim-bookworm

FROM ${BASE_IMAGE} AS app

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONPATH=/app

RUN groupadd --system --gid 10001 botstack \
 && useradd --system --uid 10001 --gid botstack --home-dir /nonexistent --no-create-home \
        --shell /usr/sbin/nologin botstack \
 && install -d -o botstack -g botstack -m 0750 /data/db /data/backups /run/botstack

# Dependencies before code: a code-only change reuses this layer and rebuilds in seconds.
COPY requirements.txt /opt/botstack/requirements.txt
RUN python3 -m venv /opt/venv \
 && pip install --no-cache-dir --disable-pip-version-check -r /opt/botstack/requirements.txt

# The code is owned by root and read-only to the programs; bytecode is compiled now, since
# PYTHONDONTWRITEBYTECODE keeps the running programs from writing it.
WORKDIR /app
COPY supervisord.conf /app/supervisord.conf
COPY healthcheck /app/healthcheck
COPY services /app/services
RUN python -m compileall -q /app \
 && printf '#!/bin/sh\nexec python -m services.cli "$@"\n' > /usr/local/bin/botstack \
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
    BOTSTACK_BUILD_TIME="${BUILD_TIME}"

USER botstack
EXPOSE 8000 8080
STOPSIGNAL SIGTERM
# The sidecar's verdict: healthy, or degraded (a dependency down, programs alive) exit 0;
# unhealthy (a program down, hung or crash-looping) exit 1. --start-interval needs engine 25+.
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --start-interval=1s --retries=3 \
    CMD ["python", "-m", "healthcheck", "status"]
CMD ["supervisord", "-c", "/app/supervisord.conf"]


FROM app AS standalone

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
