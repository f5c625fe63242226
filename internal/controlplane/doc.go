// Package controlplane is hac serve: the API (Connect over TLS, HTTP/2 and
// HTTP/1.1), the broker that owns the queue and the pool, leases, /healthz
// and /metrics.
//
// The broker keeps the live state (nodes, queued and running jobs) in memory.
// A change is made there under its lock and its write queued, in the same
// order, for the store's group commit (store.Queue): many grants and
// releases share one fsync, and no client hears of a change before it
// committed (broker_commit.go); a failed commit makes the broker read its
// live jobs again from the store. After a restart it loads running jobs
// back with a fresh lease, and cancels queued ones, whose clients were
// connected to the old process. Its
// queue is a sched.Queue, kept in service order as jobs come and go, and
// its jobs are indexed by server, user and state, so that nothing a request
// does scans every job: a long queue costs what a short one does.
// Heartbeats and lease renewals take a lock of their own (broker.beats).
// Requests read tokens and servers through a cache that every commit
// writing the accounts flushes (accountsCache).
//
// It watches itself: /metrics has the Go runtime's and the process's
// metrics, every procedure's latency, the group commits' latency and size,
// and jobs started and ended (the queue's drain rate); /debug/pprof
// answers an admin's token only.
//
// Job lifecycle (see store.JobQueued):
//
//	hac run --Allocate--> queued --sched grant--> running --Release/JobEnded--> completed|failed
//	                        |                        |--lease expired / node lost--> lost
//	                        '--client gone--> canceled  '--hac smi --reset--> canceled
package controlplane
