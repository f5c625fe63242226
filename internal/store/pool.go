package store

import (
	"database/sql"
	"fmt"
	"math"
	"strings"
	"time"
)

// Node is a registered GPU machine.
type Node struct {
	Name         string
	Address      string
	TicketKey    []byte
	State        NodeState
	RegisteredAt time.Time
	GPUs         []GPU
	// Drained nodes take no new jobs; registering again keeps the mark.
	Drained bool
	// WorkerKeyPin is the pin of the key of the node's worker certificate.
	WorkerKeyPin string
}

// GPU is one device of a node.
type GPU struct {
	UUID      string
	Index     int
	Name      string
	MemoryMiB int64
}

// PutNode adds or replaces a node and its GPUs.
func (t *Tx) PutNode(n Node) error {
	if err := t.DeleteNode(n.Name); err != nil {
		return err
	}
	if _, err := t.exec(`INSERT INTO nodes (name, address, ticket_key, state, registered_at, drained, worker_key_pin) VALUES (?, ?, ?, ?, ?, ?, ?)`,
		n.Name, n.Address, n.TicketKey, n.State, nanos(n.RegisteredAt), n.Drained, n.WorkerKeyPin); err != nil {
		return fmt.Errorf("store: put node %q: %w", n.Name, err)
	}
	for _, g := range n.GPUs {
		if _, err := t.exec(`INSERT INTO gpus (uuid, node_name, idx, name, memory_mib) VALUES (?, ?, ?, ?, ?)`,
			g.UUID, n.Name, g.Index, g.Name, g.MemoryMiB); err != nil {
			return fmt.Errorf("store: node %q gpu %q: %w", n.Name, g.UUID, err)
		}
	}
	return nil
}

// DeleteNode removes a node and its GPUs.
func (t *Tx) DeleteNode(name string) error {
	_, err := t.exec(`DELETE FROM nodes WHERE name = ?`, name)
	return err
}

// SetNodeDrained marks a node drained or not.
func (t *Tx) SetNodeDrained(name string, drained bool) error {
	_, err := t.exec(`UPDATE nodes SET drained = ? WHERE name = ?`, drained, name)
	return err
}

// NodeState says whether a node is heard from.
type NodeState string

// The node states: ready once registered, lost once its heartbeats stopped
// (until it registers again). Listings show a ready node that is Drained
// as NodeDrained, which is never stored.
const (
	NodeReady   NodeState = "ready"
	NodeLost    NodeState = "lost"
	NodeDrained NodeState = "drained"
)

// SetNodeState records a node's state.
func (t *Tx) SetNodeState(name string, state NodeState) error {
	_, err := t.exec(`UPDATE nodes SET state = ? WHERE name = ?`, state, name)
	return err
}

// Nodes returns every node with its GPUs, by name.
func (t *Tx) Nodes() ([]Node, error) {
	rows, err := t.query(`SELECT name, address, ticket_key, state, registered_at, drained, worker_key_pin FROM nodes ORDER BY name`)
	if err != nil {
		return nil, err
	}
	var nodes []Node
	for rows.Next() {
		var n Node
		var reg int64
		if err := rows.Scan(&n.Name, &n.Address, &n.TicketKey, &n.State, &reg, &n.Drained, &n.WorkerKeyPin); err != nil {
			rows.Close()
			return nil, err
		}
		n.RegisteredAt = time.Unix(0, reg)
		nodes = append(nodes, n)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	for i := range nodes {
		g, err := t.query(`SELECT uuid, idx, name, memory_mib FROM gpus WHERE node_name = ? ORDER BY idx`, nodes[i].Name)
		if err != nil {
			return nil, err
		}
		for g.Next() {
			var gpu GPU
			if err := g.Scan(&gpu.UUID, &gpu.Index, &gpu.Name, &gpu.MemoryMiB); err != nil {
				g.Close()
				return nil, err
			}
			nodes[i].GPUs = append(nodes[i].GPUs, gpu)
		}
		g.Close()
	}
	return nodes, nil
}

// Job states. A job is queued until granted, running while it holds pool
// resources, and ends in one of the final states.
//
//	queued --grant--> running --exit 0--> completed
//	   |                 |----exit != 0--> failed
//	   |                 |----reset------> canceled
//	   |                 '----lease/node--> lost
//	   '--withdrawn/rejected--> canceled
//
// The values are the API's and the CLI's words.
type JobState string

// The job states.
const (
	JobQueued    JobState = "queued"
	JobRunning   JobState = "running"
	JobCompleted JobState = "completed"
	JobFailed    JobState = "failed"
	JobCanceled  JobState = "canceled"
	JobLost      JobState = "lost"
)

// JobStates are all the job states, in the order of a job's life.
var JobStates = []JobState{JobQueued, JobRunning, JobCompleted, JobFailed, JobCanceled, JobLost}

// Ended reports whether s is a final state.
func (s JobState) Ended() bool { return s != JobQueued && s != JobRunning }

// Job is one run of an accelerator program.
type Job struct {
	ID          int64
	ServerID    int64
	UserID      int64
	Model       string
	MemoryMiB   int64
	Priority    int
	Command     string
	ClientPID   int64
	State       JobState
	SubmittedAt time.Time
	AllocatedAt time.Time
	EndedAt     time.Time
	ExitCode    sql.NullInt64
	EndReason   string
	// Detached: the job runs without its client (hac run -d).
	Detached bool
	// StopAt, StopGrace and StopReason are hac cancel's order to a
	// running job; StopAt is zero without one.
	StopAt     time.Time
	StopGrace  time.Duration
	StopReason string
	Placements []Placement
}

// Placement is GPU memory held by a job.
type Placement struct {
	Node      string
	GPU       string
	MemoryMiB int64
}

// InsertJob adds a queued job and returns its id: j.ID, when set.
func (t *Tx) InsertJob(j Job) (int64, error) {
	id := sql.NullInt64{Int64: j.ID, Valid: j.ID != 0}
	r, err := t.exec(`INSERT INTO jobs (id, server_id, user_id, model, memory_mib, priority, command, client_pid, state, submitted_at, detached)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		id, j.ServerID, j.UserID, j.Model, j.MemoryMiB, j.Priority, j.Command, j.ClientPID, JobQueued, nanos(j.SubmittedAt), j.Detached)
	if err != nil {
		return 0, fmt.Errorf("store: insert job: %w", err)
	}
	return r.LastInsertId()
}

// LastJobID is the highest job id used.
func (t *Tx) LastJobID() (int64, error) {
	var id int64
	err := t.queryRow(`SELECT COALESCE(MAX(id), 0) FROM jobs`).Scan(&id)
	return id, err
}

// GrantJob marks a job running with its placements.
func (t *Tx) GrantJob(id int64, at time.Time, ps []Placement) error {
	if _, err := t.exec(`UPDATE jobs SET state = ?, allocated_at = ? WHERE id = ?`, JobRunning, nanos(at), id); err != nil {
		return err
	}
	for _, p := range ps {
		if _, err := t.exec(`INSERT INTO placements (job_id, node_name, gpu_uuid, memory_mib) VALUES (?, ?, ?, ?)`,
			id, p.Node, p.GPU, p.MemoryMiB); err != nil {
			return err
		}
	}
	return t.openJobRecord(id, at, ps)
}

// StopJob records hac cancel's order to a running job.
func (t *Tx) StopJob(id int64, at time.Time, grace time.Duration, reason string) error {
	_, err := t.exec(`UPDATE jobs SET stop_at = ?, stop_grace_ns = ?, stop_reason = ? WHERE id = ?`, nanos(at), int64(grace), reason, id)
	return err
}

// EndJob records a job's final state and closes its meter record: fault,
// when not empty, names the infrastructure fault that ended it, and its
// run is not charged.
func (t *Tx) EndJob(id int64, state JobState, at time.Time, exitCode sql.NullInt64, reason, fault string) error {
	if _, err := t.exec(`UPDATE jobs SET state = ?, ended_at = ?, exit_code = ?, end_reason = ? WHERE id = ?`,
		state, nanos(at), exitCode, reason, id); err != nil {
		return err
	}
	return t.closeJobRecord(id, at, fault)
}

const jobColumns = `id, server_id, user_id, model, memory_mib, priority, command, client_pid, state, submitted_at, allocated_at, ended_at, exit_code, end_reason, detached, stop_at, stop_grace_ns, stop_reason FROM jobs`

// Jobs returns jobs newest first: those in the given states (all when none),
// of one user (all when userID is 0), at most limit.
func (t *Tx) Jobs(userID int64, states []JobState, limit int) ([]Job, error) {
	return t.FindJobs(JobFilter{UserID: userID, States: states, Limit: limit})
}

// JobFilter selects jobs; a zero field selects all.
type JobFilter struct {
	UserID, ServerID int64
	States           []JobState
	// Since keeps the jobs submitted at or after it.
	Since time.Time
	Limit int
}

// FindJobs returns the jobs f selects, newest first.
func (t *Tx) FindJobs(f JobFilter) ([]Job, error) {
	since := int64(math.MinInt64)
	if !f.Since.IsZero() {
		since = nanos(f.Since)
	}
	q := `SELECT ` + jobColumns + ` WHERE (? = 0 OR user_id = ?) AND (? = 0 OR server_id = ?) AND submitted_at >= ?`
	args := []any{f.UserID, f.UserID, f.ServerID, f.ServerID, since}
	if len(f.States) > 0 {
		q += ` AND state IN (?` + strings.Repeat(", ?", len(f.States)-1) + `)`
		for _, s := range f.States {
			args = append(args, s)
		}
	}
	q += ` ORDER BY id DESC LIMIT ?`
	args = append(args, f.Limit)
	rows, err := t.queryOnce(q, args...) // its shape varies with states
	if err != nil {
		return nil, err
	}
	return t.scanJobs(rows)
}

// Job returns one job with its placements, or ErrNotFound.
func (t *Tx) Job(id int64) (Job, error) {
	rows, err := t.query(`SELECT `+jobColumns+` WHERE id = ?`, id)
	if err != nil {
		return Job{}, err
	}
	jobs, err := t.scanJobs(rows)
	if err != nil {
		return Job{}, err
	}
	if len(jobs) == 0 {
		return Job{}, ErrNotFound
	}
	return jobs[0], nil
}

func (t *Tx) scanJobs(rows *sql.Rows) ([]Job, error) {
	var jobs []Job
	for rows.Next() {
		var j Job
		var submitted int64
		var allocated, ended, stopAt sql.NullInt64
		var grace int64
		if err := rows.Scan(&j.ID, &j.ServerID, &j.UserID, &j.Model, &j.MemoryMiB, &j.Priority, &j.Command, &j.ClientPID,
			&j.State, &submitted, &allocated, &ended, &j.ExitCode, &j.EndReason, &j.Detached, &stopAt, &grace, &j.StopReason); err != nil {
			rows.Close()
			return nil, err
		}
		j.SubmittedAt, j.AllocatedAt, j.EndedAt = time.Unix(0, submitted), fromNanos(allocated), fromNanos(ended)
		j.StopAt, j.StopGrace = fromNanos(stopAt), time.Duration(grace)
		jobs = append(jobs, j)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	return jobs, t.fillPlacements(jobs)
}

// fillPlacements loads the placements of jobs, one query per 500 jobs
// (SQLite caps the parameters of a statement).
func (t *Tx) fillPlacements(jobs []Job) error {
	for len(jobs) > 500 {
		if err := t.fillPlacements(jobs[:500]); err != nil {
			return err
		}
		jobs = jobs[500:]
	}
	if len(jobs) == 0 {
		return nil
	}
	index := make(map[int64]int, len(jobs))
	args := make([]any, len(jobs))
	for i, j := range jobs {
		index[j.ID] = i
		args[i] = j.ID
	}
	rows, err := t.queryOnce(`SELECT job_id, node_name, gpu_uuid, memory_mib FROM placements
		WHERE job_id IN (?`+strings.Repeat(", ?", len(jobs)-1)+`) ORDER BY rowid`, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var id int64
		var p Placement
		if err := rows.Scan(&id, &p.Node, &p.GPU, &p.MemoryMiB); err != nil {
			return err
		}
		jobs[index[id]].Placements = append(jobs[index[id]].Placements, p)
	}
	return rows.Err()
}
