package controlplane

import (
	"testing"
	"time"

	"github.com/hac-project/hac/internal/store"
)

func TestEstimateStart(t *testing.T) {
	now := time.Unix(10000, 0)
	b := &broker{cfg: Config{Now: func() time.Time { return now }}, jobs: map[int64]*jobState{},
		holders: map[int64]*jobState{}, running: map[int64]*jobState{}, waitingOf: map[int64]int{}}
	if _, ok := b.estimateStartLocked(1); ok {
		t.Fatal("an estimate without history")
	}
	b.runTimes = []time.Duration{time.Minute, 10 * time.Minute, 10 * time.Minute, 30 * time.Minute}
	b.typical = 10 * time.Minute // their median
	// Two running jobs: one 2 minutes in, one 20 minutes in (overdue).
	b.track(&jobState{Job: store.Job{ID: 1, ServerID: 1, State: store.JobRunning, AllocatedAt: now.Add(-2 * time.Minute)}})
	b.track(&jobState{Job: store.Job{ID: 2, ServerID: 2, State: store.JobRunning, AllocatedAt: now.Add(-20 * time.Minute)}})
	for pos, want := range map[int]time.Time{
		1: now,                       // the overdue job may end any moment
		2: now.Add(8 * time.Minute),  // the other ends after the typical 10 minutes
		3: now.Add(18 * time.Minute), // then one more typical run
	} {
		got, ok := b.estimateStartLocked(pos)
		if !ok || !got.Equal(want) {
			t.Errorf("position %d: %v, want %v", pos, got.Sub(now), want.Sub(now))
		}
	}
}
