package controlplane

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"connectrpc.com/connect"

	hacv1 "github.com/hac-project/hac/gen/hac/v1"
	"github.com/hac-project/hac/internal/store"
	"github.com/hac-project/hac/internal/ticket"
)

// Jobs one at a time, after they started: GetJob, OpenJob (hac logs,
// attach, fetch) and StopJob (hac cancel). A server token acts on its
// server's jobs, a user token on its user's, an admin's on anyone's.

// maxGrace bounds hac cancel's grace period.
const maxGrace = time.Hour

// defaultGrace is the grace period of a StopJob that names none.
const defaultGrace = 10 * time.Second

// anyJob returns a job of the principal's, live or ended.
func (s *Server) anyJob(ctx context.Context, rawID string) (jobState, error) {
	id, err := parseJobID(rawID)
	if err != nil {
		return jobState{}, err
	}
	p := principalFrom(ctx)
	notYours := fmt.Errorf("%w: there is no job %d of %s (hac jobs lists yours)", ErrUnknownJob, id, p.describe())
	if j, ok := s.broker.job(id); ok {
		if !p.owns(&j) {
			return jobState{}, notYours
		}
		return j, nil
	}
	var j jobState
	err = s.store.View(ctx, func(tx *store.Tx) error {
		row, err := tx.Job(id)
		if err != nil {
			return err
		}
		srv, err := tx.ServerByID(row.ServerID)
		if err != nil {
			return err
		}
		j = jobState{Job: row, serverName: srv.Name, userName: srv.UserName}
		return nil
	})
	if errors.Is(err, store.ErrNotFound) || err == nil && !p.owns(&j) {
		return jobState{}, notYours
	}
	return j, err
}

func (a acceleratorService) GetJob(ctx context.Context, req *connect.Request[hacv1.GetJobRequest]) (*connect.Response[hacv1.GetJobResponse], error) {
	j, err := a.s.anyJob(ctx, req.Msg.JobId)
	if err != nil {
		return nil, apiError(err)
	}
	return connect.NewResponse(&hacv1.GetJobResponse{Job: jobProto(j)}), nil
}

func (a acceleratorService) OpenJob(ctx context.Context, req *connect.Request[hacv1.OpenJobRequest]) (*connect.Response[hacv1.OpenJobResponse], error) {
	j, err := a.s.anyJob(ctx, req.Msg.JobId)
	if err != nil {
		return nil, apiError(err)
	}
	var access string
	switch req.Msg.Access {
	case hacv1.JobAccess_JOB_ACCESS_OUTPUT:
		access = ticket.AccessOutput
	case hacv1.JobAccess_JOB_ACCESS_ATTACH:
		access = ticket.AccessAttach
	case hacv1.JobAccess_JOB_ACCESS_FETCH:
		access = ticket.AccessFetch
	default:
		return nil, apiError(fmt.Errorf("%w: access %v: ask for output, attach or fetch", ErrInvalid, req.Msg.Access))
	}
	if err := mayOpen(j, access); err != nil {
		return nil, apiError(err)
	}
	node := j.Placements[0].Node
	key, addr, keyPin, err := a.s.broker.nodeKey(node)
	if err != nil {
		return nil, apiError(fmt.Errorf("%w: job %d ran on node %s, which is no longer in the pool: its output and files are gone", ErrUnknownJob, j.ID, node))
	}
	exp := a.s.cfg.Now().Add(a.s.cfg.TicketTTL).Unix()
	w := &hacv1.Worker{Node: node, Address: addr, CaPin: a.s.tls.workerPin, KeyPin: keyPin,
		Ticket: ticket.Sign(key, ticket.Claims{JobID: j.ID, Node: node, Expires: exp, Detached: true, Access: access})}
	return connect.NewResponse(&hacv1.OpenJobResponse{Job: jobProto(j), Worker: w}), nil
}

// mayOpen says whether a job can be opened for access, and if not, what
// the user can do instead.
func mayOpen(j jobState, access string) error {
	id := j.ID
	switch {
	case access == ticket.AccessFetch && !j.Detached:
		return fmt.Errorf("%w: job %d ran attached: its files came back to its hac run as it ended; hac fetch is for jobs started with hac run -d", ErrInvalid, id)
	case j.State == store.JobQueued:
		return fmt.Errorf("%w: job %d still waits for the pool (hac queue); it has no output yet", ErrInvalid, id)
	case len(j.Placements) == 0:
		return fmt.Errorf("%w: job %d never started (%s: %s)", ErrInvalid, id, j.State, j.EndReason)
	case access == ticket.AccessAttach && j.State != store.JobRunning:
		return fmt.Errorf("%w: job %d has ended (%s%s): hac logs %d shows its output, hac fetch %d brings its files back", ErrInvalid, id, j.State, exitNote(j), id, id)
	}
	return nil
}

func exitNote(j jobState) string {
	if j.ExitCode.Valid {
		return ", exit " + strconv.FormatInt(j.ExitCode.Int64, 10)
	}
	return ""
}

func (a acceleratorService) StopJob(ctx context.Context, req *connect.Request[hacv1.StopJobRequest]) (*connect.Response[hacv1.StopJobResponse], error) {
	id, err := parseJobID(req.Msg.JobId)
	if err != nil {
		return nil, apiError(err)
	}
	grace := defaultGrace
	if req.Msg.HasGrace {
		grace = time.Duration(req.Msg.GraceSeconds) * time.Second
		if grace < 0 || grace > maxGrace {
			return nil, apiError(fmt.Errorf("%w: a grace period of %ds is outside 0s..%v", ErrInvalid, req.Msg.GraceSeconds, maxGrace))
		}
	}
	p := principalFrom(ctx)
	j, err := a.s.broker.stop(id, grace, "canceled by "+p.user.Name+" (hac cancel)", p.owns)
	if errors.Is(err, ErrUnknownJob) {
		// Ended, or not the caller's: say which, as for any job.
		ended, err := a.s.anyJob(ctx, req.Msg.JobId)
		if err != nil {
			return nil, apiError(err)
		}
		return nil, apiError(fmt.Errorf("%w: job %d has already ended (%s%s)", ErrInvalid, id, ended.State, exitNote(ended)))
	}
	if err != nil {
		return nil, apiError(err)
	}
	return connect.NewResponse(&hacv1.StopJobResponse{Job: jobProto(j)}), nil
}
