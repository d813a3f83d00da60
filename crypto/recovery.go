package crypto

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"
	"unicode/utf8"

	"filippo.io/age"
)

// recoveryKeyPrefix starts the one line of a recovery key file that holds the
// secret key.
const recoveryKeyPrefix = "AGE-SECRET-KEY-1"

// NewRecoveryKey generates a new recovery key: a fresh age X25519 identity.
func NewRecoveryKey() (*age.X25519Identity, error) {
	id, err := age.GenerateX25519Identity()
	if err != nil {
		return nil, fmt.Errorf("crypto: generate recovery key: %w", err)
	}
	return id, nil
}

// ParseRecoveryKey parses the contents of a recovery key file, as written by
// [WriteRecoveryKeyFile] or by age-keygen.
//
// Lines starting with '#' and blank lines are ignored, surrounding whitespace
// on a line, CRLF line endings and a leading UTF-8 byte order mark are
// tolerated, and exactly one line must hold an "AGE-SECRET-KEY-1..." key. Any
// other content, no key, or more than one key is an error. Error messages
// never include the key material.
func ParseRecoveryKey(data []byte) (*age.X25519Identity, error) {
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf"))
	if !utf8.Valid(data) {
		return nil, errors.New("crypto: recovery key file is not valid UTF-8")
	}
	var (
		id     *age.X25519Identity
		idLine int
	)
	for n, line := range strings.Split(string(data), "\n") {
		lineNo := n + 1
		line = strings.TrimSpace(line)
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
			continue
		case strings.HasPrefix(line, recoveryKeyPrefix):
			if id != nil {
				return nil, fmt.Errorf("crypto: recovery key file has more than one key (lines %d and %d)", idLine, lineNo)
			}
			parsed, err := age.ParseX25519Identity(line)
			if err != nil {
				// age's errors do not echo the key.
				return nil, fmt.Errorf("crypto: recovery key file line %d: %v", lineNo, err)
			}
			id, idLine = parsed, lineNo
		case strings.HasPrefix(line, "AGE-"):
			return nil, fmt.Errorf("crypto: recovery key file line %d: unsupported key type (want %s...)", lineNo, recoveryKeyPrefix)
		default:
			// Do not echo the line: it may be a mangled secret key.
			return nil, fmt.Errorf("crypto: recovery key file line %d: unexpected content (want a comment or a %s... key)", lineNo, recoveryKeyPrefix)
		}
	}
	if id == nil {
		return nil, fmt.Errorf("crypto: recovery key file has no %s... key", recoveryKeyPrefix)
	}
	return id, nil
}

// formatRecoveryKeyFile returns the contents WriteRecoveryKeyFile writes.
func formatRecoveryKeyFile(id *age.X25519Identity, created time.Time) []byte {
	var b strings.Builder
	b.WriteString("# PeerDrive recovery key\n")
	fmt.Fprintf(&b, "# created: %s\n", created.Format(time.RFC3339))
	fmt.Fprintf(&b, "# public key: %s\n", id.Recipient())
	b.WriteString("# Keep a copy off this machine: without it the drive cannot be recovered, and anyone holding it can read the drive.\n")
	b.WriteString(id.String())
	b.WriteString("\n")
	return []byte(b.String())
}

// WriteRecoveryKeyFile writes id to a new file at path, with mode 0600, in
// the format
//
//	# PeerDrive recovery key
//	# created: 2006-01-02T15:04:05Z
//	# public key: age1...
//	# Keep a copy off this machine: ...
//	AGE-SECRET-KEY-1...
//
// It never overwrites: if path exists the error wraps [fs.ErrExist]. The file
// is written durably and atomically: the contents go to a temporary file in
// the same directory, which is synced and then linked (or, where hard links
// are unsupported, renamed) into place, and the directory is synced. A crash
// leaves either no file at path or the complete file.
func WriteRecoveryKeyFile(path string, id *age.X25519Identity) error {
	if id == nil {
		return errors.New("crypto: write recovery key file: nil identity")
	}
	if _, err := os.Lstat(path); err == nil {
		return fmt.Errorf("crypto: write recovery key file %s: %w", path, fs.ErrExist)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("crypto: write recovery key file: %w", err)
	}

	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	tmp, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return fmt.Errorf("crypto: write recovery key file: %w", err)
	}
	tmpName := tmp.Name()
	published := false
	defer func() {
		if tmp != nil {
			tmp.Close()
		}
		if !published {
			os.Remove(tmpName)
		}
	}()

	// CreateTemp already uses 0600; be explicit in case that ever changes.
	if err := tmp.Chmod(0o600); err != nil && runtime.GOOS != "windows" {
		return fmt.Errorf("crypto: write recovery key file: %w", err)
	}
	if _, err := tmp.Write(formatRecoveryKeyFile(id, time.Now())); err != nil {
		return fmt.Errorf("crypto: write recovery key file: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("crypto: write recovery key file: %w", err)
	}
	closeErr := tmp.Close()
	tmp = nil
	if closeErr != nil {
		return fmt.Errorf("crypto: write recovery key file: %w", closeErr)
	}

	if err := publishNoReplace(tmpName, path); err != nil {
		return err
	}
	published = true
	// After a link the temporary name is a second link to the file; after a
	// rename it is already gone. Remove it before syncing the directory so
	// no stray copy of the key survives a crash.
	if err := os.Remove(tmpName); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("crypto: write recovery key file: remove temporary file: %w", err)
	}
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("crypto: write recovery key file: sync directory: %w", err)
	}
	return nil
}

// publishNoReplace makes the file at tmp appear at path without ever
// replacing an existing path. A hard link fails atomically if path exists;
// on filesystems without hard links it falls back to checking and renaming.
func publishNoReplace(tmp, path string) error {
	linkErr := os.Link(tmp, path)
	if linkErr == nil {
		return nil
	}
	if _, err := os.Lstat(path); err == nil {
		return fmt.Errorf("crypto: write recovery key file %s: %w", path, fs.ErrExist)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("crypto: write recovery key file: %w (link: %v)", err, linkErr)
	}
	return nil
}

// syncDir fsyncs a directory so that a new entry in it is durable. Windows
// cannot sync directories, and does not need to.
func syncDir(dir string) error {
	if runtime.GOOS == "windows" {
		return nil
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}
