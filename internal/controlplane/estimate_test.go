package controlplane

import (
	"fmt"
	"testing"
	"time"

	"github.com/hac-project/hac/internal/store"
)

// TestEstimateStart: running jobs are expected to hold the pool for the
// typical run of their own model and command, and the waiting job's own
// kind spaces the places beyond them; an estimate says what it rests on.
func TestEstimateStart(t *testing.T) {
	now := time.Unix(10000, 0)
	b := &broker{cfg: Config{Now: func() time.Time { return now }}, jobs: map[int64]*jobState{},
		holders: map[int64]*jobState{}, running: map[int64]*jobState{}, waitingOf: map[int64]int{}}
	short := &jobState{Job: store.Job{ID: 9, Model: "small.16gb", Command: "python3 eval.py"}}
	if _, _, ok := b.estimateStartLocked(short, 1); ok {
		t.Fatal("an estimate without history")
	}
	for _, d := range []time.Duration{time.Minute, time.Minute, 2 * time.Minute} {
		b.runTimes.add(0, "small.16gb", "python3 eval.py", d)
	}
	for _, d := range []time.Duration{time.Hour, time.Hour, 2 * time.Hour} {
		b.runTimes.add(0, "small.16gb", "python3 train.py", d)
	}
	// Two running trainings: one 10 minutes in, one overdue.
	b.track(&jobState{Job: store.Job{ID: 1, ServerID: 1, State: store.JobRunning, Model: "small.16gb", Command: "python3 train.py", AllocatedAt: now.Add(-10 * time.Minute)}})
	b.track(&jobState{Job: store.Job{ID: 2, ServerID: 2, State: store.JobRunning, Model: "small.16gb", Command: "python3 train.py", AllocatedAt: now.Add(-3 * time.Hour)}})
	for pos, want := range map[int]time.Time{
		1: now,                                   // the overdue training may end any moment
		2: now.Add(50 * time.Minute),             // the other after its typical hour, not the short runs' minute
		3: now.Add(50*time.Minute + time.Minute), // then one more run of the waiting job's own kind
	} {
		got, basis, ok := b.estimateStartLocked(short, pos)
		if !ok || !got.Equal(want) || basis != (estimateBasis{3, "command"}) {
			t.Errorf("position %d: %v (%+v), want %v", pos, got.Sub(now), basis, want.Sub(now))
		}
	}
	// Another user's runs of the same command are not its own.
	if _, basis, _ := b.estimateStartLocked(&jobState{Job: store.Job{UserID: 7, Model: "small.16gb", Command: "python3 eval.py"}}, 1); basis.of != "model" {
		t.Errorf("another user's estimate rests on %+v", basis)
	}
	// A command never seen goes by its model, then by the pool.
	if _, basis, _ := b.estimateStartLocked(&jobState{Job: store.Job{Model: "small.16gb", Command: "new"}}, 1); basis != (estimateBasis{6, "model"}) {
		t.Errorf("a new command's estimate rests on %+v", basis)
	}
	if _, basis, _ := b.estimateStartLocked(&jobState{Job: store.Job{Model: "4xlarge.384gb", Command: "new"}}, 1); basis != (estimateBasis{6, "pool"}) {
		t.Errorf("a new model's estimate rests on %+v", basis)
	}
}

// TestRunTimesBounded: a tenant making up a command for every run costs a
// bounded memory, and evicts the kinds used longest ago.
func TestRunTimesBounded(t *testing.T) {
	var r runTimes
	for i := range 3 {
		r.add(0, "m", "kept", time.Duration(i+1)*time.Minute)
	}
	for i := range 3 * maxRunKinds {
		r.add(0, "m", fmt.Sprint("spam ", i), time.Second)
		if i%100 == 0 {
			r.add(0, "m", "kept", 2*time.Minute) // in use: never the oldest
		}
	}
	if len(r.byKey) > maxRunKinds || len(r.pool.d) > maxRunTimes {
		t.Fatalf("%d kinds, %d pool samples", len(r.byKey), len(r.pool.d))
	}
	if d, basis, ok := r.typical(0, "m", "kept"); !ok || d != 2*time.Minute || basis.of != "command" {
		t.Fatalf("the command in use was evicted: %v %+v %v", d, basis, ok)
	}
}
