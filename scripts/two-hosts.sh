#!/usr/bin/env bash
# Two hosts for real, on one machine (as root): two network namespaces joined by a veth pair, each
# running replfs under its own config file (the same shape on both, as in /etc/replfs/<name>.conf).
# A writes, B follows; A is killed (kill -9) and B is promoted (failover); A comes back, finds B
# newer and rejoins as its secondary by itself; a switchover makes A primary again (failback).
# Every step checks what it claims; everything is unmounted and removed at the end, even on failure.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f dist/src/cli/main.js ] && [ -d node_modules ] || bash scripts/setup.sh
command -v ip >/dev/null || { echo "two-hosts: needs iproute2 (ip)" >&2; exit 1; }

REPLFS="$PWD/bin/replfs"
BASE=$(mktemp -d /tmp/replfs-two-hosts.XXXXXX)
TAG=$$
NS_A="replfs-demo-$TAG-a"; NS_B="replfs-demo-$TAG-b"
ADDR_A=169.254.77.1; ADDR_B=169.254.77.2

# Runs replfs as host X: inside its network namespace, with its own control-socket directory.
on () { local h=$1; shift; local ns=$NS_A; [ "$h" = b ] && ns=$NS_B
  REPLFS_RUN_DIR="$BASE/$h/run" nsenter --net="/run/netns/$ns" "$REPLFS" "$@"; }
# field a.b: that field of the JSON on stdin (empty when there is none).
field () { node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{let v;try{v=JSON.parse(s)}catch{return};for(const k of process.argv[1].split("."))v=v?.[k];console.log(v??"")})' "$1"; }
say () { printf '\n== %s\n' "$*"; }
fail () { echo "two-hosts: FAILED: $*" >&2; exit 1; }

cleanup () {
  set +e
  for h in a b; do
    pid=$(REPLFS_RUN_DIR="$BASE/$h/run" "$REPLFS" status "$BASE/$h/mnt" --json 2>/dev/null | field pid)
    [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null
    umount -l "$BASE/$h/mnt" 2>/dev/null
  done
  ip netns del "$NS_A" 2>/dev/null; ip netns del "$NS_B" 2>/dev/null
  grep -q " $BASE/" /proc/mounts || rm -rf "$BASE"
}
trap cleanup EXIT

say "two hosts: namespaces $NS_A ($ADDR_A) and $NS_B ($ADDR_B), one veth pair"
ip netns add "$NS_A"; ip netns add "$NS_B"
ip link add "rd$TAG-a" netns "$NS_A" type veth peer name "rd$TAG-b" netns "$NS_B"
ip -n "$NS_A" link set lo up; ip -n "$NS_B" link set lo up
ip -n "$NS_A" addr add "$ADDR_A/30" dev "rd$TAG-a"; ip -n "$NS_B" addr add "$ADDR_B/30" dev "rd$TAG-b"
ip -n "$NS_A" link set "rd$TAG-a" up; ip -n "$NS_B" link set "rd$TAG-b" up

head -c 32 /dev/urandom | base64 > "$BASE/secret"; chmod 600 "$BASE/secret"
for h in a b; do
  mkdir -p "$BASE/$h/mnt" "$BASE/$h/run"
  if [ $h = a ]; then me=$ADDR_A; peer=$ADDR_B; role=primary; else me=$ADDR_B; peer=$ADDR_A; role=secondary; fi
  cat > "$BASE/$h.conf" <<EOF
# host $h of volume "demo"
store = $BASE/$h/store
mountpoint = $BASE/$h/mnt
role = $role
listen = $me:7410
peer = $peer:7410
secret-file = $BASE/secret
mode = sync
peer-timeout = 2
EOF
done
echo "config of host a:"; sed 's/^/  /' "$BASE/a.conf"

say "start both hosts from their config files"
on b mount --config "$BASE/b.conf"
on a mount --config "$BASE/a.conf"
A="$BASE/a/mnt"; B="$BASE/b/mnt"

wait_acked () { # wait_acked host: its peer acknowledged every record
  for _ in $(seq 1 150); do
    s=$(on "$1" status "$BASE/$1/mnt" --json)
    [ "$(echo "$s" | field replication.ackedSeq)" = "$(echo "$s" | field seq)" ] && return 0
    sleep 0.2
  done
  fail "host $1's peer did not acknowledge everything: $s"
}
same_trees () { # same_trees dirA dirB
  [ "$(cd "$1" && find . -type f ! -path './.snapshots/*' -exec sha256sum {} + | sort)" = "$(cd "$2" && find . -type f ! -path './.snapshots/*' -exec sha256sum {} + | sort)" ] || fail "$1 and $2 differ"
}

say "A (primary) writes; B follows"
mkdir -p "$A/docs"; for i in 1 2 3; do head -c $((i * 300000)) /dev/urandom > "$A/docs/f$i"; done; sync -f "$A"
wait_acked a
same_trees "$A" "$B"; echo "both hosts hold the same $(find "$A" -type f | wc -l) files"
on a verify "$A"

say "failover: kill -9 A, promote B"
pid=$(on a status "$A" --json | field pid); kill -9 "$pid"; umount -l "$A"
on b promote "$B" --force
echo "written on B after the failover" > "$B/after-failover.txt"; sync -f "$B"
[ "$(on b status "$B" --json | field replication.role)" = primary ] || fail "B is not primary"

say "A comes back with its own config: it learns B is newer and rejoins as B's secondary"
on a mount --config "$BASE/a.conf"
for _ in $(seq 1 150); do [ "$(on a status "$A" --json | field replication.role)" = secondary ] && break; sleep 0.2; done
[ "$(on a status "$A" --json | field replication.role)" = secondary ] || fail "A did not rejoin as secondary"
wait_acked b
same_trees "$B" "$A"; cat "$A/after-failover.txt"
on b verify "$B"

say "failback: switchover on B makes A primary again, with no copy"
on b switchover "$B"
for _ in $(seq 1 150); do [ "$(on a status "$A" --json | field readOnly)" = false ] && break; sleep 0.2; done
[ "$(on a status "$A" --json | field replication.role)" = primary ] || fail "A is not primary after the switchover"
echo "written on A after the failback" > "$A/after-failback.txt"; sync -f "$A"
wait_acked a
same_trees "$A" "$B"
on a verify "$A"

say "done: failover and failback, both hosts identical"
on a umount "$A"; on b umount "$B"
