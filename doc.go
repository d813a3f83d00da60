// Package peerdrive is PeerDrive's vocabulary: the identifiers and records that
// every other package speaks (inode numbers, chunk IDs, inodes, directory
// entries, chunk references), with their versioned CBOR encodings. It imports
// nothing of ours. docs/format.md specifies every record byte for byte.
package peerdrive
