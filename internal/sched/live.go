package sched

import (
	"cmp"
	"errors"
	"slices"
)

// Queue is the waiting jobs, kept in service order as they come and go,
// so that a pass costs what it decides (the grants, and one placement that
// does not fit), not the queue's length, and a job's place is found in
// O(log n). Its decisions are Schedule's (the reference, checked against
// it in tests): only the first waiting job of a server whose accelerator
// is free competes for the pool (its head); the other jobs of a server
// wait as Busy; heads are served in order until one does not fit, which
// blocks every later head, and Position is a head's place in that line.
//
// A Queue is not safe for concurrent use.
type Queue struct {
	jobs    map[int64]*serverJobs // by job ID: its server's entry
	servers map[int64]*serverJobs
	heads   []Job // the first waiting job of each free server, in order
}

// serverJobs is one server's waiting jobs, in order, and whether a job of
// the server holds its accelerator.
type serverJobs struct {
	id   int64
	jobs []Job
	held bool
}

// NewQueue returns an empty queue.
func NewQueue() *Queue {
	return &Queue{jobs: map[int64]*serverJobs{}, servers: map[int64]*serverJobs{}}
}

// before orders a and b as they are served: priority, then arrival (then
// ID, so that two jobs never compare equal: the searches need one place
// per job).
func before(a, b Job) int {
	if c := cmp.Compare(b.Priority, a.Priority); c != 0 {
		return c
	}
	if c := cmp.Compare(a.Seq, b.Seq); c != 0 {
		return c
	}
	return cmp.Compare(a.ID, b.ID)
}

func (q *Queue) server(id int64) *serverJobs {
	s := q.servers[id]
	if s == nil {
		s = &serverJobs{id: id}
		q.servers[id] = s
	}
	return s
}

// forget drops a server's entry once it has nothing to remember.
func (q *Queue) forget(s *serverJobs) {
	if len(s.jobs) == 0 && !s.held {
		delete(q.servers, s.id)
	}
}

// head is the server's job that competes for the pool, if any.
func (s *serverJobs) head() (Job, bool) {
	if s.held || len(s.jobs) == 0 {
		return Job{}, false
	}
	return s.jobs[0], true
}

func (q *Queue) addHead(j Job) {
	i, _ := slices.BinarySearchFunc(q.heads, j, before)
	q.heads = slices.Insert(q.heads, i, j)
}

func (q *Queue) dropHead(j Job) {
	if i, ok := slices.BinarySearchFunc(q.heads, j, before); ok {
		q.heads = slices.Delete(q.heads, i, i+1)
	}
}

// change runs f on server s, keeping heads in step with s's head.
func (q *Queue) change(s *serverJobs, f func()) {
	old, had := s.head()
	f()
	now, has := s.head()
	if had != has || (had && old.ID != now.ID) {
		if had {
			q.dropHead(old)
		}
		if has {
			q.addHead(now)
		}
	}
	q.forget(s)
}

// Push adds a waiting job. Its ID must be new; Priority and Seq must not
// change while it waits.
func (q *Queue) Push(j Job) {
	s := q.server(j.Server)
	q.jobs[j.ID] = s
	q.change(s, func() {
		i, _ := slices.BinarySearchFunc(s.jobs, j, before)
		s.jobs = slices.Insert(s.jobs, i, j)
	})
}

// Remove takes a waiting job out (it was withdrawn or canceled); it
// reports whether the job was waiting.
func (q *Queue) Remove(id int64) bool {
	s := q.jobs[id]
	if s == nil {
		return false
	}
	delete(q.jobs, id)
	q.change(s, func() {
		s.jobs = slices.DeleteFunc(s.jobs, func(j Job) bool { return j.ID == id })
	})
	return true
}

// Hold records that a job of server holds its accelerator (a job that was
// running before the queue was built); Pass holds a granted job's server.
func (q *Queue) Hold(server int64) {
	s := q.server(server)
	q.change(s, func() { s.held = true })
}

// Free records that the server's accelerator was released.
func (q *Queue) Free(server int64) {
	if s := q.servers[server]; s != nil {
		q.change(s, func() { s.held = false })
	}
}

// Pass serves the queue on snap: heads in order until one does not fit.
// Granted and rejected jobs leave the queue, and a granted job's server is
// held; Result.Waits stays empty (Wait tells a job's place). snap is
// changed during the pass and restored before Pass returns, as Schedule
// does; the caller applies the grants once they are committed.
func (q *Queue) Pass(snap *Snapshot) Result {
	var res Result
	defer func() {
		for _, g := range res.Grants {
			Release(snap, g.Plan)
		}
	}()
	for len(q.heads) > 0 {
		j := q.heads[0]
		p, err := Place(snap, j.MemoryMiB)
		if errors.Is(err, ErrNoFit) {
			break
		}
		s := q.jobs[j.ID]
		delete(q.jobs, j.ID)
		q.change(s, func() {
			s.jobs = s.jobs[1:] // j is the server's head
			s.held = err == nil
		})
		if err != nil {
			res.Rejects = append(res.Rejects, Reject{JobID: j.ID, Err: err})
			continue
		}
		Apply(snap, p)
		res.Grants = append(res.Grants, Grant{JobID: j.ID, Plan: p})
	}
	return res
}

// Wait says why a waiting job waits and, for PoolFull, its 1-based place
// among the jobs waiting for the pool; ok is false for a job not waiting.
// It is true after a Pass: the first head is the one that did not fit.
func (q *Queue) Wait(id int64) (w Wait, ok bool) {
	s := q.jobs[id]
	if s == nil {
		return Wait{}, false
	}
	if h, ok := s.head(); !ok || h.ID != id {
		return Wait{JobID: id, Reason: Busy}, true
	}
	i, _ := slices.BinarySearchFunc(q.heads, s.jobs[0], before)
	return Wait{JobID: id, Reason: PoolFull, Position: i + 1}, true
}

// First is the first waiting job of server, if any.
func (q *Queue) First(server int64) (Job, bool) {
	s := q.servers[server]
	if s == nil || len(s.jobs) == 0 {
		return Job{}, false
	}
	return s.jobs[0], true
}

// Next is the job first in line for the pool (PoolFull, position 1), if
// any.
func (q *Queue) Next() (Job, bool) {
	if len(q.heads) == 0 {
		return Job{}, false
	}
	return q.heads[0], true
}

// Len is the number of waiting jobs.
func (q *Queue) Len() int { return len(q.jobs) }

// PoolWaiting is the number of jobs waiting for the pool (PoolFull).
func (q *Queue) PoolWaiting() int { return len(q.heads) }
