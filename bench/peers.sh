#!/bin/bash
# PeerDrive benchmark with peers (issue 3): 6 local storage peers (`peerdrive serve`) and a
# mount with 4 data + 2 parity shards, against a plain directory on the same disk.
#   a. sequential write of BENCH_SIZE_MB MiB (dd bs=1M conv=fsync): mount vs plain
#   b. `peerdrive sync` right after that write: sync time / write time
#   c. cold sequential read from peers (mount restarted with --cache-size 8MiB, its cache
#      drained, page cache dropped) vs a cold read of the plain directory
#   d. CPU split of the mount's write path (and read path) from Go CPU profiles
#   e. the floors of a + b here: the disk's time for the bytes they make durable, and the CPU
#      of PeerDrive's primitives on them alone (bench/tools/floor)
# See bench/README.md. Run from anywhere as root: bench/peers.sh
# Ratios vs plain are t_plain / t_mount: 1.00x = as fast as the plain directory, 0.50x = twice as slow.
set -euo pipefail
export LC_ALL=C

ROOT=$(cd "$(dirname "$(readlink -f "$0")")/.." && pwd)

SIZE_MB=${BENCH_SIZE_MB:-1024}        # file written and read
NPEERS=${BENCH_PEERS:-6}              # storage peers
DATA=4 PARITY=2                       # --data-shards / --parity-shards
CONTRIBUTE=4GiB                       # --contribute of every node
COLD_CACHE=8MiB COLD_CACHE_BYTES=$((8 * 1048576))   # --cache-size of the restarted mount (c)
VERIFY=${BENCH_VERIFY:-1}             # compare the file read back with the source (untimed)
BASE=${BENCH_DIR:-/var/tmp}           # parent of the work dir; must be on the disk under test
GOAL_WRITE=0.4 GOAL_SYNC=3 GOAL_READ=0.3

die() { echo "bench: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "run as root (mounts, /proc/sys/vm/drop_caches)"
command -v fusermount3 >/dev/null || command -v fusermount >/dev/null || die "fuse3 (fusermount3) missing"
command -v jq >/dev/null || die "jq missing (apt-get install jq): it reads 'peerdrive status --json'"
command -v go >/dev/null || die "go missing: needed for the build and 'go tool pprof'"

WORK=$(mktemp -d "$BASE/peerdrive-peers.XXXXXX")
SHM=$(mktemp -d /dev/shm/peerdrive-peers.XXXXXX)   # tmpfs: the source survives drop_caches, never hits the disk
LOG=$WORK/bench.log
H=$WORK/mount-home M=$WORK/mnt P=$WORK/plain
PDPID="" PEERPIDS=()

cleanup() {
  set +e
  grep -q " $M fuse" /proc/mounts && { umount "$M" 2>/dev/null || fusermount3 -u "$M" 2>/dev/null || umount -l "$M"; }
  for p in $PDPID "${PEERPIDS[@]}"; do kill "$p" 2>/dev/null; done
  sleep 0.5
  for p in $PDPID "${PEERPIDS[@]}"; do kill -9 "$p" 2>/dev/null; done
  grep -q " $M fuse" /proc/mounts && umount -l "$M"
  [ -n "${NULLDIR:-}" ] && grep -q " $NULLDIR fuse" /proc/mounts && umount -l "$NULLDIR"
  rm -rf "$SHM"
  if [ -n "${BENCH_KEEP:-}" ]; then echo "bench: work dir kept: $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------- helpers ----------
now() { echo "$EPOCHREALTIME"; }
fsub() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.3f", a-b}'; }
fint() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.0f", a-b}'; }
# ratio NUM DEN -> NUM/DEN with 2 decimals, or NA
ratio() {
  case "$1$2" in *FAIL*|*NA*|"") echo NA; return;; esac
  awk -v a="$1" -v b="$2" 'BEGIN{ if (b+0 <= 0) print "NA"; else printf "%.2f", a/b }'
}
mbps() { case "$1" in FAIL|NA|"") echo NA;; *) awk -v s="$1" -v m="$SIZE_MB" 'BEGIN{printf "%.0f", m/s}';; esac; }
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }
is_mounted() { grep -q " $1 fuse" /proc/mounts; }
wait_mounted() { # DIR SECONDS
  local i
  for i in $(seq 1 $(($2 * 10))); do is_mounted "$1" && return 0; sleep 0.1; done
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
io_mib() { # PID... -> "read_MiB written_MiB" they caused at the block layer
  local p r=0 w=0 rr ww
  for p in "$@"; do
    [ -n "$p" ] && [ -r "/proc/$p/io" ] || continue
    read -r rr ww < <(awk '/^read_bytes:/{r=$2} /^write_bytes:/{w=$2} END{printf "%.0f %.0f\n", r, w}' "/proc/$p/io")
    r=$((r + rr)) w=$((w + ww))
  done
  awk -v r="$r" -v w="$w" 'BEGIN{printf "%.0f %.0f\n", r/1048576, w/1048576}'
}
drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }
pd_status() { "$PD" --home "$H" status --json 2>>"$LOG"; }   # JSON, or nothing if the daemon does not answer

# timed LABEL CMD... -> runs CMD (output to the log), sets T (seconds, or FAIL) and prints a line
# with the CPU time and disk I/O of the mount daemon and of all peers over the same interval.
T="" CPU_MOUNT="" CPU_PEERS=""   # timed sets them: seconds, and CPU seconds of the mount daemon and of all peers
timed() {
  local label=$1 c0 c1 p0 p1 r0 w0 r1 w1 pr0 pw0 pr1 pw1 s e rc=0
  shift
  c0=$(cpu_s "$PDPID"); p0=$(cpu_s "${PEERPIDS[@]}")
  read -r r0 w0 < <(io_mib "$PDPID"); read -r pr0 pw0 < <(io_mib "${PEERPIDS[@]}")
  s=$(now)
  "$@" >>"$LOG" 2>&1 || rc=$?
  e=$(now)
  c1=$(cpu_s "$PDPID"); p1=$(cpu_s "${PEERPIDS[@]}")
  read -r r1 w1 < <(io_mib "$PDPID"); read -r pr1 pw1 < <(io_mib "${PEERPIDS[@]}")
  if [ "$rc" != 0 ]; then
    T=FAIL
    echo "    $label: FAILED (exit $rc); last log lines:"; tail -5 "$LOG" | sed 's/^/      /'
    return 1
  fi
  T=$(fsub "$e" "$s")
  CPU_MOUNT=$(fsub "$c1" "$c0") CPU_PEERS=$(fsub "$p1" "$p0")
  if [ -n "$PDPID" ]; then
    echo "    $label: ${T}s  (mount daemon CPU $(fsub "$c1" "$c0")s, disk read $(fint "$r1" "$r0") / written $(fint "$w1" "$w0") MiB;" \
      "$NPEERS peers CPU $(fsub "$p1" "$p0")s, disk read $(fint "$pr1" "$pr0") / written $(fint "$pw1" "$pw0") MiB; load $(loadavg))"
  else
    echo "    $label: ${T}s  (load $(loadavg))"
  fi
}

# ---------- peers and mount ----------
BOOT=()   # --bootstrap flags for every peer
start_peers() {
  local i home a first=""
  for i in $(seq 1 "$NPEERS"); do
    home=$WORK/peer$i
    "$PD" --home "$home" init >>"$LOG" 2>&1 || { tail -5 "$LOG" >&2; die "peerdrive --home $home init failed"; }
    # The peers find each other through the first; the mount bootstraps from all of them.
    # --ledger-allowance: the peers take the mount's whole write before they
    # have measured what it gives back; the benchmark times the data path, not
    # the fair-exchange probes (issue 5), which the default 64 MiB would start.
    "$PD" --home "$home" serve --listen /ip4/127.0.0.1/tcp/0 --contribute "$CONTRIBUTE" --ledger-allowance "$CONTRIBUTE" \
      ${first:+--bootstrap "$first"} >>"$WORK/peer$i.log" 2>&1 &
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
    [ -n "$first" ] || first=$a
    BOOT+=(--bootstrap "$a")
  done
}
# pd_start [ENV=VAL...] -- [MOUNT FLAGS...]: mount $H on $M with all peers; wait for the mount
pd_start() {
  local env=()
  while [ "$1" != -- ]; do env+=("$1"); shift; done
  shift
  mkdir -p "$M"
  env "${env[@]}" "$PD" --home "$H" mount "$M" --listen /ip4/127.0.0.1/tcp/0 "${BOOT[@]}" \
    --data-shards "$DATA" --parity-shards "$PARITY" --contribute "$CONTRIBUTE" "$@" >>"$WORK/mount.log" 2>&1 &
  PDPID=$!
  if ! wait_mounted "$M" 120; then
    echo "bench: the PeerDrive mount did not appear within 120s; daemon log:" >&2
    tail -20 "$WORK/mount.log" >&2
    return 1
  fi
}
# pd_stop: umount; the daemon flushes, stops its CPU profile and exits
pd_stop() {
  [ -n "$PDPID" ] || return 0
  is_mounted "$M" && { umount "$M" 2>>"$LOG" || fusermount3 -u "$M" 2>>"$LOG" || true; }
  if ! wait_exit "$PDPID" 300; then
    echo "bench: peerdrive mount daemon $PDPID still running 300s after umount; killing (its CPU profile is lost)" >&2
    kill "$PDPID" 2>/dev/null || true; wait_exit "$PDPID" 10 || kill -9 "$PDPID" 2>/dev/null || true
  fi
  PDPID=""
}

# ---------- CPU profile split ----------
# Categories in precedence order: a sample counts for the first category with a matching
# frame anywhere on its stack (pprof -focus), all earlier categories' frames excluded
# (-ignore), so the shares are disjoint. Network comes first because the transport's own
# encryption (noise uses ChaCha20-Poly1305) and its socket writes are network cost; FUSE
# comes last, so it is what go-fuse costs by itself (reading /dev/fuse, decoding, replying),
# not the file-system work it calls.
CATS=(network hashing encryption erasure store fuse gc)
declare -A CAT_RE=(
  [network]='go-libp2p|go-yamux|flynn/noise|crypto/tls|quic-go|go-multistream|go-msgio|peerdrive/net\.'
  [hashing]='zeebo/blake3'
  [encryption]='chacha20poly1305|x/crypto/chacha20|x/crypto/internal/poly1305|peerdrive/crypto\.'
  [erasure]='klauspost/reedsolomon'
  [store]='dgraph-io/badger|dgraph-io/ristretto|peerdrive/store\.'
  [fuse]='hanwen/go-fuse'
  [gc]='runtime\.gcBgMarkWorker|runtime\.bgsweep|runtime\.bgscavenge'
)
declare -A CAT_LABEL=(
  [network]="network send/receive (libp2p, yamux, noise/TLS, sockets)"
  [hashing]="hashing (blake3)"
  [encryption]="encryption (chunk envelopes: XAES-256-GCM, or XChaCha20-Poly1305 without AES instructions)"
  [erasure]="erasure coding (reedsolomon)"
  [store]="store (badger, pack files, their syscalls)"
  [fuse]="FUSE (go-fuse, /dev/fuse reads and replies)"
  [gc]="GC background workers"
)
declare -A SPLIT=()   # SPLIT[phase/category] = percent of all samples
# prof_split PHASE PROFILE: print the split, fill SPLIT
prof_split() {
  local phase=$1 prof=$2 c ign="" pct sum=0 hdr
  if [ ! -s "$prof" ]; then echo "  no CPU profile for $phase ($prof missing or empty)"; return 1; fi
  hdr=$(go tool pprof -top -nodecount=1 "$PD" "$prof" 2>/dev/null | grep -m1 '^Duration:' || true)
  echo "  $phase profile: ${hdr:-unreadable}   (shares: % of all CPU samples of the mount daemon's run)"
  for c in "${CATS[@]}"; do
    # "Showing nodes accounting for 1.23s, 4.56% of 27s total": with -nodefraction=0 every
    # node of the focused samples is shown, so the % is the category's share of all samples.
    pct=$(go tool pprof -top -nodefraction=0 -nodecount=1000000 -focus="${CAT_RE[$c]}" ${ign:+-ignore="$ign"} "$PD" "$prof" 2>/dev/null |
      awk '/^Showing nodes accounting for/{for(i=1;i<=NF;i++) if ($i ~ /%$/) {sub(/%/,"",$i); print $i; exit}}')
    pct=${pct:-0}
    SPLIT[$phase/$c]=$pct
    sum=$(awk -v a="$sum" -v b="$pct" 'BEGIN{printf "%.2f", a+b}')
    printf '    %-60s %6.2f%%\n' "${CAT_LABEL[$c]}" "$pct"
    ign=${ign:+$ign|}${CAT_RE[$c]}
  done
  SPLIT[$phase/other]=$(awk -v s="$sum" 'BEGIN{v=100-s; if (v<0) v=0; printf "%.2f", v}')
  printf '    %-60s %6.2f%%\n' "other (runtime scheduler, allocation, copies, peerdrive's own code)" "${SPLIT[$phase/other]}"
  echo "    'other' by function (flat, the samples no category took):"
  go tool pprof -top -nodecount=6 -ignore="$ign" "$PD" "$prof" 2>/dev/null | awk '/flat%/{p=1;next} p' | sed 's/^/      /'
  echo "    top 12 functions by flat CPU, all samples (go tool pprof -top):"
  go tool pprof -top -nodecount=12 "$PD" "$prof" 2>/dev/null | awk '/flat%/{p=1} p' | sed 's/^/      /'
}

# ---------- setup ----------
echo "== setup (work dir $WORK, source in $SHM)"
if [ -n "${PEERDRIVE_BIN:-}" ]; then PD=$PEERDRIVE_BIN; PD_LABEL="PEERDRIVE_BIN=$PD"; else
  PD=$WORK/bin/peerdrive
  (cd "$ROOT" && go build -o "$PD" ./cmd/peerdrive) || die "go build ./cmd/peerdrive failed"
  PD_LABEL="built from $ROOT at $(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown)"
fi
head -c $((SIZE_MB * 1048576)) /dev/urandom >"$SHM/src.bin"   # random: dedup and compression cannot help
mkdir -p "$P" "$M"
start_peers
"$PD" --home "$H" init >>"$LOG" 2>&1 || { tail -5 "$LOG" >&2; die "peerdrive init (mount home) failed"; }
pd_start PEERDRIVE_CPUPROFILE="$WORK/write.pprof" -- || die "PeerDrive mount failed (log above)"
for _ in $(seq 1 100); do   # let the mount see every peer before timing anything
  [ "$(pd_status | jq -r '.peers // 0')" -ge "$NPEERS" ] 2>/dev/null && break; sleep 0.2
done
echo "  peerdrive: $PD_LABEL"
echo "  $NPEERS peers (serve, --contribute $CONTRIBUTE) pids ${PEERPIDS[*]}; mount pid $PDPID with --data-shards $DATA --parity-shards $PARITY, sees $(pd_status | jq -r '.peers // "?"') peers"
echo "  source: ${SIZE_MB} MiB random in tmpfs"
LOAD_START=$(loadavg)
echo "  load average at start: $LOAD_START ($(nproc) cores; other busy processes skew the numbers)"
T_START=$(now)

# ---------- a + b: write, then sync ----------
# The plain directory goes first, so the mount's background upload does not compete with it.
echo "== a. sequential write ${SIZE_MB} MiB (dd bs=1M conv=fsync); b. 'peerdrive sync' right after"
drop_caches
T_WRITE_PLAIN=FAIL T_WRITE=FAIL T_SYNC=FAIL
timed "plain write" dd if="$SHM/src.bin" of="$P/seq.bin" bs=1M conv=fsync status=none && T_WRITE_PLAIN=$T || true
sync
CPU_MOUNT="" CPU_PEERS=""
timed "mount write" dd if="$SHM/src.bin" of="$M/seq.bin" bs=1M conv=fsync status=none && T_WRITE=$T || true
CPU_W_MOUNT=${CPU_MOUNT:-NA} CPU_W_PEERS=${CPU_PEERS:-NA}
PENDING=$(pd_status | jq -r '.pending_upload_bytes // "NA"')
echo "      pending upload when dd returned: $(awk -v b="$PENDING" 'BEGIN{if (b=="NA") print "NA"; else printf "%.0f MiB", b/1048576}')"
CPU_MOUNT="" CPU_PEERS=""
timed "sync after the write" "$PD" --home "$H" sync -q --timeout 60m && T_SYNC=$T || true
CPU_S_MOUNT=${CPU_MOUNT:-NA} CPU_S_PEERS=${CPU_PEERS:-NA}
pd_status >"$WORK/status-after-sync.json" || true
echo "      after sync: $(jq -c '{pending_upload_bytes, under_replicated_chunks, lost_chunks, chunks, stored_bytes, cached_bytes, peers}' "$WORK/status-after-sync.json" 2>/dev/null || echo 'status unavailable')"
pd_stop

# ---------- c: cold read from peers ----------
echo "== c. cold sequential read ${SIZE_MB} MiB (dd bs=1M): mount restarted with --cache-size $COLD_CACHE, cache drained, page cache dropped"
T_READ=FAIL T_READ_PLAIN=FAIL CACHED=NA CPU_R_MOUNT=NA CPU_R_PEERS=NA
if pd_start PEERDRIVE_CPUPROFILE="$WORK/read.pprof" -- --cache-size "$COLD_CACHE"; then
  s=$(now)
  for _ in $(seq 1 600); do
    CACHED=$(pd_status | jq -r '.cached_bytes // "NA"')
    [ "$CACHED" != NA ] && [ "$CACHED" -le "$COLD_CACHE_BYTES" ] && break
    sleep 0.5
  done
  echo "    cached_bytes $CACHED after $(fsub "$(now)" "$s")s of waiting (limit $COLD_CACHE_BYTES)"
  if [ "$CACHED" != NA ] && [ "$CACHED" -le "$COLD_CACHE_BYTES" ]; then
    drop_caches
    CPU_MOUNT="" CPU_PEERS=""
    timed "mount cold read" dd if="$M/seq.bin" of=/dev/null bs=1M status=none && T_READ=$T || true
    CPU_R_MOUNT=${CPU_MOUNT:-NA} CPU_R_PEERS=${CPU_PEERS:-NA}
  else
    echo "    mount cold read: FAIL (the cache did not drain to $COLD_CACHE within 300s: cached_bytes=$CACHED)"
  fi
  if [ "$VERIFY" = 1 ] && [ "$T_READ" != FAIL ]; then
    if cmp -s "$SHM/src.bin" "$M/seq.bin"; then echo "    verify: the mount's file equals the source (cmp, untimed)"
    else echo "    verify: FAIL: the mount's file differs from the source"; T_READ=FAIL; fi
  fi
  pd_stop
else
  echo "    mount cold read: FAIL (the mount did not come back)"
  PDPID=""
fi
drop_caches
timed "plain cold read" dd if="$P/seq.bin" of=/dev/null bs=1M status=none && T_READ_PLAIN=$T || true

# ---------- e: the floors of write+sync on this machine ----------
# What any implementation of a + b must spend here: the disk's time for the bytes a write+sync
# makes durable (the file in the local cache, (k+m)/k of it on the peers, all on this one disk),
# written by dd in parallel with nothing else to do; and the CPU of PeerDrive's own primitives
# on those bytes, one after the other in one process (bench/tools/floor).
echo "== e. floors of a + b on this machine: the disk alone, and PeerDrive's primitives alone"
SHARD_MB=$(( (SIZE_MB * (DATA + PARITY) + DATA * NPEERS - 1) / (DATA * NPEERS) ))
FL=$WORK/floor
mkdir -p "$FL"
io_floor() { # the file and NPEERS shard files of SHARD_MB MiB, all with dd conv=fsync at once
  local pids=() p rc=0 i
  dd if="$SHM/src.bin" of="$FL/local.bin" bs=1M conv=fsync status=none & pids+=($!)
  for i in $(seq 1 "$NPEERS"); do
    dd if="$SHM/src.bin" of="$FL/peer$i.bin" bs=1M count="$SHARD_MB" conv=fsync status=none & pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p" || rc=1; done
  return $rc
}
T_PLAIN_E=FAIL T_IO_FLOOR=FAIL FLOOR_CPU=NA FLOOR_WALL=NA
drop_caches
timed "plain write again (the floors' reference)" dd if="$SHM/src.bin" of="$FL/plain.bin" bs=1M conv=fsync status=none && T_PLAIN_E=$T || true
rm -f "$FL/plain.bin"; drop_caches
timed "disk floor: ${SIZE_MB} MiB + $NPEERS x ${SHARD_MB} MiB by dd at once" io_floor && T_IO_FLOOR=$T || true
rm -f "$FL"/*.bin; sync
if (cd "$ROOT" && go build -o "$WORK/bin/floor" ./bench/tools/floor) >>"$LOG" 2>&1 \
  && "$WORK/bin/floor" -size "$SIZE_MB" -k "$DATA" -m "$PARITY" -dir "$FL" >"$WORK/floor.out" 2>>"$LOG"; then
  sed '/^RESULT/d; s/^/    /' "$WORK/floor.out"
  FLOOR_CPU=$(sed -n 's/^RESULT .* cpu_s=\([0-9.]*\).*/\1/p' "$WORK/floor.out")
else
  echo "    bench/tools/floor failed; see $LOG"
fi
# FUSE's part, which the floor tool leaves out: dd of the file into bench/tools/nullfs (go-fuse
# with PeerDrive's write options, keeping nothing); the CPU of dd and of the nullfs daemon.
FUSE_CPU=NA
NULLDIR=$WORK/null
if (cd "$ROOT" && go build -o "$WORK/bin/nullfs" ./bench/tools/nullfs) >>"$LOG" 2>&1; then
  mkdir -p "$NULLDIR"
  "$WORK/bin/nullfs" "$NULLDIR" >>"$LOG" 2>&1 &
  NULLPID=$!
  if wait_mounted "$NULLDIR" 30; then
    n0=$(cpu_s "$NULLPID")
    if ddcpu=$( { TIMEFORMAT='%3U %3S'; time dd if="$SHM/src.bin" of="$NULLDIR/f" bs=1M conv=fsync status=none 2>>"$LOG"; } 2>&1 | awk '{printf "%.3f", $1+$2}'); then
      FUSE_CPU=$(awk -v a="$(fsub "$(cpu_s "$NULLPID")" "$n0")" -v b="$ddcpu" 'BEGIN{printf "%.3f", a+b}')
      echo "    FUSE alone (dd into bench/tools/nullfs): $FUSE_CPU CPU-s, dd and the daemon"
    else
      echo "    dd into bench/tools/nullfs failed; see $LOG"
    fi
    umount "$NULLDIR" 2>>"$LOG" || umount -l "$NULLDIR"
  else
    echo "    bench/tools/nullfs did not mount; see $LOG"
  fi
  wait_exit "$NULLPID" 10 || kill -9 "$NULLPID" 2>/dev/null || true
fi
# Both CPU floors spread over every core with no loss (FUSE's counts 0 if its dd failed).
[ "$FLOOR_CPU" != NA ] && FLOOR_WALL=$(awk -v a="$FLOOR_CPU" -v b="$FUSE_CPU" -v n="$(nproc)" 'BEGIN{printf "%.3f", (a+(b=="NA"?0:b))/n}')
T_END=$(now)

# ---------- d: CPU split ----------
echo "== d. where the mount daemon's CPU goes"
prof_split write "$WORK/write.pprof" || true
prof_split read "$WORK/read.pprof" || true

# ---------- report ----------
R_WRITE=$(ratio "$T_WRITE_PLAIN" "$T_WRITE")
R_SYNC=$(ratio "$T_SYNC" "$T_WRITE")
R_READ=$(ratio "$T_READ_PLAIN" "$T_READ")
echo
echo "== results: seconds; vs plain = t_plain / t_mount (1.00x = as fast as plain)"
printf '%-34s %10s %10s   %s\n' workload mount plain ratio
printf '%-34s %10s %10s   %s\n' "a. seq write ${SIZE_MB} MiB" "$T_WRITE" "$T_WRITE_PLAIN" "${R_WRITE}x speed of plain"
printf '%-34s %10s %10s   %s\n' "b. sync right after the write" "$T_SYNC" "-" "${R_SYNC}x the write time"
printf '%-34s %10s %10s   %s\n' "c. cold seq read from peers" "$T_READ" "$T_READ_PLAIN" "${R_READ}x speed of plain"
echo "throughput MiB/s: write mount $(mbps "$T_WRITE") plain $(mbps "$T_WRITE_PLAIN"); write+sync mount $(mbps "$(awk -v a="$T_WRITE" -v b="$T_SYNC" 'BEGIN{if (a=="FAIL"||b=="FAIL") print "NA"; else print a+b}')");" \
  "cold read mount $(mbps "$T_READ") plain $(mbps "$T_READ_PLAIN")"
echo "total benchmark time: $(fsub "$T_END" "$T_START")s (plus setup); load average at end: $(loadavg)"
# CPU seconds per GiB moved: robust on a noisy machine, where wall-clock ratios are not.
perg() { case "$1$2" in *NA*|*FAIL*) echo NA;; *) awk -v a="$1" -v b="${2:-0}" -v m="$SIZE_MB" 'BEGIN{printf "%.2f", (a+b)*1024/m}';; esac; }
CPG_W_MOUNT=$(perg "$CPU_W_MOUNT" "$CPU_S_MOUNT") CPG_W_PEERS=$(perg "$CPU_W_PEERS" "$CPU_S_PEERS")
CPG_R_MOUNT=$(perg "$CPU_R_MOUNT" 0) CPG_R_PEERS=$(perg "$CPU_R_PEERS" 0)
echo "CPU seconds per GiB: write+sync mount $CPG_W_MOUNT, $NPEERS peers $CPG_W_PEERS; cold read mount $CPG_R_MOUNT, $NPEERS peers $CPG_R_PEERS"
T_WS=$(awk -v a="$T_WRITE" -v b="$T_SYNC" 'BEGIN{if (a=="FAIL"||b=="FAIL") print "FAIL"; else printf "%.3f", a+b}')
R_WS=$(ratio "$T_WRITE_PLAIN" "$T_WS")
R_IO_CEIL=$(ratio "$T_PLAIN_E" "$T_IO_FLOOR")
R_CPU_CEIL=$(ratio "$T_PLAIN_E" "$FLOOR_WALL")
echo "write+sync: ${T_WS}s = ${R_WS}x plain's write (a.); its ceilings here, against plain's ${T_PLAIN_E}s in e.:" \
  "${R_IO_CEIL}x from the disk alone, ${R_CPU_CEIL}x from the CPU of PeerDrive's primitives and FUSE alone (${FLOOR_CPU} + ${FUSE_CPU} CPU-s on $(nproc) cores with no loss)"

echo
echo "== goals (issue 3): write >= ${GOAL_WRITE}x plain; sync <= ${GOAL_SYNC}x the write time; cold read >= ${GOAL_READ}x plain"
goal() { # NAME VALUE OP LIMIT
  if [ "$(awk -v v="$2" -v l="$4" -v op="$3" 'BEGIN{ if (v=="NA") print 0; else if (op==">=") print (v>=l); else print (v<=l) }')" = 1 ]
  then echo "GOAL $1: PASS (${2}x)"; else echo "GOAL $1: FAIL (${2}x)"; fi
}
goal "write_vs_plain>=$GOAL_WRITE" "$R_WRITE" '>=' "$GOAL_WRITE"
goal "sync_over_write<=$GOAL_SYNC" "$R_SYNC" '<=' "$GOAL_SYNC"
goal "cold_read_vs_plain>=$GOAL_READ" "$R_READ" '>=' "$GOAL_READ"

echo
echo "RESULT workload=peers_seq_write mount_s=$T_WRITE plain_s=$T_WRITE_PLAIN vs_plain=$R_WRITE goal=$GOAL_WRITE size_mb=$SIZE_MB peers=$NPEERS k=$DATA m=$PARITY"
echo "RESULT workload=peers_sync sync_s=$T_SYNC write_s=$T_WRITE sync_over_write=$R_SYNC goal=$GOAL_SYNC pending_at_write_end_bytes=$PENDING"
echo "RESULT workload=peers_cold_read mount_s=$T_READ plain_s=$T_READ_PLAIN vs_plain=$R_READ goal=$GOAL_READ cache_size=$COLD_CACHE"
for ph in write read; do
  line="RESULT workload=cpu_split_$ph"
  for c in "${CATS[@]}" other; do line+=" ${c}_pct=${SPLIT[$ph/$c]:-NA}"; done
  echo "$line"
done
echo "RESULT workload=peers_write_sync_floor write_sync_s=$T_WS plain_s=$T_WRITE_PLAIN vs_plain=$R_WS plain_again_s=$T_PLAIN_E disk_floor_s=$T_IO_FLOOR cpu_floor_cpu_s=$FLOOR_CPU fuse_cpu_s=$FUSE_CPU cpu_floor_wall_s=$FLOOR_WALL ceiling_disk=$R_IO_CEIL ceiling_cpu=$R_CPU_CEIL"
echo "RESULT workload=cpu_per_gib write_sync_mount_s=$CPG_W_MOUNT write_sync_peers_s=$CPG_W_PEERS cold_read_mount_s=$CPG_R_MOUNT cold_read_peers_s=$CPG_R_PEERS"
echo "RESULT workload=load loadavg_start=\"$LOAD_START\" loadavg_end=\"$(loadavg)\" cores=$(nproc)"
