#!/usr/bin/env bash
# Installs what calico-ts needs on a Debian machine, only when missing. Safe to run repeatedly.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
have() { command -v "$1" >/dev/null 2>&1; }
have dockerd      || need+=(docker.io)
have etcd         || need+=(etcd-server)
have bird         || need+=(bird2)
have iptables     || need+=(iptables)
have ipset        || need+=(ipset)
have ip           || need+=(iproute2)
have ping         || need+=(iputils-ping)
have iperf3       || need+=(iperf3)
have tcpdump      || need+=(tcpdump)
[ -x /bin/busybox ] || need+=(busybox-static)
have nsenter      || need+=(util-linux)
have curl         || need+=(curl ca-certificates)
have systemd-analyze || need+=(systemd)   # the packaging test verifies the unit file
if ((${#need[@]})); then
  echo "installing system packages: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=600 update -qq
  apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
have node || { echo "Node.js 20+ is required (apt-get install nodejs npm)" >&2; exit 1; }

# npm ci when node_modules is missing or older than the lock file.
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "installing npm packages (npm ci)"
  npm ci --no-audit --no-fund --loglevel=error
fi
