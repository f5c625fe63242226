// Package integration holds end-to-end tests: they build the real hac
// binary and run hac serve, hac agent and the client as separate processes
// with simulated GPUs, on loopback, each test in its own folders and ports.
package integration
