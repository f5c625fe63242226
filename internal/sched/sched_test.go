package sched

import (
	"errors"
	"fmt"
	"reflect"
	"testing"
)

const gib = 1024

// pool builds a snapshot of nodes named n0, n1 ... with the given GPU sizes
// in GiB; GPU j of node i is "n<i>-g<j>".
func pool(nodes ...[]int64) *Snapshot {
	s := &Snapshot{}
	for i, sizes := range nodes {
		n := Node{Name: fmt.Sprintf("n%d", i)}
		for j, size := range sizes {
			n.GPUs = append(n.GPUs, GPU{UUID: fmt.Sprintf("n%d-g%d", i, j), MemoryMiB: size * gib})
		}
		s.Nodes = append(s.Nodes, n)
	}
	return s
}

func eight(size int64) []int64 { return []int64{size, size, size, size, size, size, size, size} }

// hold marks GPUs as holding the given GiB.
func hold(s *Snapshot, held map[string]int64) *Snapshot {
	for i := range s.Nodes {
		for j := range s.Nodes[i].GPUs {
			if h, ok := held[s.Nodes[i].GPUs[j].UUID]; ok {
				s.Nodes[i].GPUs[j].AllocatedMiB = h * gib
			}
		}
	}
	return s
}

func pl(node, gpu string, memGiB int64) Placement {
	return Placement{Node: node, GPU: gpu, MemoryMiB: memGiB * gib}
}

func TestPlace(t *testing.T) {
	tests := []struct {
		name string
		snap *Snapshot
		mem  int64 // GiB
		want []Placement
		err  error
	}{
		{"small model shares one GPU", pool(eight(80)), 16, []Placement{pl("n0", "n0-g0", 16)}, nil},
		{"share packs onto the fullest GPU that fits", hold(pool(eight(80)), map[string]int64{"n0-g3": 48}), 16,
			[]Placement{pl("n0", "n0-g3", 16)}, nil},
		{"share skips a GPU without room", hold(pool(eight(80)), map[string]int64{"n0-g0": 70}), 16,
			[]Placement{pl("n0", "n0-g1", 16)}, nil},
		{"model equal to a GPU takes it whole", pool(eight(16)), 16, []Placement{pl("n0", "n0-g0", 16)}, nil},
		{"large model takes whole GPUs on one node", pool(eight(80)), 96,
			[]Placement{pl("n0", "n0-g0", 80), pl("n0", "n0-g1", 80)}, nil},
		{"whole GPUs skip shared ones", hold(pool(eight(80)), map[string]int64{"n0-g0": 16}), 96,
			[]Placement{pl("n0", "n0-g1", 80), pl("n0", "n0-g2", 80)}, nil},
		{"one node preferred over a spread", hold(pool(eight(80), eight(80)),
			map[string]int64{"n0-g0": 80, "n0-g1": 80, "n0-g2": 80, "n0-g3": 80, "n0-g4": 80, "n0-g5": 80, "n0-g6": 80}), 96,
			[]Placement{pl("n1", "n1-g0", 80), pl("n1", "n1-g1", 80)}, nil},
		{"a share of a bigger GPU beats whole smaller ones", pool([]int64{32, 32, 32}, []int64{80, 80}), 64,
			[]Placement{pl("n1", "n1-g0", 64)}, nil},
		{"fewest GPUs: the node with bigger GPUs wins", pool([]int64{32, 32, 32, 32}, []int64{48, 48}), 96,
			[]Placement{pl("n1", "n1-g0", 48), pl("n1", "n1-g1", 48)}, nil},
		{"spans nodes when no single node fits", pool([]int64{80, 80}, []int64{80, 80, 80}), 384,
			[]Placement{pl("n1", "n1-g0", 80), pl("n1", "n1-g1", 80), pl("n1", "n1-g2", 80), pl("n0", "n0-g0", 80), pl("n0", "n0-g1", 80)}, nil},
		{"full pool: no fit now", hold(pool([]int64{80}), map[string]int64{"n0-g0": 80}), 16, nil, ErrNoFit},
		{"shares leave no whole GPU: no fit now", hold(pool([]int64{80, 80}), map[string]int64{"n0-g0": 16, "n0-g1": 16}), 96, nil, ErrNoFit},
		{"larger than the whole pool", pool([]int64{80, 80}), 192, nil, ErrNeverFits},
		{"empty pool", &Snapshot{}, 16, nil, ErrNeverFits},
		{"zero memory", pool(eight(80)), 0, nil, ErrBadRequest},
		{"small GPUs only: whole GPUs even for a small model", pool([]int64{16, 16}), 32,
			[]Placement{pl("n0", "n0-g0", 16), pl("n0", "n0-g1", 16)}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := tt.snap.Clone()
			got, err := Place(tt.snap, tt.mem*gib)
			if !errors.Is(err, tt.err) {
				t.Fatalf("Place error = %v, want %v", err, tt.err)
			}
			if !reflect.DeepEqual(got.Placements, tt.want) {
				t.Errorf("Place = %v, want %v", got.Placements, tt.want)
			}
			if !reflect.DeepEqual(before.Nodes, tt.snap.Nodes) {
				t.Errorf("Place changed its snapshot")
			}
		})
	}
}

func TestScheduleOrderAndBlocking(t *testing.T) {
	snap := pool([]int64{80, 80})
	queue := []Job{
		{ID: 1, Server: 1, Seq: 1, MemoryMiB: 96 * gib}, // takes both GPUs
		{ID: 2, Server: 2, Seq: 2, MemoryMiB: 16 * gib}, // blocked behind c
		{ID: 3, Server: 3, Seq: 3, Priority: 5, MemoryMiB: 160 * gib},
		{ID: 4, Server: 1, Seq: 4, MemoryMiB: 16 * gib},  // same server as a
		{ID: 5, Server: 4, Seq: 5, MemoryMiB: 999 * gib}, // never fits
	}
	before := snap.Clone()
	res := Schedule(snap, queue, nil)
	if !reflect.DeepEqual(before.Nodes, snap.Nodes) {
		t.Fatal("Schedule left its snapshot changed")
	}
	want := Result{
		Grants: []Grant{{JobID: 3, Plan: Plan{Placements: []Placement{pl("n0", "n0-g0", 80), pl("n0", "n0-g1", 80)}}}},
		Waits: []Wait{
			{JobID: 1, Reason: PoolFull, Position: 1},
			{JobID: 2, Reason: PoolFull, Position: 2},
			{JobID: 4, Reason: Busy},
			{JobID: 5, Reason: PoolFull, Position: 3},
		},
	}
	if !reflect.DeepEqual(res, want) {
		t.Fatalf("Schedule =\n%+v\nwant\n%+v", res, want)
	}
}

func TestScheduleBusyServerDoesNotBlock(t *testing.T) {
	snap := pool([]int64{80})
	queue := []Job{
		{ID: 1, Server: 1, Seq: 1, MemoryMiB: 16 * gib},
		{ID: 2, Server: 2, Seq: 2, MemoryMiB: 16 * gib},
	}
	res := Schedule(snap, queue, map[int64]bool{1: true})
	if len(res.Grants) != 1 || res.Grants[0].JobID != 2 {
		t.Fatalf("grants = %+v, want only b", res.Grants)
	}
	if !reflect.DeepEqual(res.Waits, []Wait{{JobID: 1, Reason: Busy}}) {
		t.Fatalf("waits = %+v", res.Waits)
	}
}

func TestScheduleRejectsWhatNeverFits(t *testing.T) {
	res := Schedule(pool([]int64{80}), []Job{{ID: 1, Server: 1, MemoryMiB: 96 * gib}, {ID: 2, Server: 1, MemoryMiB: 16 * gib, Seq: 1}}, nil)
	if len(res.Rejects) != 1 || res.Rejects[0].JobID != 1 || !errors.Is(res.Rejects[0].Err, ErrNeverFits) {
		t.Fatalf("rejects = %+v", res.Rejects)
	}
	if len(res.Grants) != 1 || res.Grants[0].JobID != 2 {
		t.Fatalf("a rejected job must not hold its server: grants = %+v", res.Grants)
	}
}

// TestScheduleNeverOvercommits fills a pool with a mix of models and checks
// that no GPU ever holds more than its memory and no two grants share
// whole-GPU memory.
func TestScheduleNeverOvercommits(t *testing.T) {
	snap := pool(eight(80), eight(80), []int64{40, 40, 40, 40})
	sizes := []int64{16, 32, 48, 64, 96, 192, 288, 384}
	var queue []Job
	for i := 0; i < 200; i++ {
		queue = append(queue, Job{ID: int64(i), Server: int64(i), Seq: int64(i), MemoryMiB: sizes[(i*7)%len(sizes)] * gib})
	}
	for round := 0; round < 50 && len(queue) > 0; round++ {
		res := Schedule(snap, queue, nil)
		if len(res.Grants) == 0 {
			break
		}
		granted := map[int64]bool{}
		for _, g := range res.Grants {
			Apply(snap, g.Plan)
			granted[g.JobID] = true
			var sum int64
			for _, p := range g.Plan.Placements {
				sum += p.MemoryMiB
			}
			var want int64
			for _, j := range queue {
				if j.ID == g.JobID {
					want = j.MemoryMiB
				}
			}
			if sum < want {
				t.Fatalf("job %d granted %d MiB, asked %d", g.JobID, sum, want)
			}
		}
		var rest []Job
		for _, j := range queue {
			if !granted[j.ID] {
				rest = append(rest, j)
			}
		}
		queue = rest
	}
	for _, n := range snap.Nodes {
		for _, g := range n.GPUs {
			if g.AllocatedMiB > g.MemoryMiB {
				t.Fatalf("GPU %s overcommitted: %d of %d MiB", g.UUID, g.AllocatedMiB, g.MemoryMiB)
			}
		}
	}
}
