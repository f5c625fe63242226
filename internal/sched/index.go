package sched

import (
	"cmp"
	"slices"
	"sort"
)

// index makes a placement decision cost far less than a scan of the pool.
// Place builds it on first use; Apply keeps it current; Clone drops it.
type index struct {
	capacity       int64
	minGPU, maxGPU int64
	// shares holds every GPU in best-fit order: least free memory first,
	// then most allocated, then pool order.
	shares []gpuRef
	// idle holds, per node, its idle GPUs largest first and their running
	// memory totals.
	idle []idleGPUs
	// byUUID finds a GPU for Apply.
	byUUID map[string]gpuRef
}

type gpuRef struct{ node, gpu int32 }

type idleGPUs struct {
	gpus   []int32 // indexes into the node's GPUs
	prefix []int64 // prefix[k] = memory of the first k+1 idle GPUs
}

func (s *Snapshot) gpu(r gpuRef) *GPU { return &s.Nodes[r.node].GPUs[r.gpu] }

// shareCmp orders GPUs for best fit.
func (s *Snapshot) shareCmp(a, b gpuRef) int {
	ga, gb := s.gpu(a), s.gpu(b)
	if c := cmp.Compare(ga.Free(), gb.Free()); c != 0 {
		return c
	}
	if c := cmp.Compare(gb.AllocatedMiB, ga.AllocatedMiB); c != 0 {
		return c
	}
	if c := cmp.Compare(a.node, b.node); c != 0 {
		return c
	}
	return cmp.Compare(a.gpu, b.gpu)
}

func (s *Snapshot) index() *index {
	if s.idx != nil {
		return s.idx
	}
	x := &index{idle: make([]idleGPUs, len(s.Nodes)), byUUID: map[string]gpuRef{}}
	for i, n := range s.Nodes {
		for j, g := range n.GPUs {
			x.byUUID[g.UUID] = gpuRef{int32(i), int32(j)}
			x.capacity += g.MemoryMiB
			if x.minGPU == 0 || g.MemoryMiB < x.minGPU {
				x.minGPU = g.MemoryMiB
			}
			x.maxGPU = max(x.maxGPU, g.MemoryMiB)
			x.shares = append(x.shares, gpuRef{int32(i), int32(j)})
		}
	}
	slices.SortFunc(x.shares, s.shareCmp)
	s.idx = x
	for i := range s.Nodes {
		s.reindexNode(i)
	}
	return x
}

// reindexNode recomputes a node's idle GPUs.
func (s *Snapshot) reindexNode(i int) {
	n := &s.Nodes[i]
	var ig idleGPUs
	for j, g := range n.GPUs {
		if g.AllocatedMiB == 0 {
			ig.gpus = append(ig.gpus, int32(j))
		}
	}
	slices.SortStableFunc(ig.gpus, func(a, b int32) int { return cmp.Compare(n.GPUs[b].MemoryMiB, n.GPUs[a].MemoryMiB) })
	var sum int64
	for _, j := range ig.gpus {
		sum += n.GPUs[j].MemoryMiB
		ig.prefix = append(ig.prefix, sum)
	}
	s.idx.idle[i] = ig
}

// total is the memory of a node's idle GPUs.
func (ig idleGPUs) total() int64 {
	if len(ig.prefix) == 0 {
		return 0
	}
	return ig.prefix[len(ig.prefix)-1]
}

// allocate changes one GPU's allocation and keeps the index in order.
func (s *Snapshot) allocate(r gpuRef, delta int64) {
	x := s.idx
	if x == nil {
		s.gpu(r).AllocatedMiB += delta
		return
	}
	pos, found := slices.BinarySearchFunc(x.shares, r, s.shareCmp)
	if found {
		x.shares = slices.Delete(x.shares, pos, pos+1)
	}
	s.gpu(r).AllocatedMiB += delta
	pos, _ = slices.BinarySearchFunc(x.shares, r, s.shareCmp)
	x.shares = slices.Insert(x.shares, pos, r)
	s.reindexNode(int(r.node))
}

// placeShare puts a request smaller than a GPU on the first GPU in best-fit
// order with room, skipping idle GPUs no larger than the request (those
// serve it whole).
func placeShare(s *Snapshot, memMiB int64) (Plan, bool) {
	x := s.index()
	i := sort.Search(len(x.shares), func(i int) bool { return s.gpu(x.shares[i]).Free() >= memMiB })
	for ; i < len(x.shares); i++ {
		r := x.shares[i]
		if g := s.gpu(r); g.MemoryMiB > memMiB {
			return Plan{Placements: []Placement{{Node: s.Nodes[r.node].Name, GPU: g.UUID, MemoryMiB: memMiB}}}, true
		}
	}
	return Plan{}, false
}

// placeWholeOneNode picks the node that needs the fewest idle GPUs,
// then wastes the least, then comes first. In a pool of one GPU size the
// first node that reaches the least possible count is the answer.
func placeWholeOneNode(s *Snapshot, memMiB int64) (Plan, bool) {
	x := s.index()
	best, bestCount, bestWaste := -1, 0, int64(0)
	fewest := int((memMiB + x.maxGPU - 1) / x.maxGPU)
	uniform := x.minGPU == x.maxGPU
	for i, ig := range x.idle {
		if ig.total() < memMiB {
			continue
		}
		k := sort.Search(len(ig.prefix), func(k int) bool { return ig.prefix[k] >= memMiB })
		count, waste := k+1, ig.prefix[k]-memMiB
		if best < 0 || count < bestCount || (count == bestCount && waste < bestWaste) {
			best, bestCount, bestWaste = i, count, waste
			if uniform && count == fewest {
				break
			}
		}
	}
	if best < 0 {
		return Plan{}, false
	}
	n := s.Nodes[best]
	var p Plan
	for _, j := range x.idle[best].gpus[:bestCount] {
		p.Placements = append(p.Placements, Placement{Node: n.Name, GPU: n.GPUs[j].UUID, MemoryMiB: n.GPUs[j].MemoryMiB})
	}
	return p, true
}
