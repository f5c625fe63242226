// Package cli is the hac command line: one file per command, every listing
// through package output, and Main as the only entry point
// (cmd/hac/main.go). The binary also answers to the names hac-smi and
// hac-switch-model.
package cli
