package wasm

import (
	"errors"
	"io"
	"reflect"
	"testing"

	experimentalsys "github.com/tetratelabs/wazero/experimental/sys"
)

const (
	oRW    = experimentalsys.O_RDWR
	oCreat = experimentalsys.O_CREAT
	oExcl  = experimentalsys.O_EXCL
	oTrunc = experimentalsys.O_TRUNC
	oApp   = experimentalsys.O_APPEND
)

func TestMemFS(t *testing.T) {
	m, err := newMemFS(map[string][]byte{"a/b": []byte("12345")}, false, 10)
	if err != nil {
		t.Fatal(err)
	}
	errnoIs := func(what string, got, want experimentalsys.Errno) {
		t.Helper()
		if got != want {
			t.Fatalf("%s: errno %v, want %v", what, got, want)
		}
	}
	write := func(path string, flag experimentalsys.Oflag, data string) experimentalsys.Errno {
		t.Helper()
		f, errno := m.OpenFile(path, flag, 0o644)
		if errno != 0 {
			return errno
		}
		defer f.Close()
		_, errno = f.Write([]byte(data))
		return errno
	}

	errnoIs("create", write("c", oRW|oCreat, "abc"), 0)              // 8 of 10 bytes
	errnoIs("over quota", write("d", oRW|oCreat, "abc"), errNoSpace) // 11 > 10
	if !m.quotaHit() {
		t.Fatal("quota hit not recorded")
	}
	errnoIs("unlink", m.Unlink("c"), 0) // 5 (a/b) + 0 (d, created before the refused write)
	errnoIs("append", write("d", oRW|oApp, "xy"), 0)
	errnoIs("append", write("d", oRW|oApp, "z"), 0)
	errnoIs("exclusive", write("d", oRW|oCreat|oExcl, ""), experimentalsys.EEXIST)
	errnoIs("truncate", write("a/b", oRW|oTrunc, "9"), 0)
	errnoIs("rename over", m.Rename("d", "a/b"), 0)
	errnoIs("open a dir for writing", write("a", oRW, ""), experimentalsys.EISDIR)
	errnoIs("file as a dir", write("a/b/c", oRW|oCreat, ""), experimentalsys.ENOTDIR)
	errnoIs("missing", write("nope", oRW, ""), experimentalsys.ENOENT)
	errnoIs("mkdir", m.Mkdir("e", 0o755), 0)
	errnoIs("mkdir again", m.Mkdir("e", 0o755), experimentalsys.EEXIST)
	errnoIs("rmdir non-empty", m.Rmdir("a"), experimentalsys.ENOTEMPTY)
	errnoIs("rmdir", m.Rmdir("e"), 0)
	if got, want := m.files(), map[string][]byte{"a/b": []byte("xyz")}; !reflect.DeepEqual(got, want) {
		t.Fatalf("files %q, want %q", got, want)
	}
	if m.quota.used != 3 {
		t.Fatalf("quota used %d, want 3", m.quota.used)
	}

	f, errno := m.OpenFile("a/b", experimentalsys.O_RDONLY, 0)
	errnoIs("open", errno, 0)
	buf := make([]byte, 2)
	if n, errno := f.Pread(buf, 1); n != 2 || errno != 0 || string(buf) != "yz" {
		t.Fatalf("pread: %d %v %q", n, errno, buf)
	}
	if off, errno := f.Seek(-1, io.SeekEnd); off != 2 || errno != 0 {
		t.Fatalf("seek: %d %v", off, errno)
	}
	_, errno = f.Write([]byte("w"))
	errnoIs("write a read-only handle", errno, experimentalsys.EBADF)
	f.Close()

	for _, name := range []string{"f1", "f2", "f3"} {
		errnoIs("create", write(name, oRW|oCreat, ""), 0)
	}
	d, errno := m.OpenFile(".", experimentalsys.O_RDONLY, 0)
	errnoIs("open root", errno, 0)
	var names []string
	for {
		ents, errno := d.Readdir(2)
		errnoIs("readdir", errno, 0)
		for _, e := range ents {
			names = append(names, e.Name)
		}
		if len(ents) < 2 {
			break
		}
	}
	if want := []string{"a", "f1", "f2", "f3"}; !reflect.DeepEqual(names, want) {
		t.Fatalf("readdir %v, want %v", names, want)
	}

	ro, err := newMemFS(map[string][]byte{"x": []byte("1")}, true, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, errno = ro.OpenFile("x", oRW, 0)
	errnoIs("write read-only", errno, experimentalsys.EROFS)
	_, errno = ro.OpenFile("y", oRW|oCreat, 0o644)
	errnoIs("create read-only", errno, experimentalsys.EROFS)
	errnoIs("unlink read-only", ro.Unlink("x"), experimentalsys.EROFS)

	for _, files := range []map[string][]byte{{"../x": nil}, {"/x": nil}, {"a": nil, "a/b": nil}} {
		if _, err := newMemFS(files, false, 0); err == nil {
			t.Fatalf("newMemFS(%q) accepted", files)
		}
	}
	if _, err := newMemFS(map[string][]byte{"big": make([]byte, 11)}, false, 10); !errors.Is(err, ErrOutputLimit) {
		t.Fatal("newMemFS over quota accepted")
	}
}
