package controlplane

import (
	"slices"
	"strconv"
	"time"
)

// runTimes remembers how long recent jobs held the pool, for start-time
// estimates (SPEC A6): the median of the recent runs of the same user's
// model and command (another user's commands are none of one's business:
// "from 3 runs of this command" would tell who ran what), else of the
// model, else of the whole pool, each once it
// rests on minSamples runs. The commands it remembers are bounded: a
// tenant that makes up a new command each run evicts only the command
// used longest ago.
type runTimes struct {
	byKey map[string]*recentRuns
	pool  recentRuns
	clock uint64 // counts adds, for eviction
}

// recentRuns are the last maxRunTimes run times of one kind of job.
type recentRuns struct {
	d      []time.Duration // newest last
	median time.Duration
	used   uint64
}

const (
	maxRunTimes = 200  // per kind
	maxRunKinds = 4096 // models and commands remembered
	minSamples  = 3
)

// estimateBasis says what an estimate rests on.
type estimateBasis struct {
	samples int
	// of is "command", "model" or "pool".
	of string
}

func (r *recentRuns) add(d time.Duration, clock uint64) {
	r.d = append(r.d, d)
	if len(r.d) > maxRunTimes {
		r.d = r.d[1:]
	}
	sorted := slices.Clone(r.d)
	slices.Sort(sorted)
	r.median, r.used = sorted[len(sorted)/2], clock
}

func runKey(user int64, model, command string) string {
	return strconv.FormatInt(user, 10) + "\x00" + model + "\x00" + command
}

// add records that a user's job of model and command held the pool for d.
func (r *runTimes) add(user int64, model, command string, d time.Duration) {
	if r.byKey == nil {
		r.byKey = map[string]*recentRuns{}
	}
	r.clock++
	r.pool.add(d, r.clock)
	for _, k := range []string{runKey(user, model, command), model} {
		rr := r.byKey[k]
		if rr == nil {
			if len(r.byKey) >= maxRunKinds {
				r.evict()
			}
			rr = &recentRuns{}
			r.byKey[k] = rr
		}
		rr.add(d, r.clock)
	}
}

// evict forgets the kind used longest ago.
func (r *runTimes) evict() {
	var oldest string
	var at uint64
	for k, rr := range r.byKey {
		if oldest == "" || rr.used < at {
			oldest, at = k, rr.used
		}
	}
	delete(r.byKey, oldest)
}

// typical is how long a job of model and command is expected to hold the
// pool, and what that rests on; ok is false without enough history.
func (r *runTimes) typical(user int64, model, command string) (time.Duration, estimateBasis, bool) {
	for _, c := range []struct {
		rr *recentRuns
		of string
	}{{r.byKey[runKey(user, model, command)], "command"}, {r.byKey[model], "model"}, {&r.pool, "pool"}} {
		if c.rr != nil && len(c.rr.d) >= minSamples {
			return c.rr.median, estimateBasis{len(c.rr.d), c.of}, true
		}
	}
	return 0, estimateBasis{}, false
}
