package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestClients runs real programs against one mount: rsync with every attribute it can
// carry, tar through the mount both ways, cp -a both ways, a git repository with clone and
// fsck, restic and borg repositories with verified backups and restores, GNOME's gio (copy,
// move, trash, filesystem info), an sqlite database, and stress-ng's filesystem stressors
// with verification. It then remounts and checks again.
func TestClients(t *testing.T) {
	requireTool(t, "rsync", "tar", "git", "restic", "borg", "gio", "sqlite3", "stress-ng", "cp", "setfattr", "setfacl", "getfacl", "touch", "stat")
	home := initHome(t, filepath.Join(t.TempDir(), "home"))
	mnt := t.TempDir()
	d := startMount(t, home, mnt)
	src := filepath.Join(t.TempDir(), "src")
	makeSourceTree(t, src)
	want := manifest(t, src, manifestOpts{})

	// Each subtest registers what must still hold after a clean unmount and a new mount.
	type recheck struct {
		name string
		fn   func(t *testing.T)
	}
	var rechecks []recheck
	afterRemount := func(name string, fn func(t *testing.T)) { rechecks = append(rechecks, recheck{name, fn}) }

	t.Run("rsync", func(t *testing.T) {
		in := filepath.Join(mnt, "rsync")
		mustRun(t, cmdOpts{}, "rsync", "-aHAX", src+"/", in+"/")
		check := func(t *testing.T) {
			requireRsyncSame(t, src, in)
			requireSameTree(t, "rsync into the mount", want, manifest(t, in, manifestOpts{}))
			requireHardLinked(t, in, "shared/hard-a", "public/hard-b", "hard-c")
		}
		check(t)
		afterRemount("rsync", check)

		out := filepath.Join(t.TempDir(), "out")
		mustRun(t, cmdOpts{}, "rsync", "-aHAX", in+"/", out+"/")
		requireRsyncSame(t, src, out)
		requireSameTree(t, "rsync out of the mount", want, manifest(t, out, manifestOpts{}))
		requireHardLinked(t, out, "shared/hard-a", "public/hard-b", "hard-c")
	})

	t.Run("tar", func(t *testing.T) {
		// GNU tar keeps nanosecond times only in the posix (pax) format.
		create := []string{"--format=posix", "--xattrs", "--xattrs-include=*", "--acls", "-cf"}
		extract := []string{"--xattrs", "--xattrs-include=*", "--acls", "--numeric-owner", "-xpf"}
		local := filepath.Join(t.TempDir(), "src.tar")
		mustRun(t, cmdOpts{}, "tar", append(append([]string{"-C", src}, create...), local, ".")...)
		in := newDir(t, mnt, "tar-in")
		mustRun(t, cmdOpts{}, "tar", append(append([]string{"-C", in}, extract...), local)...)
		archive := filepath.Join(mnt, "tar-in.tar") // created from the mount, onto the mount
		mustRun(t, cmdOpts{}, "tar", append(append([]string{"-C", in}, create...), archive, ".")...)
		out := newDir(t, mnt, "tar-out")
		mustRun(t, cmdOpts{}, "tar", append(append([]string{"-C", out}, extract...), archive)...)

		// The roots were made by newDir; their mode and time are not the archive's.
		requireSameTree(t, "tar into the mount", dropRoot(want), dropRoot(manifest(t, in, manifestOpts{})))
		requireSameTree(t, "tar from the mount into the mount", dropRoot(want), dropRoot(manifest(t, out, manifestOpts{})))
		requireRsyncSame(t, in, out)
		requireHardLinked(t, out, "shared/hard-a", "public/hard-b", "hard-c")
		mustRun(t, cmdOpts{}, "tar", "--compare", "-C", out, "-f", archive)
		afterRemount("tar", func(t *testing.T) {
			requireSameTree(t, "tar extraction", dropRoot(want), dropRoot(manifest(t, out, manifestOpts{})))
			requireRsyncSame(t, in, out)
			mustRun(t, cmdOpts{}, "tar", "--compare", "-C", out, "-f", archive)
		})
	})

	t.Run("git", func(t *testing.T) {
		repo := filepath.Join(mnt, "git", "repo")
		clone := filepath.Join(mnt, "git", "clone")
		git := gitRunner(t)
		git("init", "-q", "-b", "main", repo)
		writeGitWork(t, repo, 1)
		git("-C", repo, "add", "-A")
		git("-C", repo, "commit", "-q", "-m", "first")
		writeGitWork(t, repo, 2)
		if err := os.Rename(filepath.Join(repo, "docs", "a.txt"), filepath.Join(repo, "docs", "renamed.txt")); err != nil {
			t.Fatal(err)
		}
		if err := os.Remove(filepath.Join(repo, "pkg", "p3", "f7.go")); err != nil {
			t.Fatal(err)
		}
		git("-C", repo, "add", "-A")
		git("-C", repo, "commit", "-q", "-m", "second")
		git("-C", repo, "gc", "-q", "--prune=now") // packs, renames and deletes inside .git
		git("-C", repo, "fsck", "--full", "--strict")
		git("clone", "-q", repo, clone) // a local clone hard-links the objects
		git("-C", clone, "fsck", "--full", "--strict")
		git("clone", "-q", "--no-local", repo, clone+"-packed")
		git("-C", clone+"-packed", "fsck", "--full", "--strict")

		head := strings.TrimSpace(git("-C", repo, "rev-parse", "HEAD"))
		for _, c := range []string{clone, clone + "-packed"} {
			if got := strings.TrimSpace(git("-C", c, "rev-parse", "HEAD")); got != head {
				t.Errorf("%s: HEAD %s, want %s", c, got, head)
			}
			if st := git("-C", c, "status", "--porcelain"); st != "" {
				t.Errorf("%s: working tree differs from HEAD:\n%s", c, st)
			}
			requireSameTree(t, "git clone work tree", workTree(t, repo), workTree(t, c))
		}
		if n := strings.Count(git("-C", clone, "log", "--format=%H"), "\n"); n != 2 {
			t.Errorf("clone has %d commits, want 2", n)
		}
		afterRemount("git", func(t *testing.T) {
			git := gitRunner(t)
			for _, c := range []string{repo, clone, clone + "-packed"} {
				git("-C", c, "fsck", "--full", "--strict")
				if st := git("-C", c, "status", "--porcelain"); st != "" {
					t.Errorf("%s: working tree differs from HEAD:\n%s", c, st)
				}
			}
		})
	})

	t.Run("restic", func(t *testing.T) {
		repo := filepath.Join(mnt, "restic-repo")
		data := backupData(t, 20<<20)
		restic := resticRunner(t, repo)
		restic("init")
		restic("backup", "--host", "itest", data)
		restic("check", "--read-data")
		target := filepath.Join(t.TempDir(), "restore")
		restic("restore", "latest", "--target", target)
		requireSameTree(t, "restic restore", manifest(t, data, manifestOpts{}),
			manifest(t, filepath.Join(target, data), manifestOpts{}))
		afterRemount("restic", func(t *testing.T) { resticRunner(t, repo)("check", "--read-data") })
	})

	t.Run("cp-a", func(t *testing.T) {
		in := filepath.Join(mnt, "cp-a")
		mustRun(t, cmdOpts{}, "cp", "-a", src, in)
		requireSameTree(t, "cp -a into the mount", want, manifest(t, in, manifestOpts{}))
		requireHardLinked(t, in, "shared/hard-a", "public/hard-b", "hard-c")
		out := filepath.Join(t.TempDir(), "out")
		mustRun(t, cmdOpts{}, "cp", "-a", in, out)
		requireRsyncSame(t, src, out) // xattrs and ACLs too
		requireSameTree(t, "cp -a out of the mount", want, manifest(t, out, manifestOpts{}))
		afterRemount("cp-a", func(t *testing.T) { requireRsyncSame(t, src, in) })
	})

	t.Run("borg", func(t *testing.T) {
		repo := filepath.Join(mnt, "borg-repo")
		data := backupData(t, 8<<20)
		env := []string{"BORG_PASSPHRASE=integration-test", "BORG_BASE_DIR=" + t.TempDir()}
		borg := func(dir string, args ...string) string {
			t.Helper()
			return mustRun(t, cmdOpts{Dir: dir, Env: env, Timeout: 3 * time.Minute}, "borg", args...)
		}
		borg("", "init", "--encryption=repokey-blake2", repo)
		borg("", "create", repo+"::one", data)
		borg("", "check", "--verify-data", repo)
		target := t.TempDir()
		borg(target, "extract", repo+"::one")
		requireSameTree(t, "borg extract", manifest(t, data, manifestOpts{}),
			manifest(t, filepath.Join(target, data), manifestOpts{}))
		afterRemount("borg", func(t *testing.T) {
			mustRun(t, cmdOpts{Env: env, Timeout: 3 * time.Minute}, "borg", "check", "--verify-data", repo)
		})
	})

	t.Run("gio", func(t *testing.T) {
		dir := newDir(t, mnt, "gio")
		env := []string{"HOME=" + t.TempDir(), "XDG_DATA_HOME=" + t.TempDir()} // its own trash elsewhere
		gio := func(args ...string) string { t.Helper(); return mustRun(t, cmdOpts{Env: env}, "gio", args...) }
		body := randBytes(300_000)
		local := filepath.Join(t.TempDir(), "doc.bin")
		if err := os.WriteFile(local, body, 0o640); err != nil {
			t.Fatal(err)
		}
		gio("copy", "--preserve", local, dir+"/")
		gio("move", filepath.Join(dir, "doc.bin"), filepath.Join(dir, "moved.bin"))
		if b := readFile(t, filepath.Join(dir, "moved.bin")); string(b) != string(body) {
			t.Fatalf("gio copy and move: %d bytes back, differ from the %d written", len(b), len(body))
		}
		if l := gio("list", dir); strings.TrimSpace(l) != "moved.bin" {
			t.Errorf("gio list %s: %q, want moved.bin", dir, l)
		}
		// A file manager's delete: into the mount's own trash, with its .trashinfo.
		gio("trash", filepath.Join(dir, "moved.bin"))
		trashed := filepath.Join(mnt, ".Trash-0", "files", "moved.bin")
		if b := readFile(t, trashed); string(b) != string(body) {
			t.Errorf("trashed file %s holds %d bytes, want the %d written", trashed, len(b), len(body))
		}
		if info := string(readFile(t, filepath.Join(mnt, ".Trash-0", "info", "moved.bin.trashinfo"))); !strings.Contains(info, "Path=") {
			t.Errorf("trash info: %q", info)
		}
		if fi := gio("info", "-f", "-a", "filesystem::size,filesystem::type", dir); !strings.Contains(fi, "filesystem::size:") {
			t.Errorf("gio info -f: %q", fi)
		}
		afterRemount("gio", func(t *testing.T) {
			if b := readFile(t, trashed); string(b) != string(body) {
				t.Errorf("trashed file after remount: %d bytes, want %d", len(b), len(body))
			}
		})
	})

	t.Run("sqlite", func(t *testing.T) {
		db := filepath.Join(newDir(t, mnt, "sqlite"), "test.db")
		var sql strings.Builder
		sql.WriteString("create table t(id integer primary key, v text);\n")
		for range 300 { // a transaction each: journal created, synced, deleted
			sql.WriteString("insert into t(v) values(hex(randomblob(300)));\n")
		}
		sql.WriteString("begin; update t set v = upper(v) where id % 3 = 0; delete from t where id % 7 = 0; commit;\n")
		mustRun(t, cmdOpts{Stdin: strings.NewReader(sql.String())}, "sqlite3", db)
		check := func(t *testing.T) {
			got := strings.TrimSpace(mustRun(t, cmdOpts{}, "sqlite3", db, "pragma integrity_check; select count(*) from t;"))
			if got != "ok\n258" {
				t.Errorf("sqlite integrity_check and row count: %q, want ok and 258", got)
			}
		}
		check(t)
		afterRemount("sqlite", check)
	})

	t.Run("stress-ng", func(t *testing.T) {
		// Filesystem stressors side by side, each checking what it reads back (--verify):
		// odd names (filename: every byte but '/' and NUL), renames, links, xattrs, locks,
		// mmap, holes. stress-ng exits 0 after a stressor's failures: its fail lines decide.
		dir := newDir(t, mnt, "stress-ng")
		for _, stressors := range [][]string{
			{"--filename", "1"}, // alone: with others beside it, it often gets no CPU for odd names
			{"--rename", "1", "--link", "1", "--symlink", "1", "--xattr", "1", "--dir", "1",
				"--dentry", "1", "--fallocate", "1", "--hdd", "1", "--hdd-bytes", "8M", "--lockf", "1",
				"--fcntl", "1", "--flock", "1", "--mmap", "1", "--mmap-bytes", "8M", "--seek", "1",
				"--utime", "1", "--chmod", "1", "--chown", "1", "--fpunch", "1", "--getdent", "1",
				"--sendfile", "1"},
		} {
			args := append([]string{"--verify", "--timeout", "3", "--temp-path", dir}, stressors...)
			out, err := tryRun(cmdOpts{Timeout: 2 * time.Minute}, "stress-ng", args...)
			var fails []string
			for _, l := range strings.Split(out, "\n") {
				if strings.Contains(l, " fail: ") || strings.Contains(l, "failures reached") {
					fails = append(fails, l)
				}
			}
			if err != nil || len(fails) > 0 {
				t.Errorf("stress-ng %s: %v; failures:\n%s\n%s", strings.Join(stressors, " "), err, strings.Join(fails, "\n"), tail(out, 20))
			}
		}
	})

	t.Run("acl", func(t *testing.T) {
		// The same steps on a local file and on one in the mount must give the same mode and
		// ACL: setting an ACL sets the group bits to its mask, and chmod sets the mask.
		local := filepath.Join(t.TempDir(), "f")
		remote := filepath.Join(newDir(t, mnt, "acl"), "f")
		steps := [][]string{
			{"chmod", "0600"},
			{"setfacl", "-m", "u:65534:r--,g:65534:rw-"},
			{"chmod", "0640"},
			{"setfacl", "-x", "g:65534"},
		}
		for _, p := range []string{local, remote} {
			if err := os.WriteFile(p, []byte("acl\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		state := func(t *testing.T, p string) string {
			return mustRun(t, cmdOpts{}, "stat", "-c", "%A", p) + mustRun(t, cmdOpts{}, "getfacl", "-cp", p)
		}
		for _, step := range steps {
			for _, p := range []string{local, remote} {
				mustRun(t, cmdOpts{}, step[0], append(step[1:], p)...)
			}
			if want, got := state(t, local), state(t, remote); got != want {
				t.Errorf("after %s: mode and ACL in the mount\n%s\nwant, as on a local file,\n%s", strings.Join(step, " "), got, want)
			}
		}
		mustRun(t, cmdOpts{}, "setfacl", "-m", "u:65534:rw-", remote)
		before := state(t, remote)
		afterRemount("acl", func(t *testing.T) {
			if got := state(t, remote); got != before {
				t.Errorf("mode and ACL after remount\n%s\nwant, as before,\n%s", got, before)
			}
		})
	})

	t.Run("names", func(t *testing.T) {
		dir := newDir(t, mnt, "names")
		names := []string{
			strings.Repeat("n", 255), // NAME_MAX bytes
			strings.Repeat("名", 85),  // 255 bytes of UTF-8
			"Case", "case", "CASE",   // distinct names
			" leading and trailing ",    // spaces kept
			"new\nline\ttab",            // any byte but '/' and NUL
			"dots...", ".hidden", "..x", // dot names
		}
		for i, n := range names {
			if err := os.WriteFile(filepath.Join(dir, n), []byte(fmt.Sprint(i)), 0o644); err != nil {
				t.Fatalf("create %q: %v", n, err)
			}
		}
		long := filepath.Join(dir, strings.Repeat("d", 255))
		if err := os.Mkdir(long, 0o755); err != nil {
			t.Fatalf("mkdir 255-byte name: %v", err)
		}
		if err := os.Symlink(strings.Repeat("t/", 2000), filepath.Join(long, "long-target")); err != nil {
			t.Fatalf("symlink with a 4000-byte target: %v", err)
		}
		if err := os.Rename(filepath.Join(dir, "Case"), filepath.Join(dir, "case")); err != nil {
			t.Fatalf("rename over an existing name: %v", err)
		}
		ents, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		if len(ents) != len(names) { // one name renamed over another, one directory added
			t.Errorf("%d entries, want %d: %v", len(ents), len(names), ents)
		}
		if b, err := os.ReadFile(filepath.Join(dir, "case")); err != nil || string(b) != "2" {
			t.Errorf("after rename over it, case holds %q, %v; want the renamed file's %q", b, err, "2")
		}
		before := manifest(t, dir, manifestOpts{})
		afterRemount("names", func(t *testing.T) {
			requireSameTree(t, "names after remount", before, manifest(t, dir, manifestOpts{}))
		})
	})

	d.Stop(t)
	d = startMount(t, home, mnt)
	for _, r := range rechecks {
		t.Run("remount-"+r.name, r.fn)
	}
	d.Stop(t)
}

// backupData makes what a backup program saves: the source tree and a file of n random bytes.
func backupData(t *testing.T, n int) string {
	t.Helper()
	data := filepath.Join(t.TempDir(), "data")
	makeSourceTree(t, data)
	if err := os.WriteFile(filepath.Join(data, fmt.Sprintf("random-%dM", n>>20)), randBytes(n), 0o644); err != nil {
		t.Fatal(err)
	}
	return data
}

// makeSourceTree builds the tree the clients copy: files of several sizes and modes, an
// empty and a sparse file, hard links, relative, absolute and dangling symlinks, directories
// with modes 0700, 0755 and 2775, user xattrs, ACLs, and nanosecond mtimes.
func makeSourceTree(t *testing.T, root string) {
	t.Helper()
	type file struct {
		path string
		size int
		mode os.FileMode
	}
	dirs := []struct {
		path string
		mode os.FileMode
	}{
		{".", 0o755},
		{"private", 0o700},
		{"public", 0o755},
		{"shared", os.ModeSetgid | 0o775},
		{"public/deep", 0o755},
		{"public/deep/er", 0o750},
		{"empty-dir", 0o755},
	}
	files := []file{
		{"empty", 0, 0o644},
		{"hello.txt", -1, 0o644},
		{"private/secret", 3000, 0o600},
		{"public/tool", 70000, 0o755},
		{"public/suid", 1000, os.ModeSetuid | 0o755},
		{"shared/big.bin", 3 << 20, 0o644},
		{"shared/hard-a", 5000, 0o640},
		{"public/deep/er/leaf", 12345, 0o644},
		{"name with spaces & ünïcödé 名前.txt", 77, 0o644},
	}
	for _, d := range dirs {
		p := filepath.Join(root, d.path)
		if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, d.mode); err != nil { // past the umask, with setgid
			t.Fatal(err)
		}
	}
	for _, f := range files {
		data := []byte("hello\n")
		if f.size >= 0 {
			data = randBytes(f.size)
		}
		p := filepath.Join(root, f.path)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, f.mode); err != nil { // past the umask, with setuid
			t.Fatal(err)
		}
	}
	// Sparse: 16 MiB with 4 KiB of data at 8 MiB and one byte at the end.
	sp, err := os.Create(filepath.Join(root, "sparse.img"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sp.WriteAt(randBytes(4096), 8<<20); err != nil {
		t.Fatal(err)
	}
	if _, err := sp.WriteAt([]byte{1}, 16<<20-1); err != nil {
		t.Fatal(err)
	}
	if err := sp.Close(); err != nil {
		t.Fatal(err)
	}
	for _, l := range [][2]string{{"shared/hard-a", "public/hard-b"}, {"shared/hard-a", "hard-c"}} {
		if err := os.Link(filepath.Join(root, l[0]), filepath.Join(root, l[1])); err != nil {
			t.Fatal(err)
		}
	}
	for _, l := range [][2]string{
		{"hello.txt", "link-rel"},
		{"../shared/big.bin", "public/link-up"},
		{"public/deep", "link-dir"},
		{"no/such/target", "dangling"},
		{"/nonexistent/absolute/path", "link-abs"},
	} {
		if err := os.Symlink(l[0], filepath.Join(root, l[1])); err != nil {
			t.Fatal(err)
		}
	}
	for _, x := range [][3]string{
		{"hello.txt", "user.comment", "hello, world"},
		{"shared/big.bin", "user.binary", "0x00ff10ee7f"},
		{"public", "user.dirnote", "a directory's note"},
		{"empty", "user.flag", ""},
		{"shared/hard-a", "user.linked", "shared by the three links"},
	} {
		args := []string{"-n", x[1], filepath.Join(root, x[0])}
		if x[2] != "" {
			args = []string{"-n", x[1], "-v", x[2], filepath.Join(root, x[0])}
		}
		mustRun(t, cmdOpts{}, "setfattr", args...)
	}
	acl := [][2]string{
		{"private/secret", "u:65534:r--,g:65534:rw-"},
		{"shared", "u:65534:rwx"},
	}
	for _, a := range acl {
		if out, err := tryRun(cmdOpts{}, "setfacl", "-m", a[1], filepath.Join(root, a[0])); err != nil {
			t.Logf("setfacl does not work on %s, the tree has no ACLs: %v %s", root, err, out)
			break
		}
	}
	if out, err := tryRun(cmdOpts{}, "setfacl", "-d", "-m", "g:65534:rwx", filepath.Join(root, "shared")); err != nil {
		t.Logf("no default ACL on %s: %v %s", root, err, out)
	}
	// Distinct nanosecond mtimes for everything, directories last (touching entries changes no
	// directory's mtime, but creating them did).
	var paths []string
	if err := filepath.WalkDir(root, func(p string, _ os.DirEntry, err error) error {
		paths = append(paths, p)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	base := time.Date(2021, 3, 4, 5, 6, 7, 0, time.UTC)
	for i, p := range paths {
		ts := base.Add(time.Duration(i)*time.Hour + time.Duration(123456789+i*1111))
		mustRun(t, cmdOpts{}, "touch", "-h", "-d", ts.Format("2006-01-02 15:04:05.000000000 -0700"), p)
	}
}

// requireRsyncSame fails unless an rsync dry run from a to b finds nothing to change:
// contents by checksum, modes, times, hard links, ACLs and xattrs, and no extra files.
func requireRsyncSame(t *testing.T, a, b string) {
	t.Helper()
	out := mustRun(t, cmdOpts{}, "rsync", "-aHAXn", "--checksum", "--delete", "--itemize-changes", a+"/", b+"/")
	if strings.TrimSpace(out) != "" {
		t.Errorf("rsync -aHAXn --checksum --itemize-changes %s/ %s/ finds differences:\n%s", a, b, tail(out, 40))
	}
}

// requireHardLinked fails unless the paths under root are one inode.
func requireHardLinked(t *testing.T, root string, paths ...string) {
	t.Helper()
	first, err := os.Lstat(filepath.Join(root, paths[0]))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range paths[1:] {
		fi, err := os.Lstat(filepath.Join(root, p))
		if err != nil {
			t.Fatal(err)
		}
		if !os.SameFile(first, fi) {
			t.Errorf("%s and %s under %s are not hard links of one file", paths[0], p, root)
		}
	}
}

// dropRoot removes the line for the root directory from a manifest.
func dropRoot(lines []string) []string {
	var out []string
	for _, l := range lines {
		if !strings.HasPrefix(l, `"." `) {
			out = append(out, l)
		}
	}
	return out
}

func gitRunner(t *testing.T) func(args ...string) string {
	env := []string{"GIT_CONFIG_NOSYSTEM=1", "HOME=" + t.TempDir(), "GIT_TERMINAL_PROMPT=0"}
	return func(args ...string) string {
		t.Helper()
		args = append([]string{"-c", "user.name=Integration Test", "-c", "user.email=itest@example.invalid",
			"-c", "init.defaultBranch=main"}, args...)
		return mustRun(t, cmdOpts{Env: env}, "git", args...)
	}
}

// writeGitWork writes a small source tree into a work tree; generation 2 changes some of it.
func writeGitWork(t *testing.T, dir string, gen int) {
	t.Helper()
	put := func(rel string, data []byte, mode os.FileMode) {
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
	}
	put("README.md", []byte(fmt.Sprintf("# test repository, generation %d\n", gen)), 0o644)
	put("run.sh", []byte("#!/bin/sh\necho hi\n"), 0o755)
	if gen == 1 {
		put("docs/a.txt", []byte(strings.Repeat("documentation line\n", 500)), 0o644)
		put("assets/blob.bin", randBytes(1<<20), 0o644)
		for p := 0; p < 5; p++ {
			for f := 0; f < 20; f++ {
				put(fmt.Sprintf("pkg/p%d/f%d.go", p, f), []byte(fmt.Sprintf("package p%d\n\nconst F%d = %d\n", p, f, p*100+f)), 0o644)
			}
		}
		return
	}
	put("assets/blob.bin", randBytes(1<<20), 0o644)
	put("pkg/p0/f0.go", []byte("package p0\n\nconst F0 = -1\n"), 0o644)
}

// workTree is a manifest of a git work tree without .git and without times.
func workTree(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	for _, l := range manifest(t, dir, manifestOpts{NoMtime: true}) {
		if !strings.HasPrefix(l, `".git"`) && !strings.HasPrefix(l, `".git/`) && !strings.HasPrefix(l, `"." `) {
			out = append(out, l)
		}
	}
	return out
}

func resticRunner(t *testing.T, repo string) func(args ...string) string {
	env := []string{"RESTIC_PASSWORD=integration-test", "RESTIC_CACHE_DIR=" + t.TempDir(),
		"RESTIC_REPOSITORY=" + repo, "HOME=" + t.TempDir()}
	return func(args ...string) string {
		t.Helper()
		return mustRun(t, cmdOpts{Env: env, Timeout: 3 * time.Minute}, "restic", append([]string{"-q"}, args...)...)
	}
}
