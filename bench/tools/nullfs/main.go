// Command nullfs is the ceiling of the FUSE path for the benchmarks: a
// go-fuse filesystem mounted with PeerDrive's options whose files copy each
// write once into a 1 MiB buffer and keep nothing else. A dd through it
// costs what the kernel and go-fuse cost, with no hashing, encryption or
// store behind them.
//
//	nullfs DIR    (as root; umount DIR to stop it)
package main

import (
	"context"
	"fmt"
	"os"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

type root struct{ fs.Inode }

type file struct {
	fs.Inode
	buf  []byte
	size uint64
}

var (
	_ fs.NodeCreater   = (*root)(nil)
	_ fs.NodeWriter    = (*file)(nil)
	_ fs.NodeGetattrer = (*file)(nil)
	_ fs.NodeSetattrer = (*file)(nil)
	_ fs.NodeFsyncer   = (*file)(nil)
	_ fs.NodeOpener    = (*file)(nil)
)

func (r *root) Create(ctx context.Context, name string, flags, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	ch := r.NewInode(ctx, &file{buf: make([]byte, 1<<20)}, fs.StableAttr{Mode: syscall.S_IFREG})
	r.AddChild(name, ch, true)
	out.Mode = syscall.S_IFREG | 0o644
	return ch, nil, 0, 0
}

func (f *file) Write(ctx context.Context, fh fs.FileHandle, data []byte, off int64) (uint32, syscall.Errno) {
	copy(f.buf, data) // the one copy a real filesystem makes
	f.size = max(f.size, uint64(off)+uint64(len(data)))
	return uint32(len(data)), 0
}

func (f *file) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.Mode = syscall.S_IFREG | 0o644
	out.Size = f.size
	return 0
}

func (f *file) Setattr(ctx context.Context, fh fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	return f.Getattr(ctx, fh, out)
}

func (f *file) Fsync(ctx context.Context, fh fs.FileHandle, flags uint32) syscall.Errno { return 0 }

func (f *file) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	return nil, 0, 0
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: nullfs DIR")
		os.Exit(2)
	}
	// The options that bear on writes are PeerDrive's (fs.MountOptions).
	opts := &fs.Options{MountOptions: fuse.MountOptions{
		FsName: "nullfs", DirectMount: true, MaxWrite: 1 << 20, MaxBackground: 64,
		Options: []string{"default_permissions"}, DisabledCapabilities: fuse.CAP_PASSTHROUGH,
	}}
	srv, err := fs.Mount(os.Args[1], &root{}, opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, "nullfs:", err)
		os.Exit(1)
	}
	srv.Wait()
}
