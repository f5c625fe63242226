// Package image moves a server image's root file system to GPU nodes. Write
// makes a tree into a deterministic tar stream (entries in path order,
// numeric owners, whole-second times, hard links kept, no device nodes,
// sockets, FIFOs or extended attributes), so that the stream's SHA-256 names
// the image: its digest, which tickets carry. Unpack builds such a stream
// into a folder on a node, refusing anything that would land outside it and
// a stream whose digest is not the one asked for.
package image
