package controlplane

import (
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	hacv1 "github.com/hac-project/hac/gen/hac/v1"
	"github.com/hac-project/hac/internal/catalog"
	"github.com/hac-project/hac/internal/sched"
	"github.com/hac-project/hac/internal/store"
	"github.com/hac-project/hac/internal/ticket"
	"github.com/hac-project/hac/internal/version"
)

// acceleratorService implements hacv1connect.AcceleratorServiceHandler.
type acceleratorService struct{ s *Server }

const maxCommandDisplay = 4096

func (a acceleratorService) Allocate(ctx context.Context, req *connect.Request[hacv1.AllocateRequest], stream *connect.ServerStream[hacv1.AllocateResponse]) error {
	p := principalFrom(ctx)
	srv, err := a.s.resolveServer(ctx, p, req.Msg.Server)
	if err != nil {
		return apiError(err)
	}
	if len(req.Msg.Command) == 0 || req.Msg.Command[0] == "" {
		return apiError(fmt.Errorf("%w: the command is empty: give one after --, as in hac run -- python3 train.py", ErrInvalid))
	}
	command := strings.Join(req.Msg.Command, " ")
	if len(command) > maxCommandDisplay {
		command = command[:maxCommandDisplay]
	}
	priority := p.user.Priority
	if req.Msg.HasPriority {
		pr := int(req.Msg.Priority)
		if pr < -99 || pr > 99 {
			return apiError(fmt.Errorf("%w: priority %d is outside -99..99", ErrInvalid, pr))
		}
		if pr > priority && !p.user.Admin {
			return apiError(fmt.Errorf("%w: priority %d is above your own (%d); only an admin may raise it", ErrPermission, pr, priority))
		}
		priority = pr
	}
	model, err := a.s.cfg.Catalog.Lookup(srv.Model)
	if err != nil {
		return apiError(err)
	}
	if req.Msg.ClientPid < 0 {
		return apiError(fmt.Errorf("%w: negative client pid", ErrInvalid))
	}
	j, err := a.s.broker.submit(srv, model.MemoryMiB, priority, command, req.Msg.ClientPid, req.Msg.Detach)
	if err != nil {
		return apiError(err)
	}
	granted := false
	defer func() {
		if !granted {
			// The client went away or the send failed: withdraw.
			a.s.broker.end(j.ID, store.JobCanceled, sql.NullInt64{}, "withdrawn by the client", "")
		}
	}()
	var last *hacv1.Waiting
	refresh := time.NewTimer(waitingRefresh)
	defer refresh.Stop()
	for {
		cur := a.s.broker.published(j)
		switch {
		case cur.ended:
			granted = true // nothing to withdraw
			if cur.endErr != nil {
				return apiError(cur.endErr)
			}
			return connect.NewError(connect.CodeAborted, fmt.Errorf("the job ended before it started"))
		case cur.granted:
			grant, err := a.grant(ctx, cur)
			if err != nil {
				return apiError(err)
			}
			if err := stream.Send(&hacv1.AllocateResponse{Event: &hacv1.AllocateResponse_Grant{Grant: grant}}); err != nil {
				return err
			}
			granted = true
			return nil
		default:
			// Nil while a grant or an end commits: its publication wakes us.
			w := a.waiting(cur.ID)
			if w != nil && (last == nil || w.Reason != last.Reason || w.Position != last.Position || w.QueueLength != last.QueueLength ||
				w.GetHolder().GetJobId() != last.GetHolder().GetJobId() || minute(w.EstimatedStart) != minute(last.EstimatedStart)) {
				if err := stream.Send(&hacv1.AllocateResponse{Event: &hacv1.AllocateResponse_Waiting{Waiting: w}}); err != nil {
					return err
				}
				last = w
			}
		}
		// A grant or an end wakes the stream at once; its place, which
		// moves whenever another job starts or leaves, is read again at
		// most once a refresh, so that a long queue costs no more per job
		// than a short one.
		refresh.Reset(waitingRefresh + rand.N(waitingRefresh/5))
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-j.changed:
		case <-refresh.C:
		}
	}
}

// waitingRefresh is how often a waiting client's place is read again
// (plus up to a fifth more, so that waiting streams do not wake together).
const waitingRefresh = time.Second

// waiting says where a waiting job stands, in the client's terms; nil
// once it no longer waits.
func (a acceleratorService) waiting(id int64) *hacv1.Waiting {
	p, ok := a.s.broker.placeOf(id)
	if !ok {
		return nil
	}
	w := &hacv1.Waiting{JobId: strconv.FormatInt(id, 10)}
	switch p.wait.Reason {
	case sched.Busy:
		w.Reason = hacv1.Waiting_REASON_BUSY
		if h := p.holder; h != nil {
			w.Holder = &hacv1.Holder{JobId: strconv.FormatInt(h.ID, 10), ClientPid: h.ClientPID, Command: h.Command}
		}
	case sched.PoolFull:
		w.Reason = hacv1.Waiting_REASON_POOL_FULL
		w.Position, w.QueueLength = int32(p.wait.Position), int32(p.waiting)
		if !p.estimate.IsZero() {
			w.EstimatedStart = timestamppb.New(p.estimate)
			w.EstimateSamples, w.EstimateBasis = int32(p.basis.samples), p.basis.of
		}
	}
	return w
}

// grant builds the grant of a running job: one worker per node, each with a
// ticket signed by that node's key.
func (a acceleratorService) grant(ctx context.Context, j jobState) (*hacv1.Grant, error) {
	g := &hacv1.Grant{JobId: strconv.FormatInt(j.ID, 10), Model: j.Model, MemoryMib: j.MemoryMiB,
		LeaseTtlSeconds: int32(a.s.cfg.LeaseTTL.Seconds()), OnImage: j.image != "" && a.s.cfg.Servers != nil, Detached: j.Detached}
	var order []string
	byNode := map[string]*hacv1.Worker{}
	for _, p := range j.Placements {
		w := byNode[p.Node]
		if w == nil {
			w = &hacv1.Worker{Node: p.Node}
			byNode[p.Node] = w
			order = append(order, p.Node)
		}
		w.GpuUuids = append(w.GpuUuids, p.GPU)
		w.MemoryMib += p.MemoryMiB
	}
	exp := a.s.cfg.Now().Add(a.s.cfg.TicketTTL).Unix()
	env, err := a.s.environment(j)
	if err != nil {
		return nil, err
	}
	for rank, name := range order {
		w := byNode[name]
		key, addr, keyPin, err := a.s.broker.nodeKey(name)
		if err != nil {
			return nil, err
		}
		mem := w.MemoryMib
		if mem > j.MemoryMiB {
			mem = j.MemoryMiB
		}
		w.Address, w.CaPin, w.KeyPin = addr, a.s.tls.workerPin, keyPin
		w.Ticket = ticket.Sign(key, ticket.Claims{JobID: j.ID, User: j.UserID, Node: name, Model: j.Model, MemoryMiB: mem,
			GPUs: w.GpuUuids, Rank: rank, Nodes: len(order), Expires: exp, Detached: j.Detached, Environment: env})
		g.Workers = append(g.Workers, w)
	}
	return g, nil
}

// ownJob returns a live job the principal may act on.
func (a acceleratorService) ownJob(ctx context.Context, rawID string) (jobState, error) {
	id, err := parseJobID(rawID)
	if err != nil {
		return jobState{}, err
	}
	j, ok := a.s.broker.job(id)
	if !ok {
		return jobState{}, fmt.Errorf("%w: job %d is not running", ErrUnknownJob, id)
	}
	if !principalFrom(ctx).owns(&j) {
		return jobState{}, fmt.Errorf("%w: job %d", ErrUnknownJob, id)
	}
	return j, nil
}

// parseJobID reads a job id from a request.
func parseJobID(raw string) (int64, error) {
	id, err := strconv.ParseInt(raw, 10, 64)
	if err != nil || id <= 0 {
		return 0, fmt.Errorf("%w: job id %q is not a positive number", ErrInvalid, raw)
	}
	return id, nil
}

// owns reports whether the principal may act on job j: its server's, its
// user's, or an admin's.
func (p principal) owns(j *jobState) bool {
	return !((p.kind == store.ServerToken && j.ServerID != p.serverID) || (p.kind == store.UserToken && j.UserID != p.user.ID && !p.user.Admin))
}

// RenewLease never waits for the scheduling lock (broker.renew), so that a
// busy queue cannot make a client's lease run out.
func (a acceleratorService) RenewLease(ctx context.Context, req *connect.Request[hacv1.RenewLeaseRequest]) (*connect.Response[hacv1.RenewLeaseResponse], error) {
	id, err := parseJobID(req.Msg.JobId)
	if err != nil {
		return nil, apiError(err)
	}
	p := principalFrom(ctx)
	ttl := a.s.cfg.LeaseTTL
	if req.Msg.Suspended {
		ttl = max(a.s.cfg.SuspendedLease, ttl)
	}
	if err := a.s.broker.renew(id, ttl, p.owns); err != nil {
		return nil, apiError(err)
	}
	return connect.NewResponse(&hacv1.RenewLeaseResponse{LeaseTtlSeconds: int32(ttl.Seconds())}), nil
}

func (a acceleratorService) Release(ctx context.Context, req *connect.Request[hacv1.ReleaseRequest]) (*connect.Response[hacv1.ReleaseResponse], error) {
	j, err := a.ownJob(ctx, req.Msg.JobId)
	if err != nil {
		if codeOf(err) == connect.CodeNotFound {
			return connect.NewResponse(&hacv1.ReleaseResponse{}), nil // already released
		}
		return nil, apiError(err)
	}
	state, code := store.JobCanceled, sql.NullInt64{}
	if req.Msg.HasExitCode {
		code = sql.NullInt64{Int64: int64(req.Msg.ExitCode), Valid: true}
		state = stateForExit(req.Msg.ExitCode)
	}
	if _, err := a.s.broker.end(j.ID, state, code, "released by the client", ""); err != nil {
		return nil, apiError(err)
	}
	return connect.NewResponse(&hacv1.ReleaseResponse{}), nil
}

func stateForExit(code int32) store.JobState {
	if code == 0 {
		return store.JobCompleted
	}
	return store.JobFailed
}

func (a acceleratorService) accelerator(srv store.Server) (*hacv1.Accelerator, error) {
	m, err := a.s.cfg.Catalog.Lookup(srv.Model)
	if err != nil {
		return nil, err
	}
	acc := &hacv1.Accelerator{Server: srv.Name, DisplayName: catalog.DisplayName, Token: srv.AcceleratorToken,
		Model: srv.Model, MemoryMib: m.MemoryMiB}
	if j, ok := a.s.broker.serverJob(srv.ID); ok && j.State == store.JobRunning {
		acc.Job = jobProto(j)
	}
	return acc, nil
}

func (a acceleratorService) GetAccelerator(ctx context.Context, req *connect.Request[hacv1.GetAcceleratorRequest]) (*connect.Response[hacv1.GetAcceleratorResponse], error) {
	srv, err := a.s.resolveServer(ctx, principalFrom(ctx), req.Msg.Server)
	if err != nil {
		return nil, apiError(err)
	}
	acc, err := a.accelerator(srv)
	if err != nil {
		return nil, apiError(err)
	}
	return connect.NewResponse(&hacv1.GetAcceleratorResponse{Accelerator: acc, ServerVersion: version.Version}), nil
}

func (a acceleratorService) SwitchModel(ctx context.Context, req *connect.Request[hacv1.SwitchModelRequest]) (*connect.Response[hacv1.SwitchModelResponse], error) {
	srv, err := a.s.resolveServer(ctx, principalFrom(ctx), req.Msg.Server)
	if err != nil {
		return nil, apiError(err)
	}
	if _, err := a.s.cfg.Catalog.Lookup(req.Msg.Model); err != nil {
		return nil, apiError(err)
	}
	if err := a.s.broker.switchModel(srv.ID, req.Msg.Model); err != nil {
		return nil, apiError(err)
	}
	srv.Model = req.Msg.Model
	acc, err := a.accelerator(srv)
	if err != nil {
		return nil, apiError(err)
	}
	return connect.NewResponse(&hacv1.SwitchModelResponse{Accelerator: acc}), nil
}

func (a acceleratorService) ResetAccelerator(ctx context.Context, req *connect.Request[hacv1.ResetAcceleratorRequest]) (*connect.Response[hacv1.ResetAcceleratorResponse], error) {
	srv, err := a.s.resolveServer(ctx, principalFrom(ctx), req.Msg.Server)
	if err != nil {
		return nil, apiError(err)
	}
	j, ok := a.s.broker.serverJob(srv.ID)
	if !ok || j.State != store.JobRunning {
		return connect.NewResponse(&hacv1.ResetAcceleratorResponse{}), nil
	}
	ended, err := a.s.broker.end(j.ID, store.JobCanceled, sql.NullInt64{}, "reset with hac smi --reset", "")
	if err != nil {
		return nil, apiError(err)
	}
	return connect.NewResponse(&hacv1.ResetAcceleratorResponse{Released: ended}), nil
}

func (a acceleratorService) ListModels(ctx context.Context, _ *connect.Request[hacv1.ListModelsRequest]) (*connect.Response[hacv1.ListModelsResponse], error) {
	out := &hacv1.ListModelsResponse{}
	for _, m := range a.s.cfg.Catalog {
		out.Models = append(out.Models, &hacv1.Model{Name: m.Name, MemoryMib: m.MemoryMiB})
	}
	return connect.NewResponse(out), nil
}

func (a acceleratorService) GetVersion(context.Context, *connect.Request[hacv1.GetVersionRequest]) (*connect.Response[hacv1.GetVersionResponse], error) {
	return connect.NewResponse(&hacv1.GetVersionResponse{Version: version.Version}), nil
}

func jobProto(j jobState) *hacv1.Job {
	out := &hacv1.Job{Id: strconv.FormatInt(j.ID, 10), Server: j.serverName, User: j.userName, Model: j.Model,
		State: string(j.State), Command: j.Command, ClientPid: j.ClientPID, Priority: int32(j.Priority), MemoryMib: j.MemoryMiB,
		SubmittedAt: ts(j.SubmittedAt), AllocatedAt: ts(j.AllocatedAt), EndedAt: ts(j.EndedAt),
		UsedMib: j.usedMiB, Pid: j.pid, EndReason: j.EndReason, Detached: j.Detached}
	if j.stopping != nil {
		out.StoppingSince = ts(j.stopping.since)
	}
	if j.ExitCode.Valid {
		out.ExitCode, out.HasExitCode = int32(j.ExitCode.Int64), true
	}
	for _, p := range j.Placements {
		out.Placements = append(out.Placements, &hacv1.Placement{Node: p.Node, GpuUuid: p.GPU, MemoryMib: p.MemoryMiB})
	}
	return out
}

func ts(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

// minute is a timestamp to the minute, for telling whether an estimate
// moved enough to tell the client again (0 when unset).
func minute(t *timestamppb.Timestamp) int64 {
	if t == nil {
		return 0
	}
	return t.AsTime().Unix() / 60
}
