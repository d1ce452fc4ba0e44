#!/usr/bin/env bash
# Installs what replfs needs on Debian 12 (as root): FUSE 2 from apt, node modules, the build.
set -euo pipefail
cd "$(dirname "$0")/.."
need_apt=()
dpkg -s libfuse2 >/dev/null 2>&1 || need_apt+=(libfuse2)
dpkg -s fuse >/dev/null 2>&1 || need_apt+=(fuse)
# native/fuse3 (the libfuse 3 low-level binding) builds against these. Not the fuse3 package:
# it replaces fuse, which fuse-native needs; as root libfuse 3 mounts with mount(2) itself.
dpkg -s libfuse3-dev >/dev/null 2>&1 || need_apt+=(libfuse3-dev)
dpkg -s pkg-config >/dev/null 2>&1 || need_apt+=(pkg-config)
command -v ip >/dev/null 2>&1 || need_apt+=(iproute2)
command -v sqlite3 >/dev/null 2>&1 || need_apt+=(sqlite3)
command -v git >/dev/null 2>&1 || need_apt+=(git)
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
# node-gyp builds the addons with it; the sd_notify tests bind their datagram socket with it.
command -v python3 >/dev/null 2>&1 || need_apt+=(python3)
command -v attr >/dev/null 2>&1 || command -v getfattr >/dev/null 2>&1 || need_apt+=(attr)
command -v rsync >/dev/null 2>&1 || need_apt+=(rsync)
# scripts/pjdfstest.sh builds test/pjdfstest with cc and runs it with perl's prove.
command -v cc >/dev/null 2>&1 || need_apt+=(gcc libc6-dev)
command -v prove >/dev/null 2>&1 || need_apt+=(perl)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: apt-get install ${need_apt[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
[ -e /dev/fuse ] || { echo "setup: /dev/fuse is missing: this machine cannot mount FUSE filesystems" >&2; exit 1; }
echo "setup: npm ci"
npm ci --no-audit --no-fund --loglevel=error
echo "setup: build"
npm run --silent build
