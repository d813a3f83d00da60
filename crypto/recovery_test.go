package crypto

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

func TestNewRecoveryKey(t *testing.T) {
	a, err := NewRecoveryKey()
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewRecoveryKey()
	if err != nil {
		t.Fatal(err)
	}
	if a.String() == b.String() {
		t.Fatal("NewRecoveryKey is not random")
	}
	if !strings.HasPrefix(a.String(), "AGE-SECRET-KEY-1") {
		t.Fatalf("unexpected identity encoding")
	}
}

func TestParseRecoveryKey(t *testing.T) {
	key := testIdentity1
	want := mustIdentity(t, key).Recipient().String()
	tests := []struct {
		name    string
		data    string
		wantErr string // substring; "" means success
	}{
		{"bare key", key, ""},
		{"bare key newline", key + "\n", ""},
		{"written file", string(formatRecoveryKeyFile(mustIdentity(t, key), time.Unix(0, 0))), ""},
		{"age-keygen style", "# created: 2024-01-01T00:00:00Z\n# public key: " + want + "\n" + key + "\n", ""},
		{"crlf", "# comment\r\n\r\n" + key + "\r\n", ""},
		{"surrounding whitespace", "  \t\n   " + key + "  \t\n\n", ""},
		{"indented comment", "   # comment\n" + key, ""},
		{"bom", "\ufeff# comment\n" + key + "\n", ""},
		{"bom before key", "\ufeff" + key, ""},
		{"empty", "", "no AGE-SECRET-KEY-1"},
		{"only comments", "# one\n# two\n\n", "no AGE-SECRET-KEY-1"},
		{"only blank", "\n\n \t\n", "no AGE-SECRET-KEY-1"},
		{"two keys", key + "\n" + testIdentity2 + "\n", "more than one key"},
		{"same key twice", key + "\n" + key + "\n", "more than one key"},
		{"garbage line", "# c\nhello\n" + key, "line 2: unexpected content"},
		{"public key line", want + "\n" + key, "line 1: unexpected content"},
		{"bad checksum", key[:len(key)-1] + "Q", "line 1: malformed secret key"},
		{"truncated key", key[:len(key)-5], "line 1: malformed secret key"},
		{"lowercase key", strings.ToLower(key), "unexpected content"},
		{"mixed case key", key[:20] + strings.ToLower(key[20:]), "malformed secret key"},
		{"key with comment suffix", key + " # mine", "malformed secret key"},
		{"post-quantum key", "AGE-SECRET-KEY-PQ-1XXXX", "unsupported key type"},
		{"plugin key", "AGE-PLUGIN-YUBIKEY-1XXXX", "unsupported key type"},
		{"invalid utf8", "# \xff\n" + key, "not valid UTF-8"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := ParseRecoveryKey([]byte(tt.data))
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("ParseRecoveryKey: %v", err)
				}
				if id.Recipient().String() != want {
					t.Fatal("parsed a different key")
				}
				return
			}
			if err == nil {
				t.Fatalf("ParseRecoveryKey succeeded, want error containing %q", tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %q, want it to contain %q", err, tt.wantErr)
			}
			if strings.Contains(err.Error(), key[16:]) || strings.Contains(strings.ToUpper(err.Error()), key[16:]) {
				t.Fatalf("error leaks key material: %q", err)
			}
		})
	}
}

func TestWriteRecoveryKeyFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "recovery.txt")
	id, err := NewRecoveryKey()
	if err != nil {
		t.Fatal(err)
	}
	before := time.Now().Add(-time.Second)
	if err := WriteRecoveryKeyFile(path, id); err != nil {
		t.Fatal(err)
	}

	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if runtime.GOOS != "windows" && fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, want 0600", fi.Mode().Perm())
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(data), "\n")
	if len(lines) != 6 || lines[5] != "" {
		t.Fatalf("want 5 newline-terminated lines, got %q", data)
	}
	if lines[0] != "# PeerDrive recovery key" {
		t.Errorf("line 1 = %q", lines[0])
	}
	created, ok := strings.CutPrefix(lines[1], "# created: ")
	if !ok {
		t.Errorf("line 2 = %q", lines[1])
	} else if ts, err := time.Parse(time.RFC3339, created); err != nil {
		t.Errorf("created time: %v", err)
	} else if ts.Before(before) || ts.After(time.Now().Add(time.Second)) {
		t.Errorf("created time %v is not now", ts)
	}
	if lines[2] != "# public key: "+id.Recipient().String() {
		t.Errorf("line 3 = %q", lines[2])
	}
	if !strings.HasPrefix(lines[3], "# Keep a copy off this machine: ") {
		t.Errorf("line 4 = %q", lines[3])
	}
	if lines[4] != id.String() {
		t.Errorf("line 5 is not the secret key")
	}
	parsed, err := ParseRecoveryKey(data)
	if err != nil {
		t.Fatal(err)
	}
	if parsed.String() != id.String() {
		t.Fatal("file does not parse back to the same key")
	}

	// No temporary files are left behind.
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		t.Fatalf("directory holds %d entries, want 1", len(entries))
	}

	// A second write refuses and leaves the first file alone.
	other, err := NewRecoveryKey()
	if err != nil {
		t.Fatal(err)
	}
	err = WriteRecoveryKeyFile(path, other)
	if !errors.Is(err, fs.ErrExist) {
		t.Fatalf("overwrite: err = %v, want fs.ErrExist", err)
	}
	again, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(again) != string(data) {
		t.Fatal("refused write still changed the file")
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Fatalf("refused write left %d entries", len(entries))
	}
}

func TestWriteRecoveryKeyFileRefuses(t *testing.T) {
	id := mustIdentity(t, testIdentity1)
	dir := t.TempDir()

	existing := filepath.Join(dir, "existing")
	if err := os.WriteFile(existing, []byte("precious"), 0o644); err != nil {
		t.Fatal(err)
	}
	subdir := filepath.Join(dir, "subdir")
	if err := os.Mkdir(subdir, 0o755); err != nil {
		t.Fatal(err)
	}
	dangling := filepath.Join(dir, "dangling")
	if err := os.Symlink(filepath.Join(dir, "nowhere"), dangling); err != nil {
		t.Skipf("symlinks unsupported: %v", err)
	}

	tests := []struct {
		name      string
		path      string
		wantExist bool
	}{
		{"existing file", existing, true},
		{"existing directory", subdir, true},
		{"dangling symlink", dangling, true},
		{"missing directory", filepath.Join(dir, "missing", "key"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := WriteRecoveryKeyFile(tt.path, id)
			if err == nil {
				t.Fatal("WriteRecoveryKeyFile succeeded")
			}
			if errors.Is(err, fs.ErrExist) != tt.wantExist {
				t.Fatalf("err = %v, errors.Is(fs.ErrExist) = %v, want %v", err, !tt.wantExist, tt.wantExist)
			}
		})
	}
	if data, _ := os.ReadFile(existing); string(data) != "precious" {
		t.Fatal("existing file changed")
	}
	if _, err := os.Lstat(filepath.Join(dir, "nowhere")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatal("wrote through a dangling symlink")
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 3 {
		t.Fatalf("directory holds %d entries, want 3 (no temporary files)", len(entries))
	}
}

func TestWriteRecoveryKeyFileRelative(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	id := mustIdentity(t, testIdentity1)
	if err := WriteRecoveryKeyFile("key.txt", id); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(dir, "key.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ParseRecoveryKey(data); err != nil {
		t.Fatal(err)
	}
	if err := WriteRecoveryKeyFile("key.txt", id); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("err = %v, want fs.ErrExist", err)
	}
	if err := WriteRecoveryKeyFile("nil.txt", nil); err == nil {
		t.Fatal("nil identity accepted")
	}
}
