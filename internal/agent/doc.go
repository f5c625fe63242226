// Package agent is hac agent: it enrolls a GPU node once (Enroll trades the
// join token of hac node add for the node's own credential), registers it
// with the control plane, heartbeats, and serves the worker API that hac
// run connects to with a ticket (checked before any body is read). For
// each job it takes a uid of its own, receives the workspace (only the
// blobs its size-bounded cache lacks) as a private copy, runs the program
// with the runner in the job's sandbox with CUDA_VISIBLE_DEVICES naming the
// granted GPUs and only their device nodes openable, relays stdio, signals
// and window sizes, reports the exit to the control plane, and sends back
// the files the program created or changed.
//
// A job dies when its client disconnects, when the control plane says its
// lease is gone (heartbeat stop list), when the agent stops, or when the
// node is removed from the pool (its credential revoked).
package agent
