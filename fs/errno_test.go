package fs

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"syscall"
	"testing"
)

// TestToErrnoLogs: every EIO is logged; a run of ENOSPC gives one line.
func TestToErrnoLogs(t *testing.T) {
	noSpaceLog = logLimit{}
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	for i := range 100 {
		if e := toErrno(log, "write", fmt.Errorf("write %d: %w", i, ErrQuota)); e != syscall.ENOSPC {
			t.Fatalf("quota error gave %v, want ENOSPC", e)
		}
	}
	for range 3 {
		if e := toErrno(log, "read", fmt.Errorf("boom")); e != syscall.EIO {
			t.Fatalf("unknown error gave %v, want EIO", e)
		}
	}
	out := buf.String()
	if n := strings.Count(out, "no space"); n != 1 {
		t.Errorf("%d ENOSPC lines for 100 refusals, want 1:\n%s", n, out)
	}
	if n := strings.Count(out, "operation failed"); n != 3 {
		t.Errorf("%d EIO lines for 3 errors, want 3:\n%s", n, out)
	}
}
