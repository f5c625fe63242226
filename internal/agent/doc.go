// Package agent is hac agent: it registers a GPU node with the control
// plane, heartbeats, and serves the worker API that hac run connects to with
// a ticket. For each job it receives the workspace (only the blobs its cache
// lacks), runs the program with the runner in the job's own cgroup with
// CUDA_VISIBLE_DEVICES naming the granted GPUs, relays stdio, signals and
// window sizes, reports the exit to the control plane, and sends back the
// files the program created or changed.
//
// A job dies when its client disconnects, when the control plane says its
// lease is gone (heartbeat stop list), or when the agent stops.
package agent
