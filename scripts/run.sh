#!/usr/bin/env bash
# `make run`: a local etcd, dockerd (only if no Docker daemon answers) and `calico-ts node run`, each in
# the background with its log under /var/log/calico-ts and its PID under /run/calico-ts. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
LOG=/var/log/calico-ts
RUN=${CALICO_TS_RUN_DIR:-/run/calico-ts}
DATA=/var/lib/calico-ts
mkdir -p "$LOG" "$RUN" "$DATA" /run/docker/plugins

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
wait_for() { # what, seconds, command...
  local what=$1 secs=$2; shift 2
  for _ in $(seq $((secs * 10))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "$what did not come up; see $LOG" >&2; return 1
}

if [ -z "${ETCD_ENDPOINTS:-}" ]; then
  if ! curl -fsS http://127.0.0.1:2379/health >/dev/null 2>&1; then
    echo "starting local etcd (data in $DATA/etcd, log $LOG/etcd.log)"
    setsid etcd --name calico-ts --data-dir "$DATA/etcd" \
      --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
      --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
      --initial-cluster calico-ts=http://127.0.0.1:2380 >>"$LOG/etcd.log" 2>&1 < /dev/null &
    echo $! > "$RUN/etcd.pid"
    wait_for etcd 20 curl -fsS http://127.0.0.1:2379/health
  fi
fi

if ! docker info >/dev/null 2>&1; then
  echo "no Docker daemon answers: starting dockerd (log $LOG/dockerd.log)"
  setsid dockerd >>"$LOG/dockerd.log" 2>&1 < /dev/null &
  echo $! > "$RUN/dockerd.pid"
  wait_for dockerd 60 docker info
fi

if alive "$RUN/node.pid"; then
  echo "calico-ts node already running (pid $(cat "$RUN/node.pid")); make stop && make run restarts it"
else
  echo "starting calico-ts node (log $LOG/node.log)"
  setsid calico-ts node run >>"$LOG/node.log" 2>&1 < /dev/null &
  echo $! > "$RUN/node.pid"
  wait_for "calico-ts node" 30 test -S "${CALICO_TS_SOCKET:-/run/docker/plugins/calico-ts.sock}"
fi

scripts/busybox-image.sh

cat <<'MSG'

calico-ts is running. Next:
  docker network create --driver calico-ts --ipam-driver calico-ts net1
  docker run -d --net net1 --name web local/busybox sleep 1d
  docker run --rm --net net1 local/busybox ping -c1 $(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' web)
  calico-ts ipam show
  docker rm -f web; docker network rm net1
  make stop            # stops what make run started
MSG
