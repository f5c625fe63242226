// Package workspace syncs a directory to a node and the program's changes
// back, content-addressed.
//
// The client walks its working directory into a Manifest (path, mode, size,
// mtime and SHA-256 of every file, honouring .hacignore and .gitignore). The
// node keeps a Cache of blobs by hash, asks only for the blobs it lacks, and
// materializes the tree for the job. When the job ends, Changes lists the
// files the program created or changed, which go back to the client.
// Deletions are not propagated: hac never removes a user's files.
//
// Every path that crosses the network passes CleanPath, so a manifest or a
// changed file can never name anything outside its root.
package workspace
