// Package controlplane is hac serve: the API (Connect over TLS, HTTP/2 and
// HTTP/1.1), the broker that owns the queue and the pool, leases, /healthz
// and /metrics.
//
// The broker keeps the live state (nodes, queued and running jobs) in memory
// and writes every change to the store in one transaction before it takes
// effect; after a restart it loads running jobs back with a fresh lease, and
// cancels queued ones, whose clients were connected to the old process. Its
// queue is a sched.Queue, kept in service order as jobs come and go, and
// its jobs are indexed by server, user and state, so that nothing a request
// does scans every job: a long queue costs what a short one does.
// Heartbeats and lease renewals take a lock of their own (broker.beats),
// never the one that submits and ends hold through their commits.
//
// Job lifecycle (see store.JobQueued):
//
//	hac run --Allocate--> queued --sched grant--> running --Release/JobEnded--> completed|failed
//	                        |                        |--lease expired / node lost--> lost
//	                        '--client gone--> canceled  '--hac smi --reset--> canceled
package controlplane
