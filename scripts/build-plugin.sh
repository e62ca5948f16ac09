#!/usr/bin/env bash
# `make plugin`: a Docker managed plugin in build/ (config.json + rootfs/), made without any registry:
#   docker plugin create calico-ts ./build && docker plugin enable calico-ts
#
# The rootfs holds only what the node runs: node, the built app with its production npm packages, and
# the host's own Debian binaries (iproute2, iptables with the nf_tables backend and its xtables
# modules, ipset, BIRD 2, sysctl, cat, tee, unshare, nsenter) with exactly the libraries `ldd` lists.
# Everything comes from the installed Debian packages (their versions: build/versions.txt), so the same
# machine builds the same plugin; no debootstrap, no download but `npm ci` of the locked packages.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${PLUGIN_BUILD_DIR:-build}
ROOTFS=$OUT/rootfs

[ -f dist/plugin/cli/main.js ] || { echo "no build: run make build first" >&2; exit 1; }
rm -rf "$OUT"
mkdir -p "$ROOTFS"/{app,etc,tmp,run,var/run,proc,sys,dev,usr/bin,usr/sbin}
chmod 1777 "$ROOTFS/tmp"

# A file into the rootfs at the same path, symlinks resolved into the content.
copy_file() {
  mkdir -p "$ROOTFS$(dirname "$1")"
  cp -L --preserve=mode "$1" "$ROOTFS$1"
}

# A binary or shared object and every library ldd says it loads (at their paths on this host).
declare -A copied=()
copy_elf() {
  local f=$1 lib
  [ -n "${copied[$f]:-}" ] && return 0
  copied[$f]=1
  copy_file "$f"
  for lib in $(ldd "$f" 2>/dev/null | grep -o '/[^ ]*' || true); do
    [ -n "${copied[$lib]:-}" ] && continue
    copied[$lib]=1
    copy_file "$lib"
  done
}

# A command from PATH, under its own name, in /usr/bin or /usr/sbin (wherever it really lives).
copy_command() {
  local cmd=$1 path real dir
  path=$(command -v "$cmd") || { echo "missing command: $cmd (run make deps)" >&2; exit 1; }
  real=$(readlink -f "$path")
  copy_elf "$real"
  dir=/usr/bin; case "$real" in */sbin/*) dir=/usr/sbin ;; esac
  [ "$real" = "$dir/$cmd" ] || ln -sf "$real" "$ROOTFS$dir/$cmd"
}

echo "plugin: binaries and libraries"
copy_command node
for c in ip ipset bird birdc sysctl cat tee unshare nsenter; do copy_command "$c"; done

# iptables: the nf_tables multi-call binary under every name we call, plus its extension modules.
nft_multi=$(readlink -f "$(command -v xtables-nft-multi)")
copy_elf "$nft_multi"
for n in iptables iptables-save iptables-restore ip6tables ip6tables-save ip6tables-restore; do
  ln -sf "$nft_multi" "$ROOTFS/usr/sbin/$n"
done
xtables_dir=$(dirname "$(dpkg -L iptables | grep -m1 "/xtables/libxt_.*\.so$")")
for so in "$xtables_dir"/*.so; do copy_elf "$so"; done

# Name databases the tools read (iptables resolves -p tcp; ip reads rt_protos), and a root user.
for f in /etc/protocols /etc/services /etc/ethertypes; do [ -f "$f" ] && copy_file "$f"; done
for d in /etc/iproute2 /usr/share/iproute2; do [ -d "$d" ] && { mkdir -p "$ROOTFS$d"; cp -a "$d/." "$ROOTFS$d/"; }; done
echo 'root:x:0:0:root:/root:/bin/false' > "$ROOTFS/etc/passwd"
echo 'root:x:0:' > "$ROOTFS/etc/group"
printf 'passwd: files\ngroup: files\nhosts: files dns\nprotocols: files\nservices: files\n' > "$ROOTFS/etc/nsswitch.conf"
: > "$ROOTFS/etc/hosts"
: > "$ROOTFS/etc/resolv.conf"

echo "plugin: app and production npm packages"
mkdir -p "$ROOTFS/app/dist"
cp -a dist/plugin "$ROOTFS/app/dist/"
[ -f dist/build-info.json ] && cp dist/build-info.json "$ROOTFS/app/dist/"
cp package.json package-lock.json "$ROOTFS/app/"
(cd "$ROOTFS/app" && npm ci --omit=dev --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null)
rm -f "$ROOTFS/app/package-lock.json"

cp config.json "$OUT/config.json"

# What went in, for the record (and to compare two builds).
{
  echo "calico-ts $(node -p 'require("./package.json").version') commit $(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)"
  echo "node $(node --version)"
  for p in iproute2 iptables libxtables12 ipset bird2 procps coreutils util-linux libc6; do
    dpkg-query -W -f='${Package} ${Version}\n' "$p" 2>/dev/null || true
  done
} > "$OUT/versions.txt"

echo "plugin: $OUT ($(du -sh "$OUT" | cut -f1)); install it with:"
echo "  docker plugin create calico-ts ./$OUT && docker plugin enable calico-ts"
