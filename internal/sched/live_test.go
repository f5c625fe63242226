package sched

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"
)

// TestQueueMatchesSchedule drives a Queue and the reference (Schedule over
// the whole list, every pass) through the same random arrivals,
// withdrawals and ends, on a small pool where jobs wait, block, share
// servers and, now and then, can never fit: every pass must decide the
// same grants and rejects, and every waiting job must have the same
// reason and place.
func TestQueueMatchesSchedule(t *testing.T) {
	sizes := []int64{8, 16, 16, 40, 80, 160, 1000} // GiB; 1000 never fits
	for seed := range uint64(20) {
		r := rand.New(rand.NewPCG(seed, 7))
		snap := pool([]int64{80, 80}, []int64{40})
		q := NewQueue()
		var waiting []Job
		busy := map[int64]bool{}
		running := map[int64]Grant{} // by server
		seq := int64(0)
		for step := 0; step < 600; step++ {
			switch op := r.IntN(10); {
			case op < 5: // a job arrives
				seq++
				j := Job{ID: seq, Server: int64(r.IntN(12)), Priority: r.IntN(3) - 1, Seq: seq,
					MemoryMiB: sizes[r.IntN(len(sizes))] * gib}
				waiting = append(waiting, j)
				q.Push(j)
			case op < 7 && len(waiting) > 0: // a waiting job is withdrawn
				i := r.IntN(len(waiting))
				if !q.Remove(waiting[i].ID) {
					t.Fatalf("seed %d step %d: job %d was not waiting", seed, step, waiting[i].ID)
				}
				waiting = slices.Delete(waiting, i, i+1)
			case len(running) > 0: // a running job ends
				servers := make([]int64, 0, len(running))
				for s := range running {
					servers = append(servers, s)
				}
				slices.Sort(servers)
				s := servers[r.IntN(len(servers))]
				Release(snap, running[s].Plan)
				delete(running, s)
				delete(busy, s)
				q.Free(s)
			}
			want := Schedule(snap, waiting, busy)
			got := q.Pass(snap)
			if !reflect.DeepEqual(got.Grants, want.Grants) || !sameRejects(got.Rejects, want.Rejects) {
				t.Fatalf("seed %d step %d:\n got grants %v rejects %v\nwant grants %v rejects %v", seed, step, got.Grants, got.Rejects, want.Grants, want.Rejects)
			}
			for _, g := range want.Grants {
				Apply(snap, g.Plan)
				s := jobByID(waiting, g.JobID).Server
				running[s], busy[s] = g, true
			}
			for _, gone := range append(ids(want.Grants), rejectIDs(want.Rejects)...) {
				waiting = slices.DeleteFunc(waiting, func(j Job) bool { return j.ID == gone })
			}
			pool := 0
			for _, w := range want.Waits {
				if got, ok := q.Wait(w.JobID); !ok || got != w {
					t.Fatalf("seed %d step %d: Wait(%d) = %+v, %v; want %+v", seed, step, w.JobID, got, ok, w)
				}
				if w.Reason == PoolFull {
					pool++
				}
			}
			if q.Len() != len(waiting) || q.PoolWaiting() != pool {
				t.Fatalf("seed %d step %d: Len %d PoolWaiting %d, want %d and %d", seed, step, q.Len(), q.PoolWaiting(), len(waiting), pool)
			}
		}
		if len(q.servers) > 12 {
			t.Fatalf("seed %d: %d server entries for 12 servers", seed, len(q.servers))
		}
	}
}

func sameRejects(a, b []Reject) bool {
	return slices.Equal(rejectIDs(a), rejectIDs(b))
}

func rejectIDs(rs []Reject) []int64 {
	var out []int64
	for _, r := range rs {
		out = append(out, r.JobID)
	}
	return out
}

func ids(gs []Grant) []int64 {
	var out []int64
	for _, g := range gs {
		out = append(out, g.JobID)
	}
	return out
}

func jobByID(jobs []Job, id int64) Job {
	for _, j := range jobs {
		if j.ID == id {
			return j
		}
	}
	return Job{}
}

// BenchmarkQueuePass is the pass after one job ends, with 100 and 10,000
// jobs waiting: the incremental Queue against Schedule over the whole
// queue (the reference, as the broker ran it before).
func BenchmarkQueuePass(b *testing.B) {
	for _, n := range []int{100, 10000} {
		setup := func() (*Snapshot, []Job, map[int64]bool) {
			snap := pool(eight(80))
			var jobs []Job
			for i := 0; i < n; i++ {
				jobs = append(jobs, Job{ID: int64(i), Server: int64(i), Seq: int64(i), MemoryMiB: 16 * gib})
			}
			return snap, jobs, map[int64]bool{}
		}
		b.Run(fmt.Sprintf("waiting=%d/queue", n), func(b *testing.B) {
			snap, jobs, _ := setup()
			q := NewQueue()
			for _, j := range jobs {
				q.Push(j)
			}
			first := q.Pass(snap)
			for _, g := range first.Grants {
				Apply(snap, g.Plan)
			}
			running := first.Grants
			next := int64(n)
			for b.Loop() {
				// The oldest running job ends, a new job arrives, a pass runs.
				g := running[0]
				running = running[1:]
				Release(snap, g.Plan)
				q.Free(g.JobID) // server ids are job ids here
				q.Push(Job{ID: next, Server: next, Seq: next, MemoryMiB: 16 * gib})
				next++
				res := q.Pass(snap)
				for _, g := range res.Grants {
					Apply(snap, g.Plan)
				}
				running = append(running, res.Grants...)
			}
		})
		b.Run(fmt.Sprintf("waiting=%d/baseline=Schedule", n), func(b *testing.B) {
			snap, jobs, busy := setup()
			res := Schedule(snap, jobs, busy)
			for _, g := range res.Grants {
				Apply(snap, g.Plan)
				busy[g.JobID] = true
			}
			running := res.Grants
			jobs = jobs[len(res.Grants):]
			next := int64(n)
			for b.Loop() {
				g := running[0]
				running = running[1:]
				Release(snap, g.Plan)
				delete(busy, g.JobID)
				jobs = append(jobs, Job{ID: next, Server: next, Seq: next, MemoryMiB: 16 * gib})
				next++
				res := Schedule(snap, jobs, busy)
				for _, g := range res.Grants {
					Apply(snap, g.Plan)
					busy[g.JobID] = true
				}
				running = append(running, res.Grants...)
				jobs = jobs[len(res.Grants):]
			}
		})
	}
}
