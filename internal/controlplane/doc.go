// Package controlplane is hac serve: the API (Connect over HTTP/1.1 and h2c),
// the broker that owns the queue and the pool, leases, /healthz and /metrics.
//
// The broker keeps the live state (nodes, queued and running jobs) in memory
// and writes every change to the store in one transaction before it takes
// effect; after a restart it loads running jobs back with a fresh lease, and
// cancels queued ones, whose clients were connected to the old process.
//
// Job lifecycle (see store.JobQueued):
//
//	hac run --Allocate--> queued --sched grant--> running --Release/JobEnded--> completed|failed
//	                        |                        |--lease expired / node lost--> lost
//	                        '--client gone--> canceled  '--hac smi --reset--> canceled
package controlplane
