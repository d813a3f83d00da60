package compute

import (
	"os"

	"strconv"
	"strings"
)

// Thresholds of the machine's own CPU use (a fraction of all cores, not
// counting our workers) above which units are suspended and below which
// they resume.
const (
	busyAbove = 0.5
	idleBelow = 0.25
)

// nextBusy applies the hysteresis between busyAbove and idleBelow.
func nextBusy(busy bool, own float64) bool {
	if busy {
		return own >= idleBelow
	}
	return own > busyAbove
}

// loadMeter samples /proc/stat and our workers' /proc/PID/stat.
type loadMeter struct {
	total, busy, workers uint64
	have                 bool
}

// sample returns the fraction of the machine's CPU used since the last
// sample by anything but the given worker processes.
func (l *loadMeter) sample(pids []int) (float64, bool) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, false
	}
	total, busy, ok := parseProcStat(string(b))
	if !ok {
		return 0, false
	}
	var workers uint64
	for _, pid := range pids {
		if s, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat"); err == nil {
			workers += parsePidJiffies(string(s))
		}
	}
	prev := *l
	*l = loadMeter{total: total, busy: busy, workers: workers, have: true}
	if !prev.have || total <= prev.total {
		return 0, false
	}
	return ownLoad(total-prev.total, busy-min(busy, prev.busy), workers-min(workers, prev.workers)), true
}

// ownLoad is the busy share of dTotal jiffies not spent by our workers.
func ownLoad(dTotal, dBusy, dWorkers uint64) float64 {
	if dTotal == 0 {
		return 0
	}
	own := int64(dBusy) - int64(dWorkers)
	return max(float64(own), 0) / float64(dTotal)
}

// parseProcStat returns the total and busy jiffies of the "cpu" line.
func parseProcStat(s string) (total, busy uint64, ok bool) {
	line, _, _ := strings.Cut(s, "\n")
	f := strings.Fields(line)
	if len(f) < 5 || f[0] != "cpu" {
		return 0, 0, false
	}
	for i, x := range f[1:] {
		v, err := strconv.ParseUint(x, 10, 64)
		if err != nil {
			return 0, 0, false
		}
		if i >= 8 { // guest time is already counted in user
			break
		}
		total += v
		if i != 3 && i != 4 { // idle, iowait
			busy += v
		}
	}
	return total, busy, true
}

// parsePidJiffies returns utime+stime of a /proc/PID/stat line; its
// workers' children are not counted (a worker has none).
func parsePidJiffies(s string) uint64 {
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseUint(f[11], 10, 64)
	st, _ := strconv.ParseUint(f[12], 10, 64)
	return u + st
}
