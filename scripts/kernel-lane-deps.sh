#!/usr/bin/env bash
# The kernel lane's dependencies: qemu (software emulation), cpio, kmod (modinfo), and Debian's
# linux-image-amd64 kernel with the four modules the lane needs, cached under build/kernel-lane/<package>/
# (vmlinuz, the .ko files, a modules.dep for them). Prints that directory. Safe to run repeatedly.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${KERNEL_LANE_CACHE:-build/kernel-lane}"
MODULES=(kernel/net/ipv4/tunnel4.ko kernel/net/ipv4/ip_tunnel.ko kernel/net/ipv4/ipip.ko kernel/drivers/net/veth.ko)
export DEBIAN_FRONTEND=noninteractive
apt() { apt-get -o DPkg::Lock::Timeout=600 "$@"; }

need=()
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
command -v cpio >/dev/null || need+=(cpio)
command -v modinfo >/dev/null || need+=(kmod)
command -v iperf3 >/dev/null || need+=(iperf3)
if ((${#need[@]})); then
  echo "installing for the kernel lane: ${need[*]}" >&2
  apt update -qq >&2
  apt install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

pkg_name() { apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}'; }
pkg="$(pkg_name)"
if [ -z "$pkg" ]; then apt update -qq >&2; pkg="$(pkg_name)"; fi
[ -n "$pkg" ] || { echo "cannot find Debian's linux-image-amd64 (apt sources?)" >&2; exit 1; }
dir="$CACHE/$pkg"
if [ ! -f "$dir/complete" ]; then
  echo "fetching $pkg for the kernel lane (once; cached in $dir)" >&2
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  (cd "$work" && apt-get download "$pkg" >&2 2>/dev/null) || { apt update -qq >&2; (cd "$work" && apt-get download "$pkg" >&2); }
  dpkg-deb -x "$work"/*.deb "$work/root"
  version="$(ls "$work/root/lib/modules")"
  rm -rf "$dir"
  mkdir -p "$dir/lib/modules/$version"
  cp "$work/root/boot/vmlinuz-$version" "$dir/vmlinuz"
  : >"$dir/lib/modules/$version/modules.dep"
  for m in "${MODULES[@]}"; do
    mkdir -p "$dir/lib/modules/$version/$(dirname "$m")"
    cp "$work/root/lib/modules/$version/$m" "$dir/lib/modules/$version/$m"
  done
  # modules.dep for busybox modprobe: "<module>: <its dependencies>", paths relative to the version dir.
  for m in "${MODULES[@]}"; do
    deps=""
    for d in $(modinfo -F depends "$dir/lib/modules/$version/$m" | tr ',' ' '); do
      for c in "${MODULES[@]}"; do [ "$(basename "$c" .ko)" = "$d" ] && deps="$deps $c"; done
    done
    echo "$m:$deps" >>"$dir/lib/modules/$version/modules.dep"
  done
  echo "$version" >"$dir/version"
  touch "$dir/complete"
fi
echo "$dir"
