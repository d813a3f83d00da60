#!/bin/bash
# PeerDrive restore benchmark (issue 4): 6 local storage peers (`peerdrive serve`).
# Machine A (a mount with 4 data + 2 parity shards) writes BENCH_RESTORE_FILES small files plus
# one large file, BENCH_RESTORE_MB MiB in all, and syncs; then A is stopped ("lost") and
# machine B, a fresh home made from A's recovery key with a single --bootstrap, mounts the
# drive. Timed:
#   A: reading everything with a warm cache (the reference)
#   B: from starting `mount` until the whole tree is visible (mount up, every file listed)
#   B: reading everything, cold (contents come from the peers)
# See bench/README.md. Run from anywhere as root: bench/restore.sh
# Ratios are t_B / t_A_warm_read: how many times A's warm read each step of the restore takes.
set -euo pipefail
export LC_ALL=C

ROOT=$(cd "$(dirname "$(readlink -f "$0")")/.." && pwd)

TOTAL_MB=${BENCH_RESTORE_MB:-1024}        # all files together, MiB
NFILES=${BENCH_RESTORE_FILES:-10000}      # small files (bench/tools/mkfiles)...
FILE_SIZE=${BENCH_RESTORE_FILE_SIZE:-4096} # ...of this many bytes each; one more file holds the rest
RUNS=${BENCH_RUNS:-3}                     # best of RUNS for A's warm read
NPEERS=${BENCH_PEERS:-6}                  # storage peers
DATA=4 PARITY=2                           # --data-shards / --parity-shards
CONTRIBUTE=4GiB                           # --contribute of every node
VERIFY=${BENCH_VERIFY:-1}                 # compare B's contents with A's (untimed)
BASE=${BENCH_DIR:-/var/tmp}               # parent of the work dir

die() { echo "bench: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "run as root (mounts, /proc/sys/vm/drop_caches)"
command -v fusermount3 >/dev/null || command -v fusermount >/dev/null || die "fuse3 (fusermount3) missing"
command -v jq >/dev/null || die "jq missing (apt-get install jq): it reads 'peerdrive status --json'"
BIG_BYTES=$((TOTAL_MB * 1048576 - NFILES * FILE_SIZE))
[ "$BIG_BYTES" -gt 0 ] || die "BENCH_RESTORE_FILES x BENCH_RESTORE_FILE_SIZE ($NFILES x $FILE_SIZE B) leaves nothing of BENCH_RESTORE_MB=$TOTAL_MB MiB for the large file"
NTOTAL=$((NFILES + 1))

WORK=$(mktemp -d "$BASE/peerdrive-restore.XXXXXX")
SHM=$(mktemp -d /dev/shm/peerdrive-restore.XXXXXX)   # tmpfs: the large file's source
LOG=$WORK/bench.log
HA=$WORK/a-home MA=$WORK/a-mnt HB=$WORK/b-home MB=$WORK/b-mnt
APID="" BPID="" PEERPIDS=()

cleanup() {
  set +e
  for d in "$MA" "$MB"; do
    grep -q " $d fuse" /proc/mounts && { umount "$d" 2>/dev/null || fusermount3 -u "$d" 2>/dev/null || umount -l "$d"; }
  done
  for p in $APID $BPID "${PEERPIDS[@]}"; do kill "$p" 2>/dev/null; done
  sleep 0.5
  for p in $APID $BPID "${PEERPIDS[@]}"; do kill -9 "$p" 2>/dev/null; done
  for d in "$MA" "$MB"; do grep -q " $d fuse" /proc/mounts && umount -l "$d"; done
  rm -rf "$SHM"
  if [ -n "${BENCH_KEEP:-}" ]; then echo "bench: work dir kept: $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------- helpers ----------
now() { echo "$EPOCHREALTIME"; }
fsub() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.3f", a-b}'; }
fadd() { case "$1$2" in *FAIL*) echo FAIL;; *) awk -v a="$1" -v b="$2" 'BEGIN{printf "%.3f", a+b}';; esac; }
ratio() { # NUM DEN -> NUM/DEN with 2 decimals, or NA
  case "$1$2" in *FAIL*|*NA*|"") echo NA; return;; esac
  awk -v a="$1" -v b="$2" 'BEGIN{ if (b+0 <= 0) print "NA"; else printf "%.2f", a/b }'
}
mbps() { case "$1" in FAIL|NA|"") echo NA;; *) awk -v s="$1" -v m="$TOTAL_MB" 'BEGIN{printf "%.0f", m/s}';; esac; }
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }
is_mounted() { grep -q " $1 fuse" /proc/mounts; }
wait_mounted() { # DIR SECONDS [PID]: 1 if it did not appear, or PID exited first
  local i
  for i in $(seq 1 $(($2 * 20))); do
    is_mounted "$1" && return 0
    [ -z "${3:-}" ] || kill -0 "$3" 2>/dev/null || return 1
    sleep 0.05
  done
  return 1
}
wait_exit() { # PID SECONDS -> 0 if it exited
  local i
  for i in $(seq 1 $(($2 * 10))); do kill -0 "$1" 2>/dev/null || { wait "$1" 2>/dev/null || true; return 0; }; sleep 0.1; done
  return 1
}
CLK_TCK=$(getconf CLK_TCK)
cpu_s() { # PID... -> their user+system CPU seconds so far (gone processes count 0)
  local p f t=0
  for p in "$@"; do
    [ -n "$p" ] && [ -r "/proc/$p/stat" ] || continue
    f=$(sed 's/.*) //' "/proc/$p/stat")
    t=$(awk -v t0="$t" -v hz="$CLK_TCK" '{printf "%.2f", t0 + ($12+$13)/hz}' <<<"$f")
  done
  echo "$t"
}
drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }
count_files() { find "$1" -type f 2>/dev/null | wc -l; }
# Reading everything: every small file, then the large one. (Not `tar -cf /dev/null`: GNU tar
# notices the /dev/null archive and does not read the files at all.)
read_small() { find "$1/files" -type f -print0 | xargs -0 -r cat >/dev/null; }
read_big()   { cat "$1/big.bin" >/dev/null; }
checksum()   { (cd "$1" && find . -type f -print0 | sort -z | xargs -0 cat | cksum); }

# timed LABEL DAEMON-PID CMD... -> T (seconds or FAIL); prints the time, the daemon's and the peers' CPU
T=""
timed() {
  local label=$1 pid=$2 c0 c1 p0 p1 s e rc=0
  shift 2
  c0=$(cpu_s "$pid"); p0=$(cpu_s "${PEERPIDS[@]}")
  s=$(now)
  "$@" >>"$LOG" 2>&1 || rc=$?
  e=$(now)
  c1=$(cpu_s "$pid"); p1=$(cpu_s "${PEERPIDS[@]}")
  if [ "$rc" != 0 ]; then
    T=FAIL
    echo "    $label: FAILED (exit $rc); last log lines:"; tail -5 "$LOG" | sed 's/^/      /'
    return 1
  fi
  T=$(fsub "$e" "$s")
  echo "    $label: ${T}s  (daemon CPU $(fsub "$c1" "$c0")s; $NPEERS peers CPU $(fsub "$p1" "$p0")s; load $(loadavg))"
}

# ---------- peers ----------
BOOT=()    # --bootstrap flags for every peer
BOOT1=""   # the first peer's address (B's only --bootstrap)
start_peers() {
  local i home a
  for i in $(seq 1 "$NPEERS"); do
    home=$WORK/peer$i
    "$PD" --home "$home" init >>"$LOG" 2>&1 || { tail -5 "$LOG" >&2; die "peerdrive --home $home init failed"; }
    # The peers find each other through the first.
    "$PD" --home "$home" serve --listen /ip4/127.0.0.1/tcp/0 --contribute "$CONTRIBUTE" \
      ${BOOT1:+--bootstrap "$BOOT1"} >>"$WORK/peer$i.log" 2>&1 &
    PEERPIDS+=($!)
    a=""
    for _ in $(seq 1 300); do
      [ -s "$home/addrs" ] && a=$(grep -m1 '^/ip4/127\.0\.0\.1/tcp/' "$home/addrs" || true)
      [ -n "$a" ] && break
      kill -0 "${PEERPIDS[-1]}" 2>/dev/null || break
      sleep 0.1
    done
    [ -n "$a" ] || { tail -5 "$WORK/peer$i.log" >&2; die "peer $i did not write its address to $home/addrs within 30s"; }
    [ "${a##*/p2p/}" = "$("$PD" --home "$home" id)" ] || die "peer $i: address $a does not end in its 'peerdrive id'"
    [ -n "$BOOT1" ] || BOOT1=$a
    BOOT+=(--bootstrap "$a")
  done
}
stop_mount() { # DIR PID
  is_mounted "$1" && { umount "$1" 2>>"$LOG" || fusermount3 -u "$1" 2>>"$LOG" || true; }
  if ! wait_exit "$2" 300; then
    echo "bench: peerdrive daemon $2 still running 300s after umount; killing" >&2
    kill "$2" 2>/dev/null || true; wait_exit "$2" 10 || kill -9 "$2" 2>/dev/null || true
  fi
}

# ---------- setup ----------
echo "== setup (work dir $WORK)"
if [ -n "${PEERDRIVE_BIN:-}" ]; then PD=$PEERDRIVE_BIN; PD_LABEL="PEERDRIVE_BIN=$PD"; else
  PD=$WORK/bin/peerdrive
  (cd "$ROOT" && go build -o "$PD" ./cmd/peerdrive) || die "go build ./cmd/peerdrive failed"
  PD_LABEL="built from $ROOT at $(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown)"
fi
MKFILES=$WORK/bin/mkfiles
(cd "$ROOT" && go build -o "$MKFILES" ./bench/tools/mkfiles) || die "go build ./bench/tools/mkfiles failed"
head -c "$BIG_BYTES" /dev/urandom >"$SHM/big.bin"   # random: dedup and compression cannot help
mkdir -p "$MA" "$MB"
start_peers
"$PD" --home "$HA" init >>"$LOG" 2>&1 || { tail -5 "$LOG" >&2; die "peerdrive init (A) failed"; }
"$PD" --home "$HA" mount "$MA" --listen /ip4/127.0.0.1/tcp/0 "${BOOT[@]}" \
  --data-shards "$DATA" --parity-shards "$PARITY" --contribute "$CONTRIBUTE" >>"$WORK/a-mount.log" 2>&1 &
APID=$!
wait_mounted "$MA" 120 "$APID" || { tail -20 "$WORK/a-mount.log" >&2; die "A's mount did not appear within 120s"; }
for _ in $(seq 1 100); do   # let A see every peer before writing
  [ "$("$PD" --home "$HA" status --json 2>/dev/null | jq -r '.peers // 0')" -ge "$NPEERS" ] 2>/dev/null && break; sleep 0.2
done
echo "  peerdrive: $PD_LABEL"
echo "  $NPEERS peers (serve, --contribute $CONTRIBUTE) pids ${PEERPIDS[*]}; A's mount pid $APID (--data-shards $DATA --parity-shards $PARITY)"
echo "  data: $NFILES files of $FILE_SIZE B (bench/tools/mkfiles) + big.bin of $BIG_BYTES B = $TOTAL_MB MiB, $NTOTAL files"
LOAD_START=$(loadavg)
echo "  load average at start: $LOAD_START ($(nproc) cores; other busy processes skew the numbers)"
T_START=$(now)

# ---------- A: write, sync, warm read ----------
echo "== A writes and syncs"
T_AWRITE=FAIL T_ASYNC=FAIL
w_a() { "$MKFILES" -n "$NFILES" -size "$FILE_SIZE" "$MA/files" && cp "$SHM/big.bin" "$MA/big.bin"; }
timed "write $NTOTAL files, $TOTAL_MB MiB" "$APID" w_a && T_AWRITE=$T || die "writing on A failed"
timed "peerdrive sync" "$APID" "$PD" --home "$HA" sync -q --timeout 60m && T_ASYNC=$T || die "sync on A failed"
echo "      A after sync: $("$PD" --home "$HA" status --json 2>>"$LOG" | jq -c '{pending_upload_bytes, under_replicated_chunks, lost_chunks, inodes, used_bytes, cached_bytes, root_seq}' 2>/dev/null || echo 'status unavailable')"
N_A=$(count_files "$MA")
[ "$N_A" = "$NTOTAL" ] || die "A lists $N_A files, want $NTOTAL"
SUM_A=""
if [ "$VERIFY" = 1 ]; then SUM_A=$(checksum "$MA"); echo "    checksum of A's contents (untimed, also warms A): $SUM_A"; fi

echo "== A reads everything, warm cache (best of $RUNS)"
T_AREAD="" T_ASMALL="" T_ABIG=""
for r in $(seq 1 "$RUNS"); do
  read_small "$MA" >/dev/null 2>&1; read_big "$MA" >/dev/null 2>&1   # warm (untimed)
  timed "run $r: $NFILES small files" "$APID" read_small "$MA" || die "reading on A failed"; ts=$T
  timed "run $r: big.bin" "$APID" read_big "$MA" || die "reading on A failed"; tb=$T
  t=$(fadd "$ts" "$tb")
  if [ -z "$T_AREAD" ] || awk -v a="$T_AREAD" -v b="$t" 'BEGIN{exit !(b+0 < a+0)}'; then T_AREAD=$t T_ASMALL=$ts T_ABIG=$tb; fi
done
echo "    best: ${T_AREAD}s (small files ${T_ASMALL}s, big.bin ${T_ABIG}s)"

echo "== A is lost: umount, daemon exits"
s=$(now); stop_mount "$MA" "$APID"; APID=""
echo "    A stopped in $(fsub "$(now)" "$s")s"

# ---------- B: restore ----------
echo "== B: fresh home from A's recovery key, one --bootstrap ($BOOT1), page cache dropped"
"$PD" --home "$HB" init --from-key "$HA/recovery-key.txt" >>"$LOG" 2>&1 || { tail -5 "$LOG" >&2; die "peerdrive init --from-key failed"; }
drop_caches
T_BMOUNT=FAIL T_BTREE=FAIL T_BREAD=FAIL T_BSMALL=FAIL T_BBIG=FAIL
LOAD_B=$(loadavg)
s=$(now)
"$PD" --home "$HB" mount "$MB" --listen /ip4/127.0.0.1/tcp/0 --bootstrap "$BOOT1" \
  --data-shards "$DATA" --parity-shards "$PARITY" --contribute "$CONTRIBUTE" >>"$WORK/b-mount.log" 2>&1 &
BPID=$!
if wait_mounted "$MB" 300 "$BPID"; then
  T_BMOUNT=$(fsub "$(now)" "$s")
  n=0
  for _ in $(seq 1 600); do
    n=$(count_files "$MB")
    [ "$n" = "$NTOTAL" ] && { T_BTREE=$(fsub "$(now)" "$s"); break; }
    sleep 0.5
  done
  echo "    mount appeared after ${T_BMOUNT}s; all $NTOTAL files listed after ${T_BTREE}s (last count $n; load $LOAD_B at start)"
  sed -n 's/^peerdrive: //p' "$WORK/b-mount.log" | sed 's/^/      B: /' | grep -v 'tree piece [0-9]* of' || true
  if [ "$T_BTREE" != FAIL ]; then
    echo "== B reads everything, cold (contents from the peers)"
    drop_caches
    timed "$NFILES small files" "$BPID" read_small "$MB" && T_BSMALL=$T || true
    timed "big.bin" "$BPID" read_big "$MB" && T_BBIG=$T || true
    T_BREAD=$(fadd "$T_BSMALL" "$T_BBIG")
    echo "    total: ${T_BREAD}s"
    echo "      B after reading: $("$PD" --home "$HB" status --json 2>>"$LOG" | jq -c '{peers, cached_bytes, read_only_reason, root_seq}' 2>/dev/null || echo 'status unavailable')"
    if [ "$VERIFY" = 1 ] && [ "$T_BREAD" != FAIL ]; then
      SUM_B=$(checksum "$MB")
      if [ "$SUM_B" = "$SUM_A" ]; then echo "    verify: B's contents equal A's (cksum $SUM_B, untimed)"
      else echo "    verify: FAIL: B's contents differ from A's (cksum $SUM_B, A had $SUM_A)"; T_BREAD=FAIL; fi
    fi
  else
    echo "    B: FAIL: the tree did not become complete within 300s after the mount appeared"
  fi
  s2=$(now); stop_mount "$MB" "$BPID"; BPID=""
  echo "    B stopped in $(fsub "$(now)" "$s2")s"
else
  echo "    B: FAIL: the mount did not appear within 300s (or the daemon exited); B's log:"
  tail -20 "$WORK/b-mount.log" | sed 's/^/      /'
fi
T_END=$(now)

# ---------- report ----------
R_TREE=$(ratio "$T_BTREE" "$T_AREAD") R_MOUNT=$(ratio "$T_BMOUNT" "$T_AREAD") R_READ=$(ratio "$T_BREAD" "$T_AREAD")
echo
echo "== results: seconds; ratio = t / A's warm read (how many times A's warm read it takes)"
printf '%-44s %10s   %s\n' step seconds "ratio to A warm read"
printf '%-44s %10s   %s\n' "A: write $NTOTAL files, $TOTAL_MB MiB" "$T_AWRITE" "-"
printf '%-44s %10s   %s\n' "A: peerdrive sync after the write" "$T_ASYNC" "-"
printf '%-44s %10s   %s\n' "A: read everything, warm (best of $RUNS)" "$T_AREAD" "1.00x"
printf '%-44s %10s   %s\n' "B: mount started -> mount appears" "$T_BMOUNT" "${R_MOUNT}x"
printf '%-44s %10s   %s\n' "B: mount started -> all $NTOTAL files listed" "$T_BTREE" "${R_TREE}x"
printf '%-44s %10s   %s\n' "B: read everything, cold from peers" "$T_BREAD" "${R_READ}x"
printf '%-44s %10s   %s\n' "   of which $NFILES small files (A warm: ${T_ASMALL}s)" "$T_BSMALL" "$(ratio "$T_BSMALL" "$T_ASMALL")x of A's"
printf '%-44s %10s   %s\n' "   of which big.bin (A warm: ${T_ABIG}s)" "$T_BBIG" "$(ratio "$T_BBIG" "$T_ABIG")x of A's"
echo "throughput MiB/s: A warm read $(mbps "$T_AREAD"); B cold read $(mbps "$T_BREAD")"
echo "total benchmark time: $(fsub "$T_END" "$T_START")s (plus setup); load average at end: $(loadavg)"
echo
echo "RESULT workload=restore_a_warm_read a_s=$T_AREAD small_s=$T_ASMALL big_s=$T_ABIG files=$NTOTAL total_mb=$TOTAL_MB file_size=$FILE_SIZE"
echo "RESULT workload=restore_tree_visible b_mount_s=$T_BMOUNT b_tree_s=$T_BTREE vs_a_warm_read=$R_TREE mount_vs_a_warm_read=$R_MOUNT"
echo "RESULT workload=restore_b_cold_read b_s=$T_BREAD small_s=$T_BSMALL big_s=$T_BBIG vs_a_warm_read=$R_READ"
echo "RESULT workload=load loadavg_start=\"$LOAD_START\" loadavg_end=\"$(loadavg)\" cores=$(nproc)"
