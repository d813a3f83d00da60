package tree

import (
	"context"
	"errors"

	"github.com/peerdrive/peerdrive"
	"github.com/peerdrive/peerdrive/store"
)

// Xattr flags, as setxattr(2).
const (
	XattrCreate  = 1
	XattrReplace = 2
)

// GetXattr returns the value of attribute name of ino, or ErrNoData.
func (t *Tree) GetXattr(ctx context.Context, ino peerdrive.Ino, name string) ([]byte, error) {
	if t.hasNoXattrs(ino) {
		return nil, ErrNoData
	}
	var x peerdrive.Xattr
	err := t.db.View(func(tx *store.Txn) error { return t.getRecord(tx, t.xattrKey(ino, name), &x) })
	if errors.Is(err, ErrNotFound) {
		return nil, ErrNoData
	}
	if err != nil {
		return nil, err
	}
	return x.Value, nil
}

// hasNoXattrs reports whether ino is known to have no extended attributes.
func (t *Tree) hasNoXattrs(ino peerdrive.Ino) bool {
	t.mu.RLock()
	defer t.mu.RUnlock()
	e, ok := t.cache[ino]
	return ok && e.noXattrs
}

// xattrsChange is called inside update before an extended attribute of
// ino is written. t.mu is held.
func (t *Tree) xattrsChange(ino peerdrive.Ino) {
	if e, ok := t.cache[ino]; ok {
		e.noXattrs = false
	}
}

// SetXattr sets attribute name of ino, honouring XattrCreate/XattrReplace.
func (t *Tree) SetXattr(ctx context.Context, ino peerdrive.Ino, name string, value []byte, flags uint32) error {
	return t.update(ctx, int64(len(value))+512, func(tx *store.Txn, touched map[peerdrive.Ino]bool) error {
		in, err := t.mod(touched, ino)
		if err != nil {
			return err
		}
		k := t.xattrKey(ino, name)
		exists, err := tx.Has(k)
		if err != nil {
			return err
		}
		if exists && flags&XattrCreate != 0 {
			return ErrExist
		}
		if !exists && flags&XattrReplace != 0 {
			return ErrNoData
		}
		in.Ctime = Now()
		t.xattrsChange(ino)
		return t.putRecord(tx, k, &peerdrive.Xattr{Name: name, Value: value})
	})
}

// RemoveXattr deletes attribute name of ino, or returns ErrNoData.
func (t *Tree) RemoveXattr(ctx context.Context, ino peerdrive.Ino, name string) error {
	return t.update(ctx, 0, func(tx *store.Txn, touched map[peerdrive.Ino]bool) error {
		in, err := t.mod(touched, ino)
		if err != nil {
			return err
		}
		k := t.xattrKey(ino, name)
		if ok, err := tx.Has(k); err != nil {
			return err
		} else if !ok {
			return ErrNoData
		}
		in.Ctime = Now()
		return tx.Delete(k)
	})
}

// ListXattr returns the names of ino's attributes.
func (t *Tree) ListXattr(ctx context.Context, ino peerdrive.Ino) ([]string, error) {
	if t.hasNoXattrs(ino) {
		return nil, nil
	}
	var names []string
	err := t.db.View(func(tx *store.Txn) error {
		return tx.Iterate(inoKey(tagXattr, ino), nil, true, func(k, v []byte) (bool, error) {
			var x peerdrive.Xattr
			if err := t.openRecordInto(k, v, &x); err != nil {
				return false, err
			}
			names = append(names, x.Name)
			return true, nil
		})
	})
	return names, err
}

// SetAttrXattr changes ino's attributes and its extended attribute name in
// one transaction, for attributes that mirror each other (a POSIX access
// ACL and the mode). fn gets the attributes to change and the attribute's
// value (has false if unset), and returns the value to keep (keep false
// removes it).
func (t *Tree) SetAttrXattr(ctx context.Context, ino peerdrive.Ino, name string, fn func(in *peerdrive.Inode, v []byte, has bool) (nv []byte, keep bool, err error)) (peerdrive.Inode, error) {
	var out peerdrive.Inode
	err := t.update(ctx, 4096, func(tx *store.Txn, touched map[peerdrive.Ino]bool) error {
		in, err := t.mod(touched, ino)
		if err != nil {
			return err
		}
		k := t.xattrKey(ino, name)
		var x peerdrive.Xattr
		has := true
		if err := t.getRecord(tx, k, &x); errors.Is(err, ErrNotFound) {
			has = false
		} else if err != nil {
			return err
		}
		nv, keep, err := fn(in, x.Value, has)
		if err != nil {
			return err
		}
		out = *in
		switch {
		case keep:
			t.xattrsChange(ino)
			return t.putRecord(tx, k, &peerdrive.Xattr{Name: name, Value: nv})
		case has:
			return tx.Delete(k)
		}
		return nil
	})
	return out, err
}
