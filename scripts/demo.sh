#!/usr/bin/env bash
# The main job, from a fresh Debian 12 machine (as root): install, build, then mount a volume,
# write into it, unmount, mount again and show that everything came back (checksums compared).
# Replication (a primary and a peer on this machine) arrives with the replication work; until
# then this is the single-host job.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
work=$(mktemp -d /tmp/replfs-demo.XXXXXX)
mnt=$work/mnt; store=$work/store
mkdir -p "$mnt"
export REPLFS_RUN_DIR=$work/run
cleanup() { fusermount -uz "$mnt" 2>/dev/null || true; }
trap cleanup EXIT
replfs() { node bin/replfs "$@"; }

replfs mount "$mnt" --store "$store" --log-file "$work/replfs.log"
mkdir -p "$mnt/project/src"
cp -a src/. "$mnt/project/src/"
head -c 20M /dev/urandom > "$mnt/project/random.bin"
ln -s random.bin "$mnt/project/latest"
echo "hello from replfs" > "$mnt/hello.txt"
( cd "$mnt/project" && find . -type f -print0 | sort -z | xargs -0 sha256sum ) > "$work/before.sha"
echo "--- written:"; ls -la "$mnt" "$mnt/project"; df -h "$mnt"
replfs status "$mnt"
replfs umount "$mnt"
echo "--- fsck of the closed store:"
replfs fsck --store "$store"
replfs mount "$mnt" --store "$store" --log-file "$work/replfs.log"
( cd "$mnt/project" && find . -type f -print0 | sort -z | xargs -0 sha256sum ) > "$work/after.sha"
cat "$mnt/hello.txt"
if cmp -s "$work/before.sha" "$work/after.sha"; then
  echo "--- after remount: all $(wc -l < "$work/after.sha") files identical (sha256)"
else
  echo "--- after remount: files DIFFER"; diff "$work/before.sha" "$work/after.sha" || true; exit 1
fi
replfs umount "$mnt"
echo "demo done: store and log in $work"
