#!/usr/bin/env bash
# The main job, from a fresh Debian 12 machine (as root): install, build, then run a primary and
# its secondary replica on this one machine over loopback TCP, write files on the primary, and show
# the replica identical: same files (sha256 of every file on both mounts) and same state digest
# (`replfs verify`). A snapshot taken on the primary appears, identical, on the replica (the command
# travels in the stream). Then the secondary is killed, more is written, it comes back and catches
# up with only what it missed.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
work=$(mktemp -d /tmp/replfs-demo.XXXXXX)
export REPLFS_RUN_DIR=$work/run
A=$work/primary; B=$work/secondary
mkdir -p "$A/mnt" "$B/mnt"
cleanup() {
  node bin/replfs umount "$A/mnt" 2>/dev/null || fusermount -uz "$A/mnt" 2>/dev/null || true
  node bin/replfs umount "$B/mnt" 2>/dev/null || fusermount -uz "$B/mnt" 2>/dev/null || true
}
trap cleanup EXIT
replfs() { node bin/replfs "$@"; }
free_port() { node -e "const s=require('net').createServer().listen(0,'127.0.0.1',()=>{console.log(s.address().port);s.close()})"; }
PA=$(free_port); PB=$(free_port)
head -c 32 /dev/urandom | base64 > "$work/secret"; chmod 600 "$work/secret"

echo "--- secondary (read-only replica) on 127.0.0.1:$PB, primary on 127.0.0.1:$PA, mode sync"
secondary() { replfs mount "$B/mnt" --store "$B/store" --role secondary --listen 127.0.0.1:$PB --peer 127.0.0.1:$PA \
  --secret-file "$work/secret" --attr-timeout 0 --log-file "$B/replfs.log"; }
secondary
replfs mount "$A/mnt" --store "$A/store" --role primary --listen 127.0.0.1:$PA --peer 127.0.0.1:$PB \
  --secret-file "$work/secret" --mode sync --log-file "$A/replfs.log"

caught_up() {  # waits until the secondary has acknowledged everything the primary committed
  for _ in $(seq 1 300); do
    s=$(replfs status "$A/mnt" --json)
    if node -e "const r=JSON.parse(process.argv[1]).replication; process.exit(r.phase==='streaming'&&r.lagRecords===0?0:1)" "$s"; then return 0; fi
    sleep 0.1
  done
  echo "secondary did not catch up"; replfs status "$A/mnt"; return 1
}
sums() { ( cd "$1" && find . -type f -print0 | sort -z | xargs -0 sha256sum ) }

mkdir -p "$A/mnt/project/src"
cp -a src/. "$A/mnt/project/src/"
head -c 20M /dev/urandom > "$A/mnt/project/random.bin"
ln -s random.bin "$A/mnt/project/latest"
echo "hello from replfs" > "$A/mnt/hello.txt"
caught_up
echo "--- primary:"; ls -la "$A/mnt" "$A/mnt/project" | head -20
echo "--- secondary:"; ls -la "$B/mnt" "$B/mnt/project" | head -20
echo "--- secondary is read-only:"; (echo x > "$B/mnt/nope") 2>&1 || true
sums "$A/mnt" > "$work/a.sha"; sums "$B/mnt" > "$work/b.sha"
cmp -s "$work/a.sha" "$work/b.sha" || { echo "files DIFFER"; diff "$work/a.sha" "$work/b.sha"; exit 1; }
echo "--- $(wc -l < "$work/a.sha") files identical on both mounts (sha256)"
replfs verify "$A/mnt"

echo "--- snapshot 'first' on the primary, then change files: the replica has the same snapshot"
replfs snapshot create "$A/mnt" first
echo "changed after the snapshot" > "$A/mnt/hello.txt"
rm "$A/mnt/project/random.bin"
caught_up
replfs snapshot list "$B/mnt"
echo "live:     $(cat "$B/mnt/hello.txt")"
echo "snapshot: $(cat "$B/mnt/.snapshots/first/hello.txt")"
sums "$A/mnt/.snapshots/first" > "$work/a.snap.sha"; sums "$B/mnt/.snapshots/first" > "$work/b.snap.sha"
cmp -s "$work/a.snap.sha" "$work/b.snap.sha" || { echo "snapshots DIFFER"; diff "$work/a.snap.sha" "$work/b.snap.sha"; exit 1; }
echo "--- snapshot 'first': $(wc -l < "$work/a.snap.sha") files identical on both hosts (sha256)"
replfs verify "$A/mnt"

echo "--- kill -9 the secondary, write 10 MiB more, restart it: it resumes where it stopped"
pkill -9 -f -- "--store $B/store" || true
sleep 0.5; fusermount -uz "$B/mnt" 2>/dev/null || true
head -c 10M /dev/urandom > "$A/mnt/project/written-while-away.bin"
echo "while the secondary was away:"; replfs status "$A/mnt" | grep -E 'phase|degraded|lagRecords|lagBytes'
secondary
caught_up
grep -o '"mode":"[a-z]*","from":[0-9]*' "$A/replfs.log" | tail -1 | sed 's/^/primary log: /'
sums "$A/mnt" > "$work/a.sha"; sums "$B/mnt" > "$work/b.sha"
cmp -s "$work/a.sha" "$work/b.sha" || { echo "files DIFFER"; diff "$work/a.sha" "$work/b.sha"; exit 1; }
echo "--- after the restart: $(wc -l < "$work/a.sha") files identical on both mounts"
replfs verify "$A/mnt"
replfs status "$A/mnt"
replfs umount "$A/mnt"; replfs umount "$B/mnt"
echo "demo done: stores and logs in $work"
