#!/usr/bin/env bash
# Runs pjdfstest (vendored in test/pjdfstest) against a replfs mount and reports, per group, how
# many tests ran and failed and which test numbers failed. The mount is unreplicated by default;
# with --replicated the tests run on a primary whose secondary listens on loopback. With --dir the
# tests run in an existing directory instead (a reference such as tmpfs or ext4; nothing is mounted).
# Mounts and daemons started here are always stopped at the end, also on failure or Ctrl-C.
# Exit code 0 only if every test of every chosen group passed. Must run as root (pjdfstest needs it).
#
# Usage: bash scripts/pjdfstest.sh [--replicated] [--dir DIR] [--groups link,rename,unlink,chmod]
#                                  [--json OUT] [--timeout SECONDS-PER-GROUP] [--keep]
#                                  [--attr-timeout SECONDS (passed to replfs mount)]
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
SUITE=$REPO/test/pjdfstest

replicated=0; ref_dir=''; groups=''; json=''; group_timeout=1800; keep=0; mount_flags=()
usage() { sed -n '9,11p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --replicated) replicated=1 ;;
    --dir) ref_dir=${2:?--dir needs a directory}; shift ;;
    --groups) groups=${2:?--groups needs a comma-separated list}; shift ;;
    --json) json=${2:?--json needs a file}; shift ;;
    --timeout) group_timeout=${2:?--timeout needs seconds}; shift ;;
    --keep) keep=1 ;;
    --attr-timeout) mount_flags+=(--attr-timeout "${2:?--attr-timeout needs seconds}"); shift ;;
    -h|--help) usage ;;
    *) echo "pjdfstest.sh: unknown argument $1" >&2; usage ;;
  esac
  shift
done
[ "$(id -u)" = 0 ] || { echo "pjdfstest.sh: must run as root (pjdfstest changes owners and switches uids)" >&2; exit 2; }
[ -z "$ref_dir" ] || [ "$replicated" = 0 ] || { echo "pjdfstest.sh: --dir and --replicated exclude each other" >&2; exit 2; }
[ -f "$REPO/dist/src/cli/main.js" ] || { echo "pjdfstest.sh: replfs is not built: npx tsc -p tsconfig.json" >&2; exit 2; }
command -v prove >/dev/null || { echo "pjdfstest.sh: prove (perl) is missing: apt-get install perl" >&2; exit 2; }

all_groups=$(cd "$SUITE/tests" && for d in */; do echo "${d%/}"; done | tr '\n' ',' | sed 's/,$//')
[ -n "$groups" ] || groups=$all_groups
IFS=, read -r -a group_list <<< "$groups"
for g in "${group_list[@]}"; do
  [ -d "$SUITE/tests/$g" ] || { echo "pjdfstest.sh: no such group '$g' (groups: $all_groups)" >&2; exit 2; }
done

# Build: one plain cc of pjdfstest.c with the hand-written Linux config.h (the same defines as
# upstream's configure finds on glibc); rebuilt only when a source is newer than the binary.
bin=$SUITE/pjdfstest
if [ ! -x "$bin" ] || [ "$SUITE/pjdfstest.c" -nt "$bin" ] || [ "$SUITE/linux/config.h" -nt "$bin" ]; then
  echo "pjdfstest.sh: building $bin"
  cc -Wall -Werror -O2 -I"$SUITE/linux" -o "$bin.tmp" "$SUITE/pjdfstest.c" || { echo "pjdfstest.sh: build failed (needs cc: apt-get install build-essential)" >&2; exit 2; }
  mv "$bin.tmp" "$bin"
fi

work=$(mktemp -d /tmp/replfs-pjdfstest.XXXXXX)
chmod 0755 "$work"  # the tests switch to other uids, which must reach the mount point
pids=(); mounts=(); prove_pid=''; run_dir=''

cleanup() {
  local i
  if [ -n "$prove_pid" ]; then kill -TERM "$prove_pid" 2>/dev/null; wait "$prove_pid" 2>/dev/null; fi
  if [ -n "$ref_dir" ] && [ -n "$run_dir" ]; then rm -rf "$run_dir"; fi
  for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do
    local m=${mounts[$i]}
    timeout 60 node "$REPO/bin/replfs" umount "$m" >/dev/null 2>&1 || fusermount -uz "$m" 2>/dev/null || true
  done
  for p in "${pids[@]}"; do
    kill -TERM "$p" 2>/dev/null || continue
    for _ in $(seq 1 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
  done
  for m in "${mounts[@]}"; do fusermount -uz "$m" 2>/dev/null || true; done
  if grep -q " $work/" /proc/mounts; then echo "pjdfstest.sh: a mount under $work would not go; left it" >&2
  elif [ "$keep" = 1 ]; then echo "pjdfstest.sh: kept $work (logs, stores, prove output)"
  else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'echo "pjdfstest.sh: interrupted" >&2; exit 130' INT
trap 'echo "pjdfstest.sh: terminated" >&2; exit 143' TERM

# Starts `replfs mount --foreground` in the background (its pid is ours to stop) and waits for it.
start_mount() {  # name, then extra mount flags
  local name=$1; shift
  local dir=$work/$name
  mkdir -p "$dir/mnt"
  REPLFS_RUN_DIR=$work/run-$name node "$REPO/bin/replfs" mount "$dir/mnt" --store "$dir/store" --foreground \
    --allow-other "${mount_flags[@]}" "$@" 2>"$dir/replfs.log" >/dev/null &
  pids+=($!); mounts+=("$dir/mnt")
  for _ in $(seq 1 400); do
    grep -q '"msg":"mounted"' "$dir/replfs.log" 2>/dev/null && return 0
    kill -0 "${pids[-1]}" 2>/dev/null || break
    sleep 0.05
  done
  echo "pjdfstest.sh: mount $name did not come up; its log:" >&2; tail -20 "$dir/replfs.log" >&2
  return 1
}
free_port() { node -e "const s=require('net').createServer().listen(20000+Math.floor(Math.random()*12000),'127.0.0.1',()=>{console.log(s.address().port);s.close()})"; }

if [ -n "$ref_dir" ]; then
  target="dir:$(df -PT "$ref_dir" | tail -1 | awk '{print $2}')"
  root=$ref_dir
elif [ "$replicated" = 1 ]; then
  target=replicated-primary
  head -c 32 /dev/urandom | base64 > "$work/secret"; chmod 600 "$work/secret"
  PA=$(free_port); PB=$(free_port)
  while [ "$PB" = "$PA" ]; do PB=$(free_port); done
  start_mount secondary --role secondary --listen 127.0.0.1:$PB --peer 127.0.0.1:$PA --secret-file "$work/secret" || exit 2
  start_mount primary --role primary --listen 127.0.0.1:$PA --peer 127.0.0.1:$PB --secret-file "$work/secret" --mode sync || exit 2
  root=$work/primary/mnt
else
  target=unreplicated
  start_mount single || exit 2
  root=$work/single/mnt
fi
run_dir=$root/pjdfstest.$$
mkdir -m 0755 "$run_dir" || exit 2

# One prove per group; its summary gives the files, the test count and the failed test numbers,
# and its verbose lines what each failed test tried, expected and got.
summary=$work/summary.tsv; : > "$summary"
echo "pjdfstest.sh: target $target, groups $groups, in $run_dir"
for g in "${group_list[@]}"; do
  out=$work/prove-$g.out
  started=$(date +%s.%N)
  # In the background and waited for, so that Ctrl-C reaches the trap at once (timeout runs
  # prove in a process group of its own, which the terminal's SIGINT does not reach).
  ( cd "$run_dir" && exec timeout "$group_timeout" prove -rv "$SUITE/tests/$g" ) > "$out" 2>&1 &
  prove_pid=$!
  wait "$prove_pid"; rc=$?; prove_pid=''
  secs=$(awk -v a="$started" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
  awk -v group="$g" -v rc="$rc" -v secs="$secs" -v base="$SUITE/tests/" '
    function flush() { if (file != "" && (ffailed > 0 || perr != "")) print group "\tfile\t" file "\t" ftests "\t" ffailed "\t" list "\t" perr; file = "" }
    !insum && index($0, base) == 1 && / \.\.+ */ { cur = $1; sub(base, "", cur); next }
    !insum && /^not ok / && !/# TODO/ && cur != "" { l = $0; gsub(/\t/, " ", l); print group "\tdetail\t" cur "\t" l; next }
    /^Test Summary Report/ { insum = 1; next }
    insum && /^[^ ].*\(Wstat: / { flush(); file = $1; sub(base, "", file)
      ftests = $0; sub(/.*Tests: /, "", ftests); sub(/ .*/, "", ftests)
      ffailed = 0; if ($0 ~ /Failed: /) { ffailed = $0; sub(/.*Failed: /, "", ffailed); sub(/\).*/, "", ffailed) }
      list = ""; perr = ""; inlist = 0; next }
    insum && /^  Failed tests:/ { l = $0; sub(/^  Failed tests: */, "", l); list = l; inlist = 1; next }
    insum && inlist && /^ +[0-9]/ { l = $0; gsub(/^ +/, "", l); list = list ", " l; next }
    insum && /^  (Parse errors|Non-zero exit status|Non-zero wait status):/ { l = $0; sub(/^  /, "", l); perr = (perr == "" ? l : perr "; " l); inlist = 0; next }
    insum && /^  / { inlist = 0; next }
    /^Files=[0-9]+, Tests=[0-9]+/ { flush(); f = $0; sub(/^Files=/, "", f); sub(/,.*/, "", f)
      t = $0; sub(/.*Tests=/, "", t); sub(/,.*/, "", t); files = f; tests = t }
    END { flush(); print group "\tgroup\t" files + 0 "\t" tests + 0 "\t" rc "\t" secs }
  ' "$out" >> "$summary"
  failed=$(awk -F'\t' -v g="$g" '$1 == g && $2 == "file" { n += $5 } END { print n + 0 }' "$summary")
  bad=$(awk -F'\t' -v g="$g" '$1 == g && $2 == "file" && $7 != "" { n++ } END { print n + 0 }' "$summary")
  tests=$(awk -F'\t' -v g="$g" '$1 == g && $2 == "group" { print $4 }' "$summary")
  state=ok; { [ "$rc" = 0 ] && [ "$failed" = 0 ]; } || state=FAIL
  [ "$rc" = 124 ] && state="FAIL (timed out after ${group_timeout}s)"
  printf '%-16s %5s tests %4s failed %6ss  %s\n' "$g" "$tests" "$failed" "$secs" "$state"
  awk -F'\t' -v g="$g" '$1 == g && $2 == "file" { printf "    %s: %s failed of %s: %s%s\n", $3, $5, $4, ($6 == "" ? "-" : $6), ($7 == "" ? "" : "  [" $7 "]") }' "$summary"
done

total_tests=$(awk -F'\t' '$2 == "group" { n += $4 } END { print n + 0 }' "$summary")
total_failed=$(awk -F'\t' '$2 == "file" { n += $5 } END { print n + 0 }' "$summary")
bad_groups=$(awk -F'\t' '$2 == "group" && $5 != 0 { n++ } END { print n + 0 }' "$summary")
echo "pjdfstest.sh: $target: $total_tests tests, $total_failed failed"
if [ -n "$json" ]; then
  node -e '
    const [file, target, tsv] = process.argv.slice(1)
    const rows = require("fs").readFileSync(tsv, "utf8").trim().split("\n").map(l => l.split("\t"))
    const groups = {}
    for (const r of rows.filter(r => r[1] === "group")) groups[r[0]] = { files: +r[2], tests: +r[3], failed: 0, proveExit: +r[4], seconds: +r[5], failures: {} }
    for (const r of rows.filter(r => r[1] === "file")) {
      groups[r[0]].failed += +r[4]
      groups[r[0]].failures[r[2]] = { tests: +r[3], failed: +r[4], failedTests: r[5], ...(r[6] ? { parseErrors: r[6] } : {}), details: [] }
    }
    for (const r of rows.filter(r => r[1] === "detail")) groups[r[0]].failures[r[2]]?.details.push(r[3].replace(/[^ \x27]{100,}/g, p => `<${p.length}-char path>`))
    const v = Object.values(groups)
    const out = { target, tests: v.reduce((a, g) => a + g.tests, 0), failed: v.reduce((a, g) => a + g.failed, 0), groups }
    require("fs").writeFileSync(file, JSON.stringify(out, null, 2) + "\n")
  ' "$json" "$target" "$summary"
fi
[ "$total_failed" = 0 ] && [ "$bad_groups" = 0 ]
