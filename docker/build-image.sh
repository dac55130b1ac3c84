#!/usr/bin/env bash
# Builds the tallykv:local Docker image from files on this machine, with no registry access:
# FROM scratch plus the release server, redis-cli (health checks and in-network clients),
# dash as /bin/sh with coreutils' timeout and sleep (for client scripts such as
# docker/cluster-client.sh), the shared libraries those load (found with ldd), and a
# minimal /etc.
#
# Usage: docker/build-image.sh
# Environment:
#   TALLYKV_IMAGE  image tag to build (default tallykv:local)
#   TALLYKV_BIN    server binary to package as is; when unset, `cargo build --release` runs
#                  first (a no-op when up to date) and its tallykv-server (under
#                  $CARGO_TARGET_DIR, default target/) is used, so the image never carries a
#                  stale build
set -euo pipefail
cd "$(dirname "$0")/.."

image=${TALLYKV_IMAGE:-tallykv:local}
uid=10001 # the unprivileged user the server runs as; owns /data (its group may write it too)

if [ -z "${TALLYKV_BIN:-}" ]; then
  cargo build --release --bin tallykv-server
  bin=${CARGO_TARGET_DIR:-target}/release/tallykv-server
else
  bin=$TALLYKV_BIN
fi
[ -x "$bin" ] || { echo "build-image: no executable server at $bin" >&2; exit 1; }

if ! command -v redis-cli >/dev/null; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q redis-tools
  else
    echo "build-image: redis-cli not found (install Debian's redis-tools)" >&2
    exit 1
  fi
fi
cli=$(command -v redis-cli)
tools=()
for tool in dash timeout sleep; do
  path=$(command -v "$tool") || { echo "build-image: $tool not found" >&2; exit 1; }
  tools+=("$path")
done

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
root=$ctx/rootfs

# put SRC DEST MODE: copies SRC (following symlinks) to DEST inside the image's root.
put() {
  install -D -m "$3" "$(readlink -f "$1")" "$root$2"
}

put "$bin" /usr/local/bin/tallykv-server 0755
put "$cli" /usr/bin/redis-cli 0755
put "${tools[0]}" /bin/sh 0755
put "${tools[1]}" /usr/bin/timeout 0755
put "${tools[2]}" /usr/bin/sleep 0755

# Every shared object the programs load, at the path the host's loader found it
# (ldd prints "name => /path (addr)" for libraries and "/path (addr)" for the loader).
libs=$(for exe in "$bin" "$cli" "${tools[@]}"; do
  if ldd "$exe" | grep -q "not found"; then
    echo "build-image: $exe has unresolved libraries:" >&2
    ldd "$exe" >&2
    exit 1
  fi
  ldd "$exe" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }'
done | sort -u)
for lib in $libs; do
  put "$lib" "$lib" 0755
done

# Host names (the compose peers tallykv1..3) resolve through Docker's embedded DNS. glibc
# 2.34 and later have the files and dns NSS modules built in and ship the libnss_*.so.2
# names as stubs; older glibc loads them, so they are copied whenever they exist.
libc_dir=$(dirname "$(echo "$libs" | grep '/libc\.so\.6$')")
for nss in libnss_files.so.2 libnss_dns.so.2; do
  if [ -e "$libc_dir/$nss" ]; then
    put "$libc_dir/$nss" "$libc_dir/$nss" 0755
  fi
done

mkdir -p "$root/etc/tallykv"
install -m 0644 docker/tallykv.conf "$root/etc/tallykv/tallykv.conf"
printf 'root:x:0:0:root:/root:/bin/sh\ntallykv:x:%s:%s:tallykv:/data:/bin/sh\n' "$uid" "$uid" \
  >"$root/etc/passwd"
printf 'root:x:0:\ntallykv:x:%s:\n' "$uid" >"$root/etc/group"
printf 'passwd: files\ngroup: files\nhosts: files dns\n' >"$root/etc/nsswitch.conf"
chmod 0644 "$root/etc/passwd" "$root/etc/group" "$root/etc/nsswitch.conf"
# The loader's cache, so libraries the host found through ld.so.conf entries resolve too.
echo "$libs" | xargs -n1 dirname | sort -u >"$root/etc/ld.so.conf"
ldconfig -r "$root" -X
mkdir -m 1777 "$root/tmp"
# Group-writable: docker-compose.yml runs each node as a uid of its own in group 10001.
mkdir -m 0770 "$root/data"

# One reproducible tar: sorted, epoch mtimes, numeric owners; root owns everything but /data.
tar -C "$root" --sort=name --mtime=@0 --numeric-owner --owner=0 --group=0 \
  --exclude=./data -cf "$ctx/rootfs.tar" .
tar -C "$root" --mtime=@0 --numeric-owner --owner="$uid" --group="$uid" \
  -rf "$ctx/rootfs.tar" ./data
cp docker/Dockerfile "$ctx/Dockerfile"

# The legacy builder: FROM scratch needs nothing that BuildKit adds, and BuildKit (buildx)
# is not installed everywhere the engine is. Its output (a deprecation notice first) is
# shown only when the build fails. An unchanged rootfs.tar hits the build cache.
old=$(docker image inspect -f '{{.Id}}' "$image" 2>/dev/null || true)
if ! out=$(DOCKER_BUILDKIT=0 docker build -t "$image" "$ctx" 2>&1); then
  echo "$out" >&2
  echo "build-image: docker build failed" >&2
  exit 1
fi
# The image this tag named before is left untagged: remove it unless something still uses it.
if [ -n "$old" ] && [ "$old" != "$(docker image inspect -f '{{.Id}}' "$image")" ]; then
  docker rmi "$old" >/dev/null 2>&1 || true
fi
echo "build-image: built $image ($(docker image inspect -f '{{.Size}}' "$image" | awk '{ printf "%.1f MB", $1 / 1e6 }'))"
