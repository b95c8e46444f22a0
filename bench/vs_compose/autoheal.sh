#!/bin/sh
# The autoheal-equivalent watcher of the benchmark's usual setup (not shipped). docker-autoheal's
# image cannot be pulled here; this is its logic, run the way its image runs it (a shell loop with
# curl and jq, so that the usual setup is not charged for a heavier watcher than users run): every
# AUTOHEAL_INTERVAL seconds, list the containers labelled autoheal=true that Docker reports
# unhealthy, and restart each with a stop timeout of AUTOHEAL_DEFAULT_STOP_TIMEOUT seconds.
set -u
INTERVAL="${AUTOHEAL_INTERVAL:-5}"
STOP_TIMEOUT="${AUTOHEAL_DEFAULT_STOP_TIMEOUT:-10}"
UNHEALTHY='{"health":["unhealthy"],"label":["autoheal=true"]}'

engine() {
  curl --silent --max-time "$((STOP_TIMEOUT + 30))" --unix-socket /var/run/docker.sock "$@"
}

echo "autoheal-equivalent watcher: every ${INTERVAL} s, restart unhealthy containers"
while true; do
  engine --get --data-urlencode "filters=${UNHEALTHY}" http://engine/containers/json \
    | jq -r '.[] | .Id + " " + (.Names[0] | ltrimstr("/"))' \
    | while read -r id name; do
        code="$(engine --output /dev/null --write-out '%{http_code}' --request POST \
          "http://engine/containers/${id}/restart?t=${STOP_TIMEOUT}")"
        echo "$(date +%H:%M:%S) restarted unhealthy ${name}: HTTP ${code}"
      done
  sleep "${INTERVAL}"
done
