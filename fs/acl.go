package fs

import (
	"encoding/binary"
	"errors"
	"fmt"
	"syscall"

	"github.com/peerdrive/peerdrive"
)

// POSIX ACLs. The mount asks the kernel for FUSE_POSIX_ACL: the kernel
// then enforces ACLs, and leaves to the filesystem what Linux filesystems
// do in posix_acl.c: an access ACL and the mode mirror each other (setting
// one sets the other), and a directory's default ACL is inherited by what
// is made in it, in place of the umask.
const (
	aclAccess  = "system.posix_acl_access"
	aclDefault = "system.posix_acl_default"
)

// The xattr form of an ACL (linux/posix_acl_xattr.h): a little-endian
// version 2, then entries of tag, permission and id.
const (
	aclVersion   = 2
	aclEntrySize = 8

	aclUserObj  = 0x01
	aclUser     = 0x02
	aclGroupObj = 0x04
	aclGroup    = 0x08
	aclMask     = 0x10
	aclOther    = 0x20
)

type aclEntry struct {
	tag  uint16
	perm uint16
	id   uint32
}

type acl []aclEntry

var errBadACL = errors.New("malformed POSIX ACL")

// parseACL decodes and checks an ACL as the kernel does: entries sorted by
// tag, one of each base entry, a mask where named entries are.
func parseACL(b []byte) (acl, error) {
	if len(b) < 4 || (len(b)-4)%aclEntrySize != 0 || binary.LittleEndian.Uint32(b) != aclVersion {
		return nil, errBadACL
	}
	var a acl
	var seen, prev uint16
	for p := b[4:]; len(p) > 0; p = p[aclEntrySize:] {
		e := aclEntry{binary.LittleEndian.Uint16(p), binary.LittleEndian.Uint16(p[2:]), binary.LittleEndian.Uint32(p[4:])}
		switch {
		case e.perm&^7 != 0, e.tag < prev:
			return nil, errBadACL
		case e.tag&(aclUserObj|aclGroupObj|aclMask|aclOther) != 0 && seen&e.tag != 0:
			return nil, errBadACL
		case e.tag&(aclUserObj|aclUser|aclGroupObj|aclGroup|aclMask|aclOther) == 0:
			return nil, errBadACL
		}
		seen |= e.tag
		prev = e.tag
		a = append(a, e)
	}
	const base = aclUserObj | aclGroupObj | aclOther
	if len(a) > 0 && (seen&base != base || seen&(aclUser|aclGroup) != 0 && seen&aclMask == 0) {
		return nil, errBadACL
	}
	return a, nil
}

func (a acl) bytes() []byte {
	b := make([]byte, 4, 4+aclEntrySize*len(a))
	binary.LittleEndian.PutUint32(b, aclVersion)
	for _, e := range a {
		b = binary.LittleEndian.AppendUint16(b, e.tag)
		b = binary.LittleEndian.AppendUint16(b, e.perm)
		b = binary.LittleEndian.AppendUint32(b, e.id)
	}
	return b
}

// equivMode returns mode with its permission bits set from a, and whether a
// says no more than those bits (posix_acl_equiv_mode).
func (a acl) equivMode(mode uint32) (uint32, bool) {
	var bits uint32
	equiv := true
	for _, e := range a {
		p := uint32(e.perm)
		switch e.tag {
		case aclUserObj:
			bits |= p << 6
		case aclGroupObj:
			bits |= p << 3
		case aclOther:
			bits |= p
		case aclMask:
			bits = bits&^0o070 | p<<3
			equiv = false
		default:
			equiv = false
		}
	}
	return mode&^0o777 | bits, equiv
}

// chmod sets the entries that mirror the mode (posix_acl_chmod): the owner,
// the mask (or the owning group, without a mask) and others.
func (a acl) chmod(mode uint32) {
	group := -1
	for i := range a {
		switch a[i].tag {
		case aclUserObj:
			a[i].perm = uint16(mode >> 6 & 7)
		case aclOther:
			a[i].perm = uint16(mode & 7)
		case aclGroupObj:
			if group < 0 {
				group = i
			}
		case aclMask:
			group = i
		}
	}
	if group >= 0 {
		a[group].perm = uint16(mode >> 3 & 7)
	}
}

// inherit applies a directory's default ACL a to the mode of a new node
// (posix_acl_create_masq): the ACL is masked by the mode's permission bits
// and the mode by the ACL. It returns the node's mode and its access ACL,
// nil when the mode says it all.
func (a acl) inherit(mode uint32) (uint32, acl) {
	c := make(acl, len(a))
	copy(c, a)
	equiv := true
	group := -1
	for i := range c {
		e := &c[i]
		switch e.tag {
		case aclUserObj:
			e.perm &= uint16(mode >> 6 & 7)
			mode &^= uint32(7&^e.perm) << 6
		case aclOther:
			e.perm &= uint16(mode & 7)
			mode &^= uint32(7 &^ e.perm)
		case aclGroupObj:
			if group < 0 {
				group = i
			}
		case aclMask:
			group = i
			equiv = false
		default:
			equiv = false
		}
	}
	if group >= 0 {
		c[group].perm &= uint16(mode >> 3 & 7)
		mode &^= uint32(7&^c[group].perm) << 3
	}
	if equiv {
		return mode, nil
	}
	return mode, c
}

// createACLs decides the mode and ACLs of a node made in a directory whose
// default ACL is def (nil if it has none). umask applies only without one.
func createACLs(mode, umask uint32, def []byte) (uint32, []peerdrive.Xattr, error) {
	if mode&syscall.S_IFMT == syscall.S_IFLNK {
		return mode, nil, nil
	}
	if def == nil {
		return mode &^ (umask & 0o777), nil, nil
	}
	a, err := parseACL(def)
	if err != nil {
		return 0, nil, fmt.Errorf("default ACL of the parent: %w", wrapCorrupt(err))
	}
	if len(a) == 0 {
		return mode &^ (umask & 0o777), nil, nil
	}
	mode, access := a.inherit(mode)
	var xs []peerdrive.Xattr
	if access != nil {
		xs = append(xs, peerdrive.Xattr{Name: aclAccess, Value: access.bytes()})
	}
	if mode&syscall.S_IFMT == syscall.S_IFDIR {
		xs = append(xs, peerdrive.Xattr{Name: aclDefault, Value: append([]byte(nil), def...)})
	}
	return mode, xs, nil
}
