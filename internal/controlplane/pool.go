package controlplane

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"connectrpc.com/connect"

	hacv1 "github.com/hac-project/hac/gen/hac/v1"
	"github.com/hac-project/hac/internal/sched"
	"github.com/hac-project/hac/internal/store"
	"github.com/hac-project/hac/internal/token"
)

// poolService implements hacv1connect.PoolServiceHandler and
// hacv1connect.ServerServiceHandler.
type poolService struct{ s *Server }

func (ps poolService) ListNodes(ctx context.Context, _ *connect.Request[hacv1.ListNodesRequest]) (*connect.Response[hacv1.ListNodesResponse], error) {
	nodes, held, used := ps.s.broker.nodesView()
	out := &hacv1.ListNodesResponse{}
	for _, n := range nodes {
		state := store.NodeReady
		switch {
		case n.lost:
			state = store.NodeLost
		case n.Drained:
			state = store.NodeDrained
		}
		pn := &hacv1.Node{Name: n.Name, Address: n.Address, State: string(state), LastHeartbeat: ts(n.lastSeen)}
		for _, g := range n.GPUs {
			pn.Gpus = append(pn.Gpus, &hacv1.GPU{Index: int32(g.Index), Uuid: g.UUID, Name: g.Name, MemoryMib: g.MemoryMiB,
				AllocatedMib: held[g.UUID], UsedMib: used[g.UUID]})
		}
		out.Nodes = append(out.Nodes, pn)
	}
	return connect.NewResponse(out), nil
}

// visibleUser is the user whose jobs a principal sees: 0 (everyone) for an
// admin.
func visibleUser(p principal) int64 {
	if p.user.Admin {
		return 0
	}
	return p.user.ID
}

func (ps poolService) ListJobs(ctx context.Context, req *connect.Request[hacv1.ListJobsRequest]) (*connect.Response[hacv1.ListJobsResponse], error) {
	p := principalFrom(ctx)
	f, err := ps.jobFilter(ctx, p, req.Msg)
	if err != nil {
		return nil, apiError(err)
	}
	// The store first, the broker after: no request holds a store
	// connection while it waits for the broker's lock.
	var jobs []jobState
	err = ps.s.store.View(ctx, func(tx *store.Tx) error {
		rows, err := tx.FindJobs(f)
		if err != nil {
			return err
		}
		names := map[int64][2]string{}
		for _, j := range rows {
			nm, ok := names[j.ServerID]
			if !ok {
				srv, err := tx.ServerByID(j.ServerID)
				if err != nil {
					return err
				}
				nm = [2]string{srv.Name, srv.UserName}
				names[j.ServerID] = nm
			}
			jobs = append(jobs, jobState{Job: j, serverName: nm[0], userName: nm[1]})
		}
		return nil
	})
	if err != nil {
		return nil, apiError(err)
	}
	out := &hacv1.ListJobsResponse{}
	for _, js := range jobs {
		if live, ok := ps.s.broker.job(js.ID); ok {
			js = live
		}
		out.Jobs = append(out.Jobs, jobProto(js))
	}
	return connect.NewResponse(out), nil
}

func (ps poolService) ListQueue(ctx context.Context, _ *connect.Request[hacv1.ListQueueRequest]) (*connect.Response[hacv1.ListQueueResponse], error) {
	p := principalFrom(ctx)
	running, waiting := ps.s.broker.queueView(func(j *jobState) bool {
		if p.kind == store.ServerToken {
			return j.ServerID == p.serverID
		}
		return p.user.Admin || j.UserID == p.user.ID
	})
	out := &hacv1.ListQueueResponse{}
	for _, j := range running {
		out.Jobs = append(out.Jobs, jobProto(j))
	}
	for _, q := range waiting {
		pj := jobProto(q.jobState)
		switch w := q.place.wait; {
		case w.Reason == sched.Busy:
			pj.WaitReason = "server-busy"
		case w.Position == 1:
			pj.WaitReason, pj.QueuePosition = "resources", 1
		default:
			pj.WaitReason, pj.QueuePosition = "priority", int32(w.Position)
		}
		if !q.place.estimate.IsZero() {
			pj.EstimatedStart, pj.EstimateSamples = ts(q.place.estimate), int32(q.place.basis.samples)
		}
		out.Jobs = append(out.Jobs, pj)
	}
	return connect.NewResponse(out), nil
}

// joinStates lists states for an error message.
func joinStates[S ~string](states []S) string {
	names := make([]string, len(states))
	for i, s := range states {
		names[i] = string(s)
	}
	return strings.Join(names, ", ")
}

// jobFilter turns hac jobs' filters into the store's, within what the
// principal may see.
func (ps poolService) jobFilter(ctx context.Context, p principal, req *hacv1.ListJobsRequest) (store.JobFilter, error) {
	f := store.JobFilter{Limit: int(req.Limit), UserID: visibleUser(p)}
	if f.Limit < 0 || f.Limit > 10000 {
		return f, fmt.Errorf("%w: limit %d is outside 0..10000", ErrInvalid, f.Limit)
	}
	if f.Limit == 0 {
		f.Limit = 100
	}
	for _, st := range req.States {
		if !slices.Contains(store.JobStates, store.JobState(st)) {
			return f, fmt.Errorf("%w: state %q: use %s", ErrInvalid, st, joinStates(store.JobStates))
		}
		f.States = append(f.States, store.JobState(st))
	}
	if req.Since != nil {
		if err := req.Since.CheckValid(); err != nil {
			return f, fmt.Errorf("%w: since: %v", ErrInvalid, err)
		}
		f.Since = req.Since.AsTime()
	}
	if req.User != "" {
		if !p.user.Admin || p.kind != store.UserToken {
			return f, fmt.Errorf("%w: only an admin may list another user's jobs (--user)", ErrPermission)
		}
		if err := ps.s.store.View(ctx, func(tx *store.Tx) error {
			u, err := tx.UserByName(req.User)
			f.UserID = u.ID
			return err
		}); errors.Is(err, store.ErrNotFound) {
			return f, fmt.Errorf("%w: there is no user %q", ErrInvalid, req.User)
		} else if err != nil {
			return f, err
		}
	}
	if p.kind == store.ServerToken || req.Server != "" {
		srv, err := ps.s.resolveServer(ctx, p, req.Server)
		if err != nil {
			return f, err
		}
		f.ServerID, f.UserID = srv.ID, srv.UserID
	}
	return f, nil
}

var serverName = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)

// validServerName checks a server name: lower-case letters, digits and
// dashes, 1 to 63 characters, starting with a letter or digit.
func validServerName(name string) error {
	if !serverName.MatchString(name) {
		return fmt.Errorf("%w: server name %q: use 1-63 lower-case letters, digits and dashes, starting with a letter or digit", ErrInvalid, name)
	}
	return nil
}

func (ps poolService) RegisterServer(ctx context.Context, req *connect.Request[hacv1.RegisterServerRequest]) (*connect.Response[hacv1.RegisterServerResponse], error) {
	p := principalFrom(ctx)
	if err := validServerName(req.Msg.Name); err != nil {
		return nil, apiError(err)
	}
	model := req.Msg.Model
	if model == "" {
		model = ps.s.cfg.DefaultModel
	}
	if _, err := ps.s.cfg.Catalog.Lookup(model); err != nil {
		return nil, apiError(err)
	}
	if img := req.Msg.Image; img != "" {
		if ps.s.cfg.Servers == nil {
			return nil, apiError(fmt.Errorf("%w: this control plane has no images (hac serve --servers local has them); register without --image", ErrInvalid))
		}
		images := slices.Sorted(maps.Keys(ps.s.cfg.Servers.Images()))
		if !slices.Contains(images, img) {
			return nil, apiError(fmt.Errorf("%w: unknown image %q: choose one of %s", ErrInvalid, img, strings.Join(images, ", ")))
		}
	}
	srv, tok, err := ps.s.createServer(ctx, p.user, req.Msg.Name, model, req.Msg.Image)
	if err != nil {
		return nil, apiError(err)
	}
	return connect.NewResponse(&hacv1.RegisterServerResponse{Server: serverProto(srv, ""), Token: tok}), nil
}

// checkServerQuota refuses a user's next server past Quotas.Servers.
func (s *Server) checkServerQuota(tx *store.Tx, u store.User) error {
	max := s.cfg.Quotas.Servers
	if max == 0 {
		return nil
	}
	srvs, err := tx.Servers(u.ID)
	if err != nil {
		return err
	}
	if len(srvs) >= max {
		return fmt.Errorf("%w: %s has %d servers, the most one user may; delete one first, or ask the operator to raise --max-servers", ErrQuota, u.Name, len(srvs))
	}
	return nil
}

// createServer adds a server for a user and returns it with its new token.
func (s *Server) createServer(ctx context.Context, u store.User, name, model, image string) (srv store.Server, tok string, err error) {
	err = s.store.Update(ctx, func(tx *store.Tx) error {
		if err := s.checkServerQuota(tx, u); err != nil {
			return err
		}
		srv, tok, err = addServer(tx, u, name, model, image, s.cfg.Now())
		return err
	})
	return srv, tok, err
}

// addServer records a server of u's and its token in tx.
func addServer(tx *store.Tx, u store.User, name, model, image string, now time.Time) (store.Server, string, error) {
	srv := store.Server{UserID: u.ID, UserName: u.Name, Name: name, Model: model, Image: image, AcceleratorToken: token.PublicID(), CreatedAt: now}
	tok := token.New(token.ServerPrefix)
	id, err := tx.CreateServer(srv)
	if err != nil {
		return store.Server{}, "", fmt.Errorf("server %q: %w", name, err)
	}
	srv.ID = id
	return srv, tok, tx.AddToken(token.Hash(tok), store.Token{Kind: store.ServerToken, UserID: u.ID, ServerID: id}, now)
}

func (ps poolService) ListServers(ctx context.Context, _ *connect.Request[hacv1.ListServersRequest]) (*connect.Response[hacv1.ListServersResponse], error) {
	p := principalFrom(ctx)
	var srvs []store.Server
	err := ps.s.store.View(ctx, func(tx *store.Tx) (err error) {
		srvs, err = tx.Servers(visibleUser(p))
		return err
	})
	if err != nil {
		return nil, apiError(err)
	}
	out := &hacv1.ListServersResponse{}
	for _, srv := range srvs { // the broker after the store, as in ListJobs
		jobID := ""
		if j, ok := ps.s.broker.serverJob(srv.ID); ok && j.State == store.JobRunning {
			jobID = strconv.FormatInt(j.ID, 10)
		}
		out.Servers = append(out.Servers, serverProto(srv, jobID))
	}
	return connect.NewResponse(out), nil
}

func serverProto(s store.Server, jobID string) *hacv1.Server {
	return &hacv1.Server{Name: s.Name, User: s.UserName, Model: s.Model, AcceleratorToken: s.AcceleratorToken,
		CreatedAt: ts(s.CreatedAt), JobId: jobID, State: string(s.State), PrivateAddress: s.PrivateIP}
}

func (ps poolService) CancelJob(ctx context.Context, req *connect.Request[hacv1.CancelJobRequest]) (*connect.Response[hacv1.CancelJobResponse], error) {
	id, err := strconv.ParseInt(req.Msg.JobId, 10, 64)
	if err != nil || id <= 0 {
		return nil, apiError(fmt.Errorf("%w: job id %q is not a positive number (see hac queue)", ErrInvalid, req.Msg.JobId))
	}
	p := principalFrom(ctx)
	j, ok := ps.s.broker.job(id)
	if !ok || (j.UserID != p.user.ID && !p.user.Admin) {
		return nil, apiError(fmt.Errorf("%w: job %d is not waiting in the queue", ErrUnknownJob, id))
	}
	if j.State != store.JobQueued {
		return nil, apiError(fmt.Errorf("%w: job %d is running, not queued: stop it with hac cancel %d", ErrInvalid, id, id))
	}
	if _, err := ps.s.broker.cancelQueued(id, "canceled by "+p.user.Name); err != nil {
		return nil, apiError(err)
	}
	return connect.NewResponse(&hacv1.CancelJobResponse{}), nil
}
