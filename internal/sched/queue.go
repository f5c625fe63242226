package sched

import (
	"cmp"
	"errors"
	"slices"
)

// Job is a request waiting in the queue.
type Job struct {
	ID        int64 // the store's job id
	Server    int64 // the store's server id: one job of a server at a time
	Priority  int   // -99..99, higher first
	Seq       int64 // arrival order, lower first
	MemoryMiB int64
}

// Reason says why a job waits.
type Reason int

const (
	// Busy: another job of the same server holds its accelerator.
	Busy Reason = iota + 1
	// PoolFull: the pool cannot fit the job now.
	PoolFull
)

// Wait is a job that keeps waiting, and why.
type Wait struct {
	JobID  int64
	Reason Reason
	// Position is the 1-based place among jobs waiting for the pool
	// (PoolFull only).
	Position int
}

// Grant is a job that may start, with its plan.
type Grant struct {
	JobID int64
	Plan  Plan
}

// Reject is a job that can never be served, with the reason.
type Reject struct {
	JobID int64
	Err   error
}

// Result is one scheduling pass's decisions.
type Result struct {
	Grants  []Grant
	Waits   []Wait
	Rejects []Reject
}

// Order sorts jobs into the order the queue serves them: priority, then
// arrival.
func Order(jobs []Job) {
	slices.SortStableFunc(jobs, func(a, b Job) int {
		if c := cmp.Compare(b.Priority, a.Priority); c != 0 {
			return c
		}
		return cmp.Compare(a.Seq, b.Seq)
	})
}

// Schedule runs one pass over queue. busy names the servers whose
// accelerator is held now. Neither queue nor busy is changed; snap is
// changed during the pass and restored before Schedule returns, so that its
// index stays warm for the next pass (it is not safe for concurrent use).
func Schedule(snap *Snapshot, queue []Job, busy map[int64]bool) Result {
	jobs := slices.Clone(queue)
	Order(jobs)
	held := make(map[int64]bool, len(busy))
	for s, b := range busy {
		held[s] = b
	}
	var res Result
	defer func() {
		for _, g := range res.Grants {
			Release(snap, g.Plan)
		}
	}()
	blocked := false
	position := 0
	for _, j := range jobs {
		if held[j.Server] {
			res.Waits = append(res.Waits, Wait{JobID: j.ID, Reason: Busy})
			continue
		}
		// Later jobs of the same server wait behind this one.
		held[j.Server] = true
		if blocked {
			position++
			res.Waits = append(res.Waits, Wait{JobID: j.ID, Reason: PoolFull, Position: position})
			continue
		}
		p, err := Place(snap, j.MemoryMiB)
		switch {
		case err == nil:
			Apply(snap, p)
			res.Grants = append(res.Grants, Grant{JobID: j.ID, Plan: p})
		case errors.Is(err, ErrNoFit):
			blocked = true
			position++
			res.Waits = append(res.Waits, Wait{JobID: j.ID, Reason: PoolFull, Position: position})
		default:
			held[j.Server] = false
			res.Rejects = append(res.Rejects, Reject{JobID: j.ID, Err: err})
		}
	}
	return res
}

// Release returns a plan's placements to snap: the inverse of Apply.
func Release(snap *Snapshot, p Plan) { Apply(snap, negate(p)) }

// negate returns the plan that undoes p when applied.
func negate(p Plan) Plan {
	n := Plan{Placements: make([]Placement, len(p.Placements))}
	for i, pl := range p.Placements {
		pl.MemoryMiB = -pl.MemoryMiB
		n.Placements[i] = pl
	}
	return n
}
