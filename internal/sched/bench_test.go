package sched

import (
	"fmt"
	"testing"
)

// bigPool is 1,000 nodes of 8 x 80 GiB GPUs, about half of them busy: every
// third GPU holds a 16 GiB share and every fifth is held whole.
func bigPool() *Snapshot {
	s := &Snapshot{}
	for i := 0; i < 1000; i++ {
		n := Node{Name: fmt.Sprintf("node%04d", i)}
		for j := 0; j < 8; j++ {
			g := GPU{UUID: fmt.Sprintf("GPU-%d-%d", i, j), MemoryMiB: 80 * gib}
			switch k := i*8 + j; {
			case k%5 == 0:
				g.AllocatedMiB = g.MemoryMiB
			case k%3 == 0:
				g.AllocatedMiB = 16 * gib
			}
			n.GPUs = append(n.GPUs, g)
		}
		s.Nodes = append(s.Nodes, n)
	}
	return s
}

// BenchmarkPlace is one placement decision on the 8,000-GPU snapshot, for
// each kind of request. The baseline is one pass that only reads every GPU
// of the snapshot, the least any decision over it can cost.
func BenchmarkPlace(b *testing.B) {
	snap := bigPool()
	for _, gib := range []int64{16, 96, 384} {
		b.Run(fmt.Sprintf("model=%dGiB", gib), func(b *testing.B) {
			for b.Loop() {
				if _, err := Place(snap, gib*1024); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "decisions/s")
		})
	}
	b.Run("baseline=scan", func(b *testing.B) {
		var free int64
		for b.Loop() {
			for _, n := range snap.Nodes {
				for _, g := range n.GPUs {
					free += g.Free()
				}
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "scans/s")
		_ = free
	})
}

// BenchmarkDecideApplyRelease is a decision that changes the pool: place,
// apply, then release again (so the snapshot stays the same size), with
// the index kept current throughout.
func BenchmarkDecideApplyRelease(b *testing.B) {
	snap := bigPool()
	for b.Loop() {
		p, err := Place(snap, 96*gib)
		if err != nil {
			b.Fatal(err)
		}
		Apply(snap, p)
		Apply(snap, negate(p))
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "decisions/s")
}

// BenchmarkSchedulePass is a whole pass over a queue of 100 mixed jobs:
// warm, on a snapshot kept from pass to pass, and cold, on a snapshot
// copied fresh (its index built from nothing) for each pass.
func BenchmarkSchedulePass(b *testing.B) {
	sizes := []int64{16, 32, 96, 16, 384}
	var queue []Job
	for i := 0; i < 100; i++ {
		queue = append(queue, Job{ID: int64(i), Server: int64(i), Seq: int64(i), MemoryMiB: sizes[i%len(sizes)] * gib})
	}
	b.Run("warm", func(b *testing.B) {
		snap := bigPool()
		for b.Loop() {
			Schedule(snap, queue, nil)
		}
		b.ReportMetric(float64(b.N*len(queue))/b.Elapsed().Seconds(), "decisions/s")
	})
	b.Run("cold", func(b *testing.B) {
		snap := bigPool()
		for b.Loop() {
			Schedule(snap.Clone(), queue, nil)
		}
		b.ReportMetric(float64(b.N*len(queue))/b.Elapsed().Seconds(), "decisions/s")
	})
}
