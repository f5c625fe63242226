package sched

import (
	"cmp"
	"errors"
	"slices"
)

// GPU is one device in a Snapshot.
type GPU struct {
	UUID         string
	MemoryMiB    int64
	AllocatedMiB int64 // memory held by shares and whole grants
}

// Free reports the memory not held by any job.
func (g *GPU) Free() int64 { return g.MemoryMiB - g.AllocatedMiB }

// Node is one GPU machine in a Snapshot.
type Node struct {
	Name string
	GPUs []GPU
}

// Snapshot is the pool as the scheduler sees it.
type Snapshot struct {
	Nodes []Node
	idx   *index // built by Place, kept by Apply; see index.go
}

// Clone returns a deep copy, so that a caller's snapshot is never changed.
func (s *Snapshot) Clone() *Snapshot {
	c := &Snapshot{}
	for _, n := range s.Nodes {
		c.Nodes = append(c.Nodes, Node{Name: n.Name, GPUs: slices.Clone(n.GPUs)})
	}
	return c
}

// Capacity returns the total GPU memory of the pool, held or not.
func (s *Snapshot) Capacity() int64 {
	var total int64
	for _, n := range s.Nodes {
		for _, g := range n.GPUs {
			total += g.MemoryMiB
		}
	}
	return total
}

// Placement is a share of one GPU granted to a job. A whole-GPU grant holds
// all of the GPU's memory.
type Placement struct {
	Node      string
	GPU       string
	MemoryMiB int64
}

// Plan is where one request runs.
type Plan struct {
	Placements []Placement
}

// Nodes returns the distinct nodes of the plan in placement order.
func (p Plan) Nodes() []string {
	var nodes []string
	for _, pl := range p.Placements {
		if !slices.Contains(nodes, pl.Node) {
			nodes = append(nodes, pl.Node)
		}
	}
	return nodes
}

var (
	// ErrNoFit means the request does not fit the pool now but could later.
	ErrNoFit = errors.New("sched: not enough free accelerator memory in the pool")
	// ErrNeverFits means the request is larger than the whole pool.
	ErrNeverFits = errors.New("sched: the request is larger than the whole pool")
	// ErrBadRequest means the request asks for no memory.
	ErrBadRequest = errors.New("sched: the request must ask for a positive amount of memory")
)

// Place finds room for memMiB of accelerator memory in snap and returns the
// plan. It does not change snap; Apply does.
func Place(snap *Snapshot, memMiB int64) (Plan, error) {
	if memMiB <= 0 {
		return Plan{}, ErrBadRequest
	}
	x := snap.index()
	if memMiB > x.capacity {
		return Plan{}, ErrNeverFits
	}
	if p, ok := placeShare(snap, memMiB); ok {
		return p, nil
	}
	// Whole GPUs serve the request only if some GPU is no larger than it.
	if x.minGPU > memMiB {
		return Plan{}, ErrNoFit
	}
	if p, ok := placeWholeOneNode(snap, memMiB); ok {
		return p, nil
	}
	if p, ok := placeWholeManyNodes(snap, memMiB); ok {
		return p, nil
	}
	return Plan{}, ErrNoFit
}

// Apply records a plan's placements in snap.
func Apply(snap *Snapshot, p Plan) {
	x := snap.index()
	for _, pl := range p.Placements {
		if r, ok := x.byUUID[pl.GPU]; ok && snap.Nodes[r.node].Name == pl.Node {
			snap.allocate(r, pl.MemoryMiB)
		}
	}
}

// freeWhole returns the node's idle GPUs, largest first.
func freeWhole(n Node) []GPU {
	var free []GPU
	for _, g := range n.GPUs {
		if g.AllocatedMiB == 0 {
			free = append(free, g)
		}
	}
	slices.SortStableFunc(free, func(a, b GPU) int { return cmp.Compare(b.MemoryMiB, a.MemoryMiB) })
	return free
}

// takeWhole appends idle GPUs of n to p until need is covered and returns
// what is still needed.
func takeWhole(p *Plan, n Node, need int64) int64 {
	for _, g := range freeWhole(n) {
		if need <= 0 {
			break
		}
		p.Placements = append(p.Placements, Placement{Node: n.Name, GPU: g.UUID, MemoryMiB: g.MemoryMiB})
		need -= g.MemoryMiB
	}
	return need
}

// placeWholeManyNodes spreads the request over the fewest nodes, taking the
// nodes with the most idle memory first.
func placeWholeManyNodes(snap *Snapshot, memMiB int64) (Plan, bool) {
	nodes := slices.Clone(snap.Nodes)
	idle := func(n Node) int64 {
		var sum int64
		for _, g := range freeWhole(n) {
			sum += g.MemoryMiB
		}
		return sum
	}
	slices.SortStableFunc(nodes, func(a, b Node) int { return cmp.Compare(idle(b), idle(a)) })
	var p Plan
	need := memMiB
	for _, n := range nodes {
		if need <= 0 {
			break
		}
		need = takeWhole(&p, n, need)
	}
	return p, need <= 0
}
