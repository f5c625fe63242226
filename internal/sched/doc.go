// Package sched decides where jobs run. It is pure: a Snapshot of the pool
// and a queue go in, grants and waiting reasons come out; no database, clock
// or network. The control plane applies a Result in one transaction.
// Schedule decides over a whole queue; Queue keeps the waiting jobs in
// service order as they come and go and makes the same decisions at the
// cost of what it decides, so a long queue costs what a short one does.
//
// Placement (SPEC P2): a request at least as large as a GPU's memory is served
// from whole GPUs, on one node when possible, else on the fewest nodes; a
// smaller request gets a share of one GPU, packed best-fit so that whole GPUs
// stay free for large models.
//
// Queue policy (SPEC P3): jobs are considered by priority (higher first), then
// arrival. A job whose server's accelerator is busy waits without blocking
// others. The first job that does not fit blocks every later job, so a large
// model is never starved by a stream of small ones.
package sched
