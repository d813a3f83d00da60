package fs

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"
)

// aclBytes encodes an ACL given as (tag, perm, id) triples.
func aclBytes(es ...[3]uint32) []byte {
	a := make(acl, len(es))
	for i, e := range es {
		a[i] = aclEntry{uint16(e[0]), uint16(e[1]), e[2]}
	}
	return a.bytes()
}

// aclState is what ls -l and getfacl show of a path.
type aclState struct {
	mode           uint32
	access, deflt  []byte
	accErr, defErr unix.Errno
}

func getACLState(t *testing.T, p string) aclState {
	t.Helper()
	var s aclState
	var st unix.Stat_t
	must(t, unix.Lstat(p, &st))
	s.mode = st.Mode
	if st.Mode&unix.S_IFMT == unix.S_IFLNK {
		return s
	}
	get := func(name string) ([]byte, unix.Errno) {
		buf := make([]byte, 1024)
		n, err := unix.Getxattr(p, name, buf)
		if err != nil {
			return nil, errnoOf(err)
		}
		return buf[:n], 0
	}
	s.access, s.accErr = get(aclAccess)
	s.deflt, s.defErr = get(aclDefault)
	return s
}

func (s aclState) equal(o aclState) bool {
	return s.mode == o.mode && bytes.Equal(s.access, o.access) && bytes.Equal(s.deflt, o.deflt) &&
		s.accErr == o.accErr && s.defErr == o.defErr
}

// TestACL runs the same calls on a local directory (the oracle: /tmp must
// support POSIX ACLs) and on the mount, and compares modes and ACLs.
func TestACL(t *testing.T) {
	local := t.TempDir()
	if err := unix.Setxattr(local, aclDefault, aclBytes([3]uint32{aclUserObj, 7, 0}, [3]uint32{aclGroupObj, 5, 0}, [3]uint32{aclOther, 5, 0}), 0); err != nil {
		t.Skipf("%s has no POSIX ACLs to compare with: %v", local, err)
	}
	must(t, unix.Removexattr(local, aclDefault))
	d := mountDrive(t, nil)
	old := unix.Umask(0o022)
	defer unix.Umask(old)
	roots := []string{local, d.mnt}
	do := func(what string, fn func(root string) error) {
		t.Helper()
		var errs [2]unix.Errno
		for i, r := range roots {
			errs[i] = errnoOf(fn(r))
		}
		if errs[0] != errs[1] {
			t.Fatalf("%s: errno %v locally, %v on the mount", what, errs[0], errs[1])
		}
	}
	compare := func(when string, paths ...string) {
		t.Helper()
		for _, p := range paths {
			want, got := getACLState(t, filepath.Join(local, p)), getACLState(t, filepath.Join(d.mnt, p))
			if !want.equal(got) {
				t.Fatalf("%s: %s: on the mount %+v, locally %+v", when, p, got, want)
			}
		}
	}
	const nobody = 65534
	do("create", func(r string) error { return os.WriteFile(filepath.Join(r, "f"), []byte("acl"), 0o644) })
	do("chmod 0600", func(r string) error { return unix.Chmod(filepath.Join(r, "f"), 0o600) })
	compare("chmod", "f")
	full := aclBytes([3]uint32{aclUserObj, 6, 0}, [3]uint32{aclUser, 4, nobody}, [3]uint32{aclGroupObj, 0, 0},
		[3]uint32{aclGroup, 6, nobody}, [3]uint32{aclMask, 6, 0}, [3]uint32{aclOther, 0, 0})
	do("set access ACL", func(r string) error { return unix.Setxattr(filepath.Join(r, "f"), aclAccess, full, 0) })
	compare("set access ACL: group bits from the mask", "f")
	do("chmod 0640", func(r string) error { return unix.Chmod(filepath.Join(r, "f"), 0o640) })
	compare("chmod sets the mask", "f")
	do("chmod 02755", func(r string) error { return unix.Chmod(filepath.Join(r, "f"), 0o2755) })
	compare("chmod with setgid", "f")
	base := aclBytes([3]uint32{aclUserObj, 7, 0}, [3]uint32{aclGroupObj, 1, 0}, [3]uint32{aclOther, 4, 0})
	do("set a base-only ACL", func(r string) error { return unix.Setxattr(filepath.Join(r, "f"), aclAccess, base, 0) })
	compare("an ACL equal to a mode is not kept", "f")
	do("set access ACL again", func(r string) error { return unix.Setxattr(filepath.Join(r, "f"), aclAccess, full, 0) })
	do("remove access ACL", func(r string) error { return unix.Removexattr(filepath.Join(r, "f"), aclAccess) })
	compare("removed", "f")
	do("remove it twice", func(r string) error { return unix.Removexattr(filepath.Join(r, "f"), aclAccess) })
	do("default ACL on a file", func(r string) error { return unix.Setxattr(filepath.Join(r, "f"), aclDefault, base, 0) })

	// Inheritance: a default ACL replaces the umask.
	do("mkdir", func(r string) error { return unix.Mkdir(filepath.Join(r, "d"), 0o750) })
	def := aclBytes([3]uint32{aclUserObj, 7, 0}, [3]uint32{aclUser, 6, nobody}, [3]uint32{aclGroupObj, 7, 0},
		[3]uint32{aclGroup, 7, nobody}, [3]uint32{aclMask, 7, 0}, [3]uint32{aclOther, 5, 0})
	do("set default ACL", func(r string) error { return unix.Setxattr(filepath.Join(r, "d"), aclDefault, def, 0) })
	compare("default ACL", "d")
	do("create in d", func(r string) error { return os.WriteFile(filepath.Join(r, "d/f"), nil, 0o666) })
	do("create 0600 in d", func(r string) error { return os.WriteFile(filepath.Join(r, "d/g"), nil, 0o600) })
	do("mkdir in d", func(r string) error { return unix.Mkdir(filepath.Join(r, "d/s"), 0o777) })
	do("mkdir in d/s", func(r string) error { return unix.Mkdir(filepath.Join(r, "d/s/t"), 0o700) })
	do("mkfifo in d", func(r string) error { return unix.Mkfifo(filepath.Join(r, "d/p"), 0o644) })
	do("symlink in d", func(r string) error { return unix.Symlink("f", filepath.Join(r, "d/l")) })
	do("tmpfile in d", func(r string) error {
		fd, err := unix.Open(filepath.Join(r, "d"), unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC, 0o640)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		return unix.Linkat(unix.AT_FDCWD, "/proc/self/fd/"+itoa(fd), unix.AT_FDCWD, filepath.Join(r, "d/tmp"), unix.AT_SYMLINK_FOLLOW)
	})
	inherited := []string{"d/f", "d/g", "d/s", "d/s/t", "d/p", "d/l", "d/tmp"}
	compare("inherited", inherited...)
	// A base-only default ACL gives modes and no access ACL.
	do("mkdir e", func(r string) error { return unix.Mkdir(filepath.Join(r, "e"), 0o755) })
	do("base default ACL", func(r string) error { return unix.Setxattr(filepath.Join(r, "e"), aclDefault, base, 0) })
	do("create in e", func(r string) error { return os.WriteFile(filepath.Join(r, "e/f"), nil, 0o666) })
	compare("inherited base ACL", "e", "e/f")
	// The umask applies without a default ACL.
	unix.Umask(0o027)
	do("create with umask 027", func(r string) error { return os.WriteFile(filepath.Join(r, "u"), nil, 0o666) })
	do("mkdir with umask 027", func(r string) error { return unix.Mkdir(filepath.Join(r, "ud"), 0o777) })
	compare("umask", "u", "ud")
	d.remount()
	compare("after remount", append(inherited, "f", "d", "e", "e/f", "u", "ud")...)
}

func itoa(i int) string { return strconv.Itoa(i) }
