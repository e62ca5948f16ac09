#!/usr/bin/env bash
# `make stop`: stops what `make run` started (by the PIDs it recorded), newest first.
set -uo pipefail
RUN=${CALICO_TS_RUN_DIR:-/run/calico-ts}
for name in node dockerd etcd; do
  pidfile="$RUN/$name.pid"
  [ -f "$pidfile" ] || continue
  pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    echo "stopping $name (pid $pid)"
    kill -TERM "$pid"
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
  fi
  rm -f "$pidfile"
done
