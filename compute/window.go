package compute

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// ErrBadWindow reports a --compute-window spec that does not parse.
var ErrBadWindow = errors.New("bad compute window")

// Window is a weekly period during which a supplier runs units, such as
// "Mon-Fri 22:00-07:00": it opens at Start on each of Days and closes at End
// the same day, or the next day if End is not after Start.
type Window struct {
	Days  [7]bool       // indexed by time.Weekday: the days the window opens on
	Start time.Duration // offset from local midnight
	End   time.Duration // offset from local midnight, ≤ 24h
}

var dayNames = map[string]time.Weekday{
	"sun": time.Sunday, "mon": time.Monday, "tue": time.Tuesday, "wed": time.Wednesday,
	"thu": time.Thursday, "fri": time.Friday, "sat": time.Saturday,
}

// ParseWindow parses "DAYS HH:MM-HH:MM" or "HH:MM-HH:MM" (every day). DAYS
// is a comma-separated list of days (Mon) and ranges (Mon-Fri, Fri-Mon wraps
// over the weekend). "24:00" is accepted as an end.
func ParseWindow(spec string) (Window, error) {
	var w Window
	f := strings.Fields(spec)
	var days, hours string
	switch len(f) {
	case 1:
		hours = f[0]
		for i := range w.Days {
			w.Days[i] = true
		}
	case 2:
		days, hours = f[0], f[1]
	default:
		return w, fmt.Errorf("%w %q: want \"Mon-Fri 22:00-07:00\" or \"22:00-07:00\"", ErrBadWindow, spec)
	}
	if days != "" {
		for _, part := range strings.Split(days, ",") {
			a, b, isRange := strings.Cut(part, "-")
			from, ok1 := dayNames[strings.ToLower(a)]
			to := from
			ok2 := true
			if isRange {
				to, ok2 = dayNames[strings.ToLower(b)]
			}
			if !ok1 || !ok2 {
				return w, fmt.Errorf("%w %q: unknown day in %q (Mon Tue Wed Thu Fri Sat Sun)", ErrBadWindow, spec, part)
			}
			for d := from; ; d = (d + 1) % 7 {
				w.Days[d] = true
				if d == to {
					break
				}
			}
		}
	}
	a, b, ok := strings.Cut(hours, "-")
	if !ok {
		return w, fmt.Errorf("%w %q: want HH:MM-HH:MM", ErrBadWindow, spec)
	}
	var err1, err2 error
	w.Start, err1 = parseClock(a, false)
	w.End, err2 = parseClock(b, true)
	if err := errors.Join(err1, err2); err != nil {
		return w, fmt.Errorf("%w %q: %v", ErrBadWindow, spec, err)
	}
	return w, nil
}

func parseClock(s string, end bool) (time.Duration, error) {
	h, m, ok := strings.Cut(s, ":")
	if !ok || len(h) == 0 || len(h) > 2 || len(m) != 2 {
		return 0, fmt.Errorf("time %q: want HH:MM", s)
	}
	hh, err1 := strconv.Atoi(h)
	mm, err2 := strconv.Atoi(m)
	if err1 != nil || err2 != nil || hh < 0 || mm < 0 || mm > 59 || hh > 24 || (hh == 24 && (mm != 0 || !end)) {
		return 0, fmt.Errorf("time %q out of range", s)
	}
	return time.Duration(hh)*time.Hour + time.Duration(mm)*time.Minute, nil
}

// String formats w as ParseWindow accepts it.
func (w Window) String() string {
	var days []string
	for d := time.Sunday; d <= time.Saturday; d++ {
		if w.Days[d] {
			days = append(days, d.String()[:3])
		}
	}
	clock := func(d time.Duration) string {
		return fmt.Sprintf("%02d:%02d", int(d/time.Hour), int(d%time.Hour/time.Minute))
	}
	return strings.Join(days, ",") + " " + clock(w.Start) + "-" + clock(w.End)
}

// closesAt returns when the opening of w that contains t ends, and whether
// t is inside w at all.
func (w Window) closesAt(t time.Time) (time.Time, bool) {
	y, m, d := t.Date()
	for back := 0; back <= 1; back++ {
		day := time.Date(y, m, d-back, 0, 0, 0, 0, t.Location())
		if !w.Days[day.Weekday()] {
			continue
		}
		start := day.Add(w.Start)
		end := day.Add(w.End)
		if w.End <= w.Start {
			end = time.Date(y, m, d-back+1, 0, 0, 0, 0, t.Location()).Add(w.End)
		}
		if !t.Before(start) && t.Before(end) {
			return end, true
		}
	}
	return time.Time{}, false
}

// Windows is a supplier's set of windows; none means always open.
type Windows []Window

// Always is what Left returns when no window limits a supplier.
const Always = time.Duration(math.MaxInt64)

// ParseWindows parses every spec.
func ParseWindows(specs []string) (Windows, error) {
	var ws Windows
	for _, s := range specs {
		w, err := ParseWindow(s)
		if err != nil {
			return nil, err
		}
		ws = append(ws, w)
	}
	return ws, nil
}

// Left returns how long the supplier stays open from t on: 0 outside every
// window, Always with no windows. Overlapping or back-to-back windows count
// as one opening (followed for up to a week).
func (ws Windows) Left(t time.Time) time.Duration {
	if len(ws) == 0 {
		return Always
	}
	at := t
	for i := 0; i < 8*len(ws)+8; i++ {
		var best time.Time
		for _, w := range ws {
			if end, ok := w.closesAt(at); ok && end.After(best) {
				best = end
			}
		}
		if best.IsZero() {
			break
		}
		at = best
		if at.Sub(t) >= 7*24*time.Hour {
			return Always
		}
	}
	return at.Sub(t)
}
