#!/usr/bin/env bash
# Imports `local/busybox` into the local Docker without any registry: busybox-static plus applet links.
set -euo pipefail
docker image inspect local/busybox >/dev/null 2>&1 && exit 0
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
mkdir -p "$dir/bin" "$dir/tmp" "$dir/etc"
cp /bin/busybox "$dir/bin/busybox"
for applet in $(/bin/busybox --list); do
  [ "$applet" = busybox ] || ln -sf busybox "$dir/bin/$applet"
done
tar -C "$dir" -c . | docker import -c 'ENV PATH=/bin' - local/busybox >/dev/null
echo "imported image local/busybox"
