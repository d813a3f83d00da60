package compute

import (
	"errors"
	"testing"
	"time"
)

func TestParseWindow(t *testing.T) {
	for _, tc := range []struct {
		spec string
		want string
	}{
		{"Mon-Fri 22:00-07:00", "Mon,Tue,Wed,Thu,Fri 22:00-07:00"},
		{"22:00-07:00", "Sun,Mon,Tue,Wed,Thu,Fri,Sat 22:00-07:00"},
		{"Sat,Sun 00:00-24:00", "Sun,Sat 00:00-24:00"},
		{"fri-mon 9:30-17:00", "Sun,Mon,Fri,Sat 09:30-17:00"},
		{"Wed 12:00-12:00", "Wed 12:00-12:00"},
	} {
		w, err := ParseWindow(tc.spec)
		if err != nil {
			t.Errorf("%q: %v", tc.spec, err)
			continue
		}
		if got := w.String(); got != tc.want {
			t.Errorf("%q: got %q, want %q", tc.spec, got, tc.want)
		}
	}
	for _, bad := range []string{"", "Mon-Fri", "Mon-Fry 10:00-11:00", "10:00", "25:00-01:00",
		"10:60-11:00", "24:00-01:00", "10:00-24:01", "a b c", "Mon 1000-1100", "Mon -10:00-11:00"} {
		if _, err := ParseWindow(bad); !errors.Is(err, ErrBadWindow) {
			t.Errorf("%q: err = %v, want ErrBadWindow", bad, err)
		}
	}
}

func TestWindowsLeft(t *testing.T) {
	loc := time.UTC
	// 2026-11-23 is a Monday.
	at := func(day, h, m int) time.Time { return time.Date(2026, 11, 22+day, h, m, 0, 0, loc) }
	mustWs := func(specs ...string) Windows {
		ws, err := ParseWindows(specs)
		if err != nil {
			t.Fatal(err)
		}
		return ws
	}
	night := mustWs("Mon-Fri 22:00-07:00")
	for _, tc := range []struct {
		name string
		ws   Windows
		t    time.Time
		want time.Duration
	}{
		{"no windows", nil, at(1, 12, 0), Always},
		{"Monday noon: closed", night, at(1, 12, 0), 0},
		{"Monday 23:00", night, at(1, 23, 0), 8 * time.Hour},
		{"Tuesday 06:30, opened Monday", night, at(2, 6, 30), 30 * time.Minute},
		{"Tuesday 07:00: just closed", night, at(2, 7, 0), 0},
		{"Saturday 03:00, opened Friday", night, at(6, 3, 0), 4 * time.Hour},
		{"Sunday 03:00: Saturday not listed", night, at(7, 3, 0), 0},
		{"back to back", mustWs("Mon 08:00-12:00", "Mon 12:00-13:00"), at(1, 9, 0), 4 * time.Hour},
		{"whole week", mustWs("00:00-24:00"), at(3, 5, 0), Always},
		{"weekend", mustWs("Sat,Sun 00:00-24:00"), at(6, 22, 0), 26 * time.Hour},
	} {
		if got := tc.ws.Left(tc.t); got != tc.want {
			t.Errorf("%s: Left = %v, want %v", tc.name, got, tc.want)
		}
	}
}
