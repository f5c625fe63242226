package sched

import (
	"cmp"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"
)

// referencePlace is Place written as the plainest scan of the rules in
// doc.go; the indexed Place must agree with it.
func referencePlace(s *Snapshot, mem int64) (Plan, error) {
	if mem <= 0 {
		return Plan{}, ErrBadRequest
	}
	if mem > s.Capacity() {
		return Plan{}, ErrNeverFits
	}
	type cand struct {
		free, alloc int64
		i, j        int
	}
	var shares []cand
	whole := false
	for i, n := range s.Nodes {
		for j, g := range n.GPUs {
			if g.MemoryMiB <= mem {
				whole = true
			}
			if g.MemoryMiB > mem && g.Free() >= mem {
				shares = append(shares, cand{g.Free(), g.AllocatedMiB, i, j})
			}
		}
	}
	if len(shares) > 0 {
		c := slices.MinFunc(shares, func(a, b cand) int {
			return cmp.Or(cmp.Compare(a.free, b.free), cmp.Compare(b.alloc, a.alloc), cmp.Compare(a.i, b.i), cmp.Compare(a.j, b.j))
		})
		g := s.Nodes[c.i].GPUs[c.j]
		return Plan{Placements: []Placement{{Node: s.Nodes[c.i].Name, GPU: g.UUID, MemoryMiB: mem}}}, nil
	}
	if !whole {
		return Plan{}, ErrNoFit
	}
	var best Plan
	var bestWaste int64
	for _, n := range s.Nodes {
		var p Plan
		if takeWhole(&p, n, mem) > 0 {
			continue
		}
		waste := -mem
		for _, pl := range p.Placements {
			waste += pl.MemoryMiB
		}
		if best.Placements == nil || len(p.Placements) < len(best.Placements) ||
			(len(p.Placements) == len(best.Placements) && waste < bestWaste) {
			best, bestWaste = p, waste
		}
	}
	if best.Placements != nil {
		return best, nil
	}
	if p, ok := placeWholeManyNodes(s, mem); ok {
		return p, nil
	}
	return Plan{}, ErrNoFit
}

// TestPlaceMatchesReference drives random pools through long sequences
// of placements and releases, comparing every decision with the reference.
func TestPlaceMatchesReference(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	gpuSizes := []int64{16, 24, 40, 48, 80}
	models := []int64{8, 16, 32, 48, 64, 96, 192, 288, 384}
	for round := 0; round < 200; round++ {
		snap := &Snapshot{}
		for i := 0; i < 1+r.IntN(6); i++ {
			n := Node{Name: fmt.Sprintf("n%d", i)}
			size := gpuSizes[r.IntN(len(gpuSizes))]
			for j := 0; j < 1+r.IntN(8); j++ {
				if r.IntN(4) == 0 {
					size = gpuSizes[r.IntN(len(gpuSizes))]
				}
				n.GPUs = append(n.GPUs, GPU{UUID: fmt.Sprintf("n%d-g%d", i, j), MemoryMiB: size * gib})
			}
			snap.Nodes = append(snap.Nodes, n)
		}
		var held []Plan
		for step := 0; step < 40; step++ {
			if len(held) > 0 && r.IntN(3) == 0 {
				k := r.IntN(len(held))
				Apply(snap, negate(held[k]))
				held = slices.Delete(held, k, k+1)
				continue
			}
			mem := models[r.IntN(len(models))] * gib
			want, werr := referencePlace(snap, mem)
			got, err := Place(snap, mem)
			if err != werr || !reflect.DeepEqual(got, want) {
				t.Fatalf("round %d step %d, %d MiB: Place = %v, %v; reference %v, %v", round, step, mem, got, err, want, werr)
			}
			if err == nil {
				Apply(snap, got)
				held = append(held, got)
			}
		}
	}
}
