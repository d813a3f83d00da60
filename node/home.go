// Package node runs a PeerDrive node from its home directory: keys, the
// local store, the libp2p host, the FUSE mount and the control socket. The
// command line only parses flags and calls it.
package node

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"filippo.io/age"

	"github.com/peerdrive/peerdrive/crypto"
	pnet "github.com/peerdrive/peerdrive/net"
)

// Files of a home directory (docs/format.md, "Home directory").
const (
	RecoveryKeyFile = "recovery-key.txt"
	NodeKeyFile     = "node.key"
	DriveKeyFile    = "drive-key.age"
	StoreDir        = "store"
	ControlSocket   = "control.sock"
	AddrsFile       = "addrs"
)

// Sentinels for what the command line branches on.
var (
	ErrHomeExists = errors.New("home already initialized")
	ErrNoHome     = errors.New("home not initialized")
)

// DefaultHome is $XDG_DATA_HOME/peerdrive, or ~/.local/share/peerdrive.
func DefaultHome() string {
	if d := os.Getenv("XDG_DATA_HOME"); d != "" {
		return filepath.Join(d, "peerdrive")
	}
	h, err := os.UserHomeDir()
	if err != nil {
		h = "."
	}
	return filepath.Join(h, ".local", "share", "peerdrive")
}

// Initialized reports whether home holds an identity.
func Initialized(home string) bool {
	_, err := os.Stat(filepath.Join(home, RecoveryKeyFile))
	return err == nil
}

// Init creates the identity of a new home: a recovery key (or the one in
// fromKey, to restore a drive on a new machine), a node key and a drive key
// wrapped to the recovery key. It refuses a home that has one.
func Init(home, fromKey string) error {
	if Initialized(home) {
		return fmt.Errorf("%s: %w", home, ErrHomeExists)
	}
	if err := os.MkdirAll(home, 0o700); err != nil {
		return fmt.Errorf("create home: %w", err)
	}
	var x *age.X25519Identity
	var err error
	if fromKey != "" {
		b, rerr := os.ReadFile(fromKey)
		if rerr != nil {
			return fmt.Errorf("read recovery key: %w", rerr)
		}
		if x, err = crypto.ParseRecoveryKey(b); err != nil {
			return fmt.Errorf("%s: %w", fromKey, err)
		}
	} else if x, err = crypto.NewRecoveryKey(); err != nil {
		return err
	}
	if err := crypto.WriteRecoveryKeyFile(filepath.Join(home, RecoveryKeyFile), x); err != nil {
		return err
	}
	nk, err := pnet.NewIdentity()
	if err != nil {
		return err
	}
	if err := writeNew(filepath.Join(home, NodeKeyFile), nk, 0o600); err != nil {
		return err
	}
	if fromKey != "" {
		// The drive key of an existing drive comes back from the network
		// with the drive's root record; nothing to make here.
		return nil
	}
	dk, err := crypto.NewDriveKey()
	if err != nil {
		return err
	}
	wrapped, err := crypto.WrapDriveKey(dk, x.Recipient())
	if err != nil {
		return err
	}
	return writeNew(filepath.Join(home, DriveKeyFile), wrapped, 0o600)
}

// writeNew writes a file that must not exist yet: temp, fsync, link, fsync dir.
func writeNew(path string, data []byte, perm fs.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(perm); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Link(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// Keys are a home's secrets, opened.
type Keys struct {
	Node     []byte // marshalled libp2p key
	Recovery *age.X25519Identity
	// Drive is nil in a home made with init --from-key until the drive key
	// comes back from the network with the drive's root record.
	Drive        *crypto.Keys
	WrappedDrive []byte // contents of drive-key.age
}

// LoadKeys reads the node key and unwraps the drive key with the recovery
// key. A recovery key that does not open the drive key is ErrWrongKey.
func LoadKeys(home string) (*Keys, error) {
	if !Initialized(home) {
		return nil, fmt.Errorf("%s: %w (run 'peerdrive init')", home, ErrNoHome)
	}
	nk, err := os.ReadFile(filepath.Join(home, NodeKeyFile))
	if err != nil {
		return nil, fmt.Errorf("node key: %w", err)
	}
	idb, err := os.ReadFile(filepath.Join(home, RecoveryKeyFile))
	if err != nil {
		return nil, fmt.Errorf("recovery key: %w", err)
	}
	x, err := crypto.ParseRecoveryKey(idb)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(home, RecoveryKeyFile), err)
	}
	k := &Keys{Node: nk, Recovery: x}
	wrapped, err := os.ReadFile(filepath.Join(home, DriveKeyFile))
	if errors.Is(err, fs.ErrNotExist) {
		return k, nil // to be restored from the network
	}
	if err != nil {
		return nil, fmt.Errorf("drive key: %w", err)
	}
	if err := k.setDrive(wrapped); err != nil {
		return nil, fmt.Errorf("%s does not open %s: %w", filepath.Join(home, RecoveryKeyFile), filepath.Join(home, DriveKeyFile), err)
	}
	return k, nil
}

func (k *Keys) setDrive(wrapped []byte) error {
	dk, err := crypto.UnwrapDriveKey(wrapped, k.Recovery)
	if err != nil {
		return err
	}
	k.Drive, k.WrappedDrive = crypto.DeriveKeys(dk), wrapped
	return nil
}
