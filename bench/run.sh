#!/bin/bash
# PeerDrive benchmark: the PeerDrive mount vs gocryptfs vs a plain directory, same disk, same run.
# See bench/README.md. Run from anywhere as root: bench/run.sh
# Ratios are t_other / t_mount: above 1.00x the mount is faster, below 1.00x it is slower.
set -euo pipefail
export LC_ALL=C

ROOT=$(cd "$(dirname "$(readlink -f "$0")")/.." && pwd)

SIZE_MB=${BENCH_SIZE_MB:-1024}        # sequential file size (workloads 1-3, 7)
RUNS=${BENCH_RUNS:-3}                 # best of RUNS for the sequential workloads 1-3
RUNS_META=${BENCH_RUNS_META:-3}       # best of RUNS_META for the metadata workloads 4-6
NFILES=${BENCH_FILES:-10000}          # workload 4: number of files...
FILE_SIZE=${BENCH_FILE_SIZE:-4096}    # ...and bytes per file
TAR_FILES=${BENCH_TAR_FILES:-5000}    # workload 5: files in the tarball
BASE=${BENCH_DIR:-/var/tmp}           # parent of the work dir; must be on the disk under test
RSS_GOAL_MIB=300

die() { echo "bench: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "run as root (mounts, /proc/sys/vm/drop_caches, /proc/PID/clear_refs)"
command -v gocryptfs >/dev/null || apt-get install -y gocryptfs >/dev/null 2>&1 || die "gocryptfs missing and not installable"
for t in fio sqlite3; do command -v $t >/dev/null || apt-get install -y $t >/dev/null 2>&1 || die "$t missing and not installable"; done
command -v fusermount3 >/dev/null || command -v fusermount >/dev/null || die "fuse3 (fusermount3) missing"

WORK=$(mktemp -d "$BASE/peerdrive-bench.XXXXXX")
SHM=$(mktemp -d /dev/shm/peerdrive-bench.XXXXXX)   # tmpfs: sources survive drop_caches, never hit the disk
LOG=$WORK/bench.log
OBS=$WORK/observations.txt
H=$WORK/pd-home M=$WORK/pd-mnt G=$WORK/gc-mnt C=$WORK/gc-cipher P=$WORK/plain
PDPID="" GCPID=""
: >"$OBS"

cleanup() {
  set +e
  for d in "$M" "$G"; do
    grep -q " $d fuse" /proc/mounts && { umount "$d" 2>/dev/null || fusermount3 -u "$d" 2>/dev/null || umount -l "$d"; }
  done
  for p in $PDPID $GCPID; do kill "$p" 2>/dev/null; done
  sleep 0.5
  for p in $PDPID $GCPID; do kill -9 "$p" 2>/dev/null; done
  for d in "$M" "$G"; do grep -q " $d fuse" /proc/mounts && umount -l "$d"; done
  rm -rf "$SHM"
  if [ -n "${BENCH_KEEP:-}" ]; then echo "bench: work dir kept: $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------- helpers ----------
now() { echo "$EPOCHREALTIME"; }
fsub() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.3f", a-b}'; }
fint() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.0f", a-b}'; }
fmin() { awk -v a="$1" -v b="$2" 'BEGIN{print (a=="" || b<a) ? b : a}'; }
fmax() { awk -v a="$1" -v b="$2" 'BEGIN{print (a=="" || b>a) ? b : a}'; }
# ratio NUM DEN -> NUM/DEN with 2 decimals, or NA
ratio() {
  case "$1$2" in *FAIL*|*NA*|"") echo NA; return;; esac
  awk -v a="$1" -v b="$2" 'BEGIN{ if (b+0 <= 0) print "NA"; else printf "%.2f", a/b }'
}
mbps() { case "$1" in FAIL|NA|"") echo NA;; *) awk -v s="$1" -v m="$SIZE_MB" 'BEGIN{printf "%.0f", m/s}';; esac; }
obs() { echo "$*" | tee -a "$OBS"; }
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
cpu_s() { # PID -> user+system CPU seconds so far (0 if gone)
  local f
  [ -n "$1" ] && [ -r "/proc/$1/stat" ] || { echo 0; return; }
  f=$(sed 's/.*) //' "/proc/$1/stat")
  awk -v t="$CLK_TCK" '{printf "%.2f", ($12+$13)/t}' <<<"$f"
}
io_mib() { # PID -> "read_MiB written_MiB" the process caused at the block layer (0 0 if gone)
  [ -n "$1" ] && [ -r "/proc/$1/io" ] || { echo "0 0"; return; }
  awk '/^read_bytes:/{r=$2} /^write_bytes:/{w=$2} END{printf "%.1f %.1f\n", r/1048576, w/1048576}' "/proc/$1/io"
}
hwm_mib() { awk '/^VmHWM:/{printf "%.0f", $2/1024}' "/proc/$1/status"; }
rss_mib() { awk '/^VmRSS:/{printf "%.0f", $2/1024}' "/proc/$1/status"; }
reset_hwm() { echo 5 >"/proc/$1/clear_refs" 2>/dev/null || true; }   # resets VmHWM to the current RSS
drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }

# ---------- targets ----------
TARGETS=(mount gocryptfs plain)
declare -A DIR=([mount]=$M [gocryptfs]=$G [plain]=$P)
declare -A BROKEN=()

pd_start() {
  mkdir -p "$M"
  "$PD" --home "$H" mount "$M" --listen /ip4/127.0.0.1/tcp/0 >>"$WORK/peerdrive.log" 2>&1 &
  PDPID=$!
  if ! wait_mounted "$M" 60; then
    echo "bench: PeerDrive mount did not appear within 60s; daemon log:" >&2
    tail -20 "$WORK/peerdrive.log" >&2
    BROKEN[mount]="mount did not appear (see log above)"
    return 1
  fi
}
pd_stop() {
  [ -n "$PDPID" ] || return 0
  is_mounted "$M" && { umount "$M" 2>>"$LOG" || fusermount3 -u "$M" 2>>"$LOG" || true; }
  if ! wait_exit "$PDPID" 300; then
    echo "bench: peerdrive daemon $PDPID still running 300s after umount; killing" >&2
    kill "$PDPID" 2>/dev/null || true; wait_exit "$PDPID" 10 || kill -9 "$PDPID" 2>/dev/null || true
  fi
  PDPID=""
}
gc_start() {
  mkdir -p "$G"
  gocryptfs -fg -q -passfile "$WORK/gc-pw" "$C" "$G" >>"$WORK/gocryptfs.log" 2>&1 &
  GCPID=$!
  wait_mounted "$G" 30 || { tail -5 "$WORK/gocryptfs.log" >&2; BROKEN[gocryptfs]="mount did not appear"; return 1; }
}
gc_stop() {
  [ -n "$GCPID" ] || return 0
  is_mounted "$G" && { fusermount3 -u "$G" 2>>"$LOG" || umount "$G" 2>>"$LOG" || true; }
  wait_exit "$GCPID" 60 || { kill "$GCPID" 2>/dev/null; wait_exit "$GCPID" 10 || true; }
  GCPID=""
}
# Cold state for every target: unmount both FUSE targets (the PeerDrive daemon exits after
# flushing), drop the page cache (this is also the plain directory's "remount"), mount again.
remount_all() {
  pd_stop; gc_stop
  drop_caches
  [ -n "${BROKEN[mount]:-}" ] || pd_start || true
  [ -n "${BROKEN[gocryptfs]:-}" ] || gc_start || true
}
# rotated RUN: the targets, rotated by RUN-1, so no target always goes first or last in a run
rotated() { local i n=${#TARGETS[@]}; for i in $(seq 0 $((n - 1))); do echo "${TARGETS[$(((i + $1 - 1) % n))]}"; done; }
daemon_pid() { case "$1" in mount) echo "$PDPID";; gocryptfs) echo "$GCPID";; *) echo "";; esac; }

# timeit TARGET WORKLOAD-FN -> sets T (seconds) and prints a progress line with daemon CPU use.
# Returns 1 (T=FAIL) if the workload failed.
T=""
timeit() {
  local tg=$1 fn=$2 pid c0 c1 r0 r1 w0 w1 s e rc=0
  pid=$(daemon_pid "$tg"); c0=$(cpu_s "$pid"); read -r r0 w0 < <(io_mib "$pid")
  s=$(now)
  "$fn" "${DIR[$tg]}" >>"$LOG" 2>&1 || rc=$?
  e=$(now)
  c1=$(cpu_s "$pid"); read -r r1 w1 < <(io_mib "$pid")
  if [ "$rc" != 0 ]; then
    T=FAIL
    echo "    $tg: FAILED (exit $rc); last log lines:"; tail -3 "$LOG" | sed 's/^/      /'
    return 1
  fi
  T=$(fsub "$e" "$s")
  if [ -n "$pid" ]; then
    obs "    $tg: ${T}s  (daemon CPU $(fsub "$c1" "$c0")s = $(awk -v c="$(fsub "$c1" "$c0")" -v t="$T" 'BEGIN{printf "%.0f", 100*c/t}')% of one core; daemon disk I/O read $(fint "$r1" "$r0") MiB, written $(fint "$w1" "$w0") MiB)"
  else
    echo "    $tg: ${T}s"
  fi
}

# ---------- workloads (each gets the target directory) ----------
w_write()     { rm -f "$1/seq.bin"; sync; dd if="$SHM/src.bin" of="$1/seq.bin" bs=1M conv=fsync status=none; }
w_read()      { dd if="$1/seq.bin" of=/dev/null bs=1M status=none; }
w_mkfiles()   { "$MKFILES" -n "$NFILES" -size "$FILE_SIZE" "$1/files"; }
w_tar()       { mkdir "$1/tree" && tar -xf "$SHM/src.tar" -C "$1/tree"; }
w_ls()        { ls -lR "$1/tree" >/dev/null; }
# 8: random 4 KiB reads and writes (half each) over a 64 MiB file, fsync every 32 writes:
# a database's or a VM image's access pattern. The file is laid out untimed.
FIO_ARGS=(--name=rand --filename=rand.bin --size=64M --bs=4k --rw=randrw --fsync=32 --ioengine=psync --randrepeat=1 --randseed=42)
w_randrw()    { (cd "$1" && fio "${FIO_ARGS[@]}" --io_size="${BENCH_RAND_MB:-16}M" --output=/dev/null); }
# 10: random 4 KiB reads and writes (nine reads to a write) over a 512 MiB file, eight times the
# mount's default chunk cache, no fsync: a large database's or VM image's working set, where
# every read that misses the cache costs the mount a whole 1 MiB chunk (read, hashed, decrypted).
FIO_LARGE=(--name=large --filename=large.bin --size=512M --bs=4k --rw=randrw --rwmixread=90 --ioengine=psync --randrepeat=1 --randseed=7)
w_randlarge() { (cd "$1" && fio "${FIO_LARGE[@]}" --io_size="${BENCH_RAND_LARGE_MB:-8}M" --output=/dev/null); }
# 9: sqlite: one row per transaction (rollback journal, its fsyncs), as an application's database does.
w_sqlite()    { printf 'insert into t(v) values(hex(randomblob(100)));\n%.0s' $(seq "${BENCH_SQL_TX:-1000}") | sqlite3 "$1/db.sqlite"; }
# untimed preparation before a timed run
prep_write()   { rm -f "$1/seq.bin"; sync; }
prep_mkfiles() { rm -rf "$1/files"; sync; }
prep_tar()     { rm -rf "$1/tree"; sync; }
prep_randrw()  { rm -f "$1/rand.bin"; (cd "$1" && fio "${FIO_ARGS[@]}" --create_only=1 --output=/dev/null); sync; }
prep_randlarge() { rm -f "$1/large.bin"; (cd "$1" && fio "${FIO_LARGE[@]}" --create_only=1 --output=/dev/null); sync; }
prep_sqlite()  { rm -f "$1"/db.sqlite*; sqlite3 "$1/db.sqlite" 'create table t(id integer primary key, v text);'; sync; }

declare -A BEST=()   # BEST[workload/target]
record() { # WORKLOAD TARGET
  if [ "$T" = FAIL ]; then BEST[$1/$2]=${BEST[$1/$2]:-FAIL}; else
    case "${BEST[$1/$2]:-}" in ""|FAIL) BEST[$1/$2]=$T;; *) BEST[$1/$2]=$(fmin "${BEST[$1/$2]}" "$T");; esac
  fi
}
# bench_simple WORKLOAD RUNS PREP-FN FN: per run, prepare (untimed) and time each target in turn
bench_simple() {
  local wl=$1 runs=$2 prep=$3 fn=$4 r tg
  for r in $(seq 1 "$runs"); do
    echo "  run $r/$runs"
    for tg in $(rotated "$r"); do
      [ -z "${BROKEN[$tg]:-}" ] || { T=FAIL; record "$wl" "$tg"; continue; }
      "$prep" "${DIR[$tg]}" >>"$LOG" 2>&1 || true
      timeit "$tg" "$fn" || true; record "$wl" "$tg"
    done
  done
}

# ---------- setup ----------
echo "== setup (work dir $WORK, sources in $SHM)"
if [ -n "${PEERDRIVE_BIN:-}" ]; then PD=$PEERDRIVE_BIN; else
  PD=$WORK/bin/peerdrive
  (cd "$ROOT" && go build -o "$PD" ./cmd/peerdrive) || die "go build ./cmd/peerdrive failed"
fi
MKFILES=$WORK/bin/mkfiles
(cd "$ROOT" && go build -o "$MKFILES" ./bench/tools/mkfiles) || die "go build ./bench/tools/mkfiles failed"

head -c $((SIZE_MB * 1048576)) /dev/urandom >"$SHM/src.bin"   # random: dedup and compression cannot help
GOSRC=$(go env GOROOT)/src
(cd "$(dirname "$GOSRC")" && find src -type f | sort >"$SHM/all.list" && head -n "$TAR_FILES" "$SHM/all.list" >"$SHM/tar.list" &&
  tar -cf "$SHM/src.tar" -T "$SHM/tar.list") || die "building the tarball from $GOSRC failed"
TAR_N=$(wc -l <"$SHM/tar.list"); TAR_MB=$(du -m "$SHM/src.tar" | cut -f1)
echo "  source: ${SIZE_MB} MiB random in tmpfs; tarball: $TAR_N files, ${TAR_MB} MiB from $GOSRC"

mkdir -p "$P" "$C" "$G" "$M"
"$PD" --home "$H" init >>"$LOG" 2>&1 || { tail -5 "$LOG" >&2; die "peerdrive init failed"; }
echo bench-pw >"$WORK/gc-pw"
gocryptfs -init -q -passfile "$WORK/gc-pw" "$C" >>"$LOG" 2>&1 || die "gocryptfs -init failed"
pd_start || die "PeerDrive mount failed (log above)"
gc_start || die "gocryptfs mount failed"
if [ -n "${PEERDRIVE_BIN:-}" ]; then PD_LABEL="PEERDRIVE_BIN=$PD"; else PD_LABEL="built from $ROOT at $(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown)"; fi
echo "  peerdrive: $PD_LABEL, pid $PDPID; gocryptfs: $(gocryptfs -version | cut -d';' -f1) pid $GCPID"
echo "  load average at start: $(cut -d' ' -f1-3 /proc/loadavg) (other busy processes skew the numbers; $(nproc) cores)"
T_START=$(now)

# ---------- 1 + 7: sequential write, peak RSS ----------
# Each run starts from fresh daemons (remount_all, untimed), so the daemon's VmHWM read right
# after dd returns is the peak of that one write. A sampler also records the peak anonymous and
# file-backed (mmap) parts of the RSS, which VmHWM lumps together. After dd, an untimed `sync`
# shows writeback the target left pending despite conv=fsync.
echo "== 1. sequential write ${SIZE_MB} MiB (dd bs=1M conv=fsync), best of $RUNS, fresh daemons per run"
PD_IDLE_RSS="" PD_HWM="" GC_HWM="" PD_ANON="" PD_FILE=""
rss_sampler() { # PID OUT: max RssAnon and RssFile (kB) every 0.2 s, and once more when killed
  local a f ma=0 mf=0
  sample() {
    [ -r "/proc/$1/status" ] || return 1
    read -r a f < <(awk '/^RssAnon:/{a=$2} /^RssFile:/{f=$2} END{print a+0, f+0}' "/proc/$1/status")
    [ "$a" -gt "$ma" ] && ma=$a; [ "$f" -gt "$mf" ] && mf=$f
    echo "$ma $mf" >"$2"
  }
  trap 'sample "$1" "$2" || true; exit 0' TERM
  while sample "$1" "$2"; do sleep 0.2; done
}
for r in $(seq 1 "$RUNS"); do
  echo "  run $r/$RUNS (remounting)"
  for tg in "${TARGETS[@]}"; do prep_write "${DIR[$tg]}" >>"$LOG" 2>&1 || true; done
  remount_all
  [ -z "$PDPID" ] || PD_IDLE_RSS=$(fmax "$PD_IDLE_RSS" "$(rss_mib "$PDPID")")
  for tg in $(rotated "$r"); do
    [ -z "${BROKEN[$tg]:-}" ] || { T=FAIL; record seq_write "$tg"; continue; }
    pid=$(daemon_pid "$tg"); [ -z "$pid" ] || reset_hwm "$pid"
    SPID=""
    if [ "$tg" = mount ]; then
      rss_sampler "$PDPID" "$WORK/rss.$r" & SPID=$!
      if [ "$r" = 1 ]; then   # one top snapshot, 1.5 s into the first write
        ( sleep 1.5; top -b -n2 -d0.5 -w 160 | awk '/^top -/{n++} n==2' | head -n 14 >"$WORK/top.txt" ) &
        TOPPID=$!
      fi
    fi
    timeit "$tg" w_write || true; record seq_write "$tg"
    if [ "$tg" = mount ] && [ -n "$PDPID" ]; then PD_HWM=$(fmax "$PD_HWM" "$(hwm_mib "$PDPID")"); fi
    if [ "$tg" = gocryptfs ] && [ -n "$GCPID" ]; then GC_HWM=$(fmax "$GC_HWM" "$(hwm_mib "$GCPID")"); fi
    if [ -n "$SPID" ]; then
      kill "$SPID" 2>/dev/null || true; wait "$SPID" 2>/dev/null || true
      if [ -s "$WORK/rss.$r" ]; then
        read -r a f <"$WORK/rss.$r"
        PD_ANON=$(fmax "$PD_ANON" $((a / 1024))); PD_FILE=$(fmax "$PD_FILE" $((f / 1024)))
        obs "      daemon VmHWM $(hwm_mib "$PDPID") MiB; sampled peaks: RssAnon $((a / 1024)) MiB, RssFile (mmap) $((f / 1024)) MiB"
      fi
    fi
    s=$(now); sync; obs "      sync right after the write took $(fsub "$(now)" "$s")s (pending writeback)"
  done
done
[ -z "${TOPPID:-}" ] || wait "$TOPPID" 2>/dev/null || true   # the top snapshot

# ---------- 2 + 3: sequential read, cold then warm ----------
echo "== 2+3. sequential read ${SIZE_MB} MiB (dd bs=1M), cold (remount + drop_caches) then warm, best of $RUNS"
for r in $(seq 1 "$RUNS"); do
  echo "  run $r/$RUNS (remounting)"
  remount_all
  for tg in $(rotated "$r"); do
    if [ -n "${BROKEN[$tg]:-}" ]; then T=FAIL; record seq_read_cold "$tg"; record seq_read_warm "$tg"; continue; fi
    echo "   cold:"; timeit "$tg" w_read || true; record seq_read_cold "$tg"
    echo "   warm:"; timeit "$tg" w_read || true; record seq_read_warm "$tg"
  done
done
for tg in "${TARGETS[@]}"; do rm -f "${DIR[$tg]}/seq.bin" 2>>"$LOG" || true; done; sync

# ---------- 4: small files ----------
echo "== 4. create $NFILES files of $FILE_SIZE B (open/write/close), best of $RUNS_META"
bench_simple create_small_files "$RUNS_META" prep_mkfiles w_mkfiles

# ---------- 5: tar extract ----------
echo "== 5. tar -xf of $TAR_N files (${TAR_MB} MiB), best of $RUNS_META"
bench_simple tar_extract "$RUNS_META" prep_tar w_tar

# ---------- 6: ls -lR cold ----------
echo "== 6. ls -lR over the extracted tree, cold (remount + drop_caches), best of $RUNS_META"
for r in $(seq 1 "$RUNS_META"); do
  echo "  run $r/$RUNS_META (remounting)"
  remount_all
  for tg in $(rotated "$r"); do
    [ -z "${BROKEN[$tg]:-}" ] || { T=FAIL; record ls_lR_cold "$tg"; continue; }
    timeit "$tg" w_ls || true; record ls_lR_cold "$tg"
  done
done

# ---------- 8, 9: beyond the issue's list, no goal (random access with fsync) ----------
echo "== 8. random 4 KiB read/write, ${BENCH_RAND_MB:-16} MiB of I/O over a 64 MiB file, fsync every 32 writes (fio), best of $RUNS_META"
bench_simple rand_rw_fsync "$RUNS_META" prep_randrw w_randrw
echo "== 9. sqlite, ${BENCH_SQL_TX:-1000} one-row transactions, best of $RUNS_META"
bench_simple sqlite_tx "$RUNS_META" prep_sqlite w_sqlite
echo "== 10. random 4 KiB read/write (90% reads), ${BENCH_RAND_LARGE_MB:-8} MiB of I/O over a 512 MiB file (fio), best of $RUNS_META"
bench_simple rand_rw_large "$RUNS_META" prep_randlarge w_randlarge
T_END=$(now)

# ---------- report ----------
WL=(seq_write seq_read_cold seq_read_warm create_small_files tar_extract ls_lR_cold)
XWL=(rand_rw_fsync sqlite_tx rand_rw_large) # reported, not among the issue's goals
declare -A LABEL=(
  [seq_write]="1. seq write ${SIZE_MB} MiB"
  [seq_read_cold]="2. seq read cold"
  [seq_read_warm]="3. seq read warm"
  [create_small_files]="4. create ${NFILES}x${FILE_SIZE}B"
  [tar_extract]="5. tar -xf ${TAR_N} files"
  [ls_lR_cold]="6. ls -lR cold"
  [rand_rw_fsync]="8. random rw + fsync (*)"
  [sqlite_tx]="9. sqlite transactions (*)"
  [rand_rw_large]="10. random rw 512 MiB (*)"
)
echo
echo "== results: seconds, best of $RUNS (1-3) / $RUNS_META (4-6, 8-10); ratios = t_other / t_mount, >1.00x = mount faster"
printf '%-26s %10s %10s %10s   %-16s %-18s\n' workload mount gocryptfs plain "mount vs plain" "mount vs gocryptfs"
declare -A VP=() VG=()
for w in "${WL[@]}" "${XWL[@]}"; do
  m=${BEST[$w/mount]:-FAIL} g=${BEST[$w/gocryptfs]:-FAIL} p=${BEST[$w/plain]:-FAIL}
  VP[$w]=$(ratio "$p" "$m"); VG[$w]=$(ratio "$g" "$m")
  printf '%-26s %10s %10s %10s   %-16s %-18s\n' "${LABEL[$w]}" "$m" "$g" "$p" "${VP[$w]}x speed" "${VG[$w]}x"
done
printf '%-26s %10s %10s %10s\n' "7. peak RSS writing (MiB)" "${PD_HWM:-NA}" "${GC_HWM:-NA}" "-"
echo "(*) beyond the issue's workloads: reported, no goal"
echo
echo "throughput MB/s (MiB/s): write mount $(mbps "${BEST[seq_write/mount]:-}") gocryptfs $(mbps "${BEST[seq_write/gocryptfs]:-}") plain $(mbps "${BEST[seq_write/plain]:-}");" \
  "cold read mount $(mbps "${BEST[seq_read_cold/mount]:-}") gocryptfs $(mbps "${BEST[seq_read_cold/gocryptfs]:-}") plain $(mbps "${BEST[seq_read_cold/plain]:-}");" \
  "warm read mount $(mbps "${BEST[seq_read_warm/mount]:-}") gocryptfs $(mbps "${BEST[seq_read_warm/gocryptfs]:-}") plain $(mbps "${BEST[seq_read_warm/plain]:-}")"
echo "peerdrive daemon while writing ${SIZE_MB} MiB: peak RSS (VmHWM, fresh daemon per run, max over runs) ${PD_HWM:-NA} MiB;" \
  "sampled peaks: anonymous (RssAnon) ${PD_ANON:-NA} MiB, file-backed mmap (RssFile) ${PD_FILE:-NA} MiB; idle RSS before writing ${PD_IDLE_RSS:-NA} MiB"
for tg in "${!BROKEN[@]}"; do echo "BROKEN target $tg: ${BROKEN[$tg]}"; done
echo "total benchmark time: $(fsub "$T_END" "$T_START")s (plus setup); load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
if [ -s "$WORK/top.txt" ]; then echo; echo "top snapshot during the first write to the mount:"; cat "$WORK/top.txt"; fi

echo
echo "== goals (issue): ahead of gocryptfs on every workload; seq write >= 0.5x plain; peak RSS < ${RSS_GOAL_MIB} MiB writing 1 GiB"
behind=()
for w in "${WL[@]}"; do [ "$(awk -v v="${VG[$w]}" 'BEGIN{print (v!="NA" && v>=1.0)}')" = 1 ] || behind+=("$w(${VG[$w]}x)"); done
if [ ${#behind[@]} = 0 ]; then echo "GOAL ahead_of_gocryptfs: PASS"; else echo "GOAL ahead_of_gocryptfs: FAIL behind on: ${behind[*]}"; fi
if [ "$(awk -v v="${VP[seq_write]}" 'BEGIN{print (v!="NA" && v>=0.5)}')" = 1 ]; then echo "GOAL seq_write_vs_plain>=0.5: PASS (${VP[seq_write]}x)"; else echo "GOAL seq_write_vs_plain>=0.5: FAIL (${VP[seq_write]}x)"; fi
rss_note=""; [ "$SIZE_MB" = 1024 ] || rss_note=" (measured with ${SIZE_MB} MiB, not 1 GiB)"
if [ -n "$PD_HWM" ] && [ "$PD_HWM" -lt "$RSS_GOAL_MIB" ]; then echo "GOAL peak_rss<${RSS_GOAL_MIB}MiB: PASS (${PD_HWM} MiB)$rss_note"; else echo "GOAL peak_rss<${RSS_GOAL_MIB}MiB: FAIL (${PD_HWM:-NA} MiB)$rss_note"; fi

echo
for w in "${WL[@]}" "${XWL[@]}"; do
  echo "RESULT workload=$w mount_s=${BEST[$w/mount]:-FAIL} gocryptfs_s=${BEST[$w/gocryptfs]:-FAIL} plain_s=${BEST[$w/plain]:-FAIL} vs_plain=${VP[$w]} vs_gocryptfs=${VG[$w]}"
done
echo "RESULT workload=write_peak_rss mount_mib=${PD_HWM:-NA} gocryptfs_mib=${GC_HWM:-NA} goal_mib=$RSS_GOAL_MIB size_mb=$SIZE_MB mount_anon_mib=${PD_ANON:-NA} mount_file_mib=${PD_FILE:-NA}"
