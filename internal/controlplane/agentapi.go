package controlplane

import (
	"context"
	"crypto/rand"
	"database/sql"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"connectrpc.com/connect"

	hacv1 "github.com/hac-project/hac/gen/hac/v1"
	"github.com/hac-project/hac/internal/store"
)

// agentService implements hacv1connect.AgentServiceHandler.
type agentService struct{ s *Server }

func (a agentService) RegisterNode(ctx context.Context, req *connect.Request[hacv1.RegisterNodeRequest]) (*connect.Response[hacv1.RegisterNodeResponse], error) {
	m := req.Msg
	if m.ProtocolVersion != hacv1.AgentProtocolVersion {
		return nil, apiError(fmt.Errorf("%w: the agent speaks %d, this control plane %d", ErrNodeProtocol, m.ProtocolVersion, hacv1.AgentProtocolVersion))
	}
	if err := asNode(ctx, m.Name); err != nil {
		return nil, apiError(err)
	}
	if _, _, err := net.SplitHostPort(m.Address); err != nil {
		return nil, apiError(fmt.Errorf("%w: node address %q: want host:port", ErrInvalid, m.Address))
	}
	if len(m.Gpus) == 0 || len(m.Gpus) > 64 {
		return nil, apiError(fmt.Errorf("%w: a node reports 1 to 64 GPUs, not %d", ErrInvalid, len(m.Gpus)))
	}
	chain, keyPin, err := a.s.tls.workerCert(m.Name, m.WorkerCsr)
	if err != nil {
		return nil, apiError(err)
	}
	key := make([]byte, 32)
	rand.Read(key)
	n := store.Node{Name: m.Name, Address: m.Address, TicketKey: key, State: store.NodeReady, RegisteredAt: a.s.cfg.Now(), WorkerKeyPin: keyPin}
	seen := map[string]bool{}
	for _, g := range m.Gpus {
		if g.Uuid == "" || len(g.Uuid) > 128 || seen[g.Uuid] || g.MemoryMib <= 0 || g.MemoryMib > maxGPUMemoryMiB || len(g.Name) > 256 {
			return nil, apiError(fmt.Errorf("%w: GPU %d: every GPU needs a unique UUID and a memory size of 1 MiB to 4 TiB", ErrInvalid, g.Index))
		}
		seen[g.Uuid] = true
		n.GPUs = append(n.GPUs, store.GPU{UUID: g.Uuid, Index: int(g.Index), Name: g.Name, MemoryMiB: g.MemoryMib})
	}
	if err := a.s.broker.registerNode(n); err != nil {
		return nil, apiError(err)
	}
	// An agent on the servers' gateway is one of the host ports servers reach.
	if a.s.cfg.Servers != nil {
		if err := a.s.applyRules(ctx); err != nil {
			a.s.cfg.Logger.Error("apply network rules", "err", err)
		}
	}
	return connect.NewResponse(&hacv1.RegisterNodeResponse{TicketKey: key, ProtocolVersion: hacv1.AgentProtocolVersion,
		HeartbeatIntervalMs: int32(a.s.cfg.HeartbeatInterval.Milliseconds()), WorkerCertificate: chain}), nil
}

// maxGPUMemoryMiB bounds what a node may claim of one GPU.
const maxGPUMemoryMiB = 4 << 20

func (a agentService) Heartbeat(ctx context.Context, req *connect.Request[hacv1.HeartbeatRequest]) (*connect.Response[hacv1.HeartbeatResponse], error) {
	if err := asNode(ctx, req.Msg.Name); err != nil {
		return nil, apiError(err)
	}
	running := map[int64]jobReport{}
	for _, j := range req.Msg.Jobs {
		id, err := strconv.ParseInt(j.JobId, 10, 64)
		if err != nil {
			return nil, apiError(fmt.Errorf("%w: job id %q", ErrInvalid, j.JobId))
		}
		running[id] = jobReport{pid: j.Pid, usedMiB: j.UsedMib, suspended: time.Duration(max(j.SuspendedMs, 0)) * time.Millisecond}
	}
	beat := a.s.broker.heartbeat(req.Msg.Name, running)
	out := &hacv1.HeartbeatResponse{Reregister: beat.reregister}
	if len(req.Msg.WorkerCsr) > 0 {
		chain, keyPin, err := a.s.tls.workerCert(req.Msg.Name, req.Msg.WorkerCsr)
		if err != nil {
			return nil, apiError(err)
		}
		// A renewal keeps the key that registered; a new key registers.
		if _, _, registered, err := a.s.broker.nodeKey(req.Msg.Name); err != nil || registered != keyPin {
			return nil, apiError(fmt.Errorf("%w: a worker certificate is renewed for the key the node registered with; register again for a new key", ErrInvalid))
		}
		out.WorkerCertificate = chain
	}
	for _, id := range beat.stop {
		out.StopJobs = append(out.StopJobs, strconv.FormatInt(id, 10))
	}
	for id, o := range beat.terminate {
		out.Terminate = append(out.Terminate, &hacv1.Terminate{JobId: strconv.FormatInt(id, 10), GraceSeconds: int32(o.grace / time.Second), Reason: o.reason})
	}
	if a.s.cfg.Servers != nil {
		out.Images = a.s.cfg.Servers.ImageDigests()
	}
	return connect.NewResponse(out), nil
}

func (a agentService) JobEnded(ctx context.Context, req *connect.Request[hacv1.JobEndedRequest]) (*connect.Response[hacv1.JobEndedResponse], error) {
	if err := asNode(ctx, req.Msg.Name); err != nil {
		return nil, apiError(err)
	}
	id, err := strconv.ParseInt(req.Msg.JobId, 10, 64)
	if err != nil {
		return nil, apiError(fmt.Errorf("%w: job id %q", ErrInvalid, req.Msg.JobId))
	}
	j, ok := a.s.broker.job(id)
	if !ok && req.Msg.InfrastructureFault {
		// The client's release came first, but the node says the run
		// failed on its side: it is not charged (SPEC A10).
		if err := a.s.broker.markFault(id, req.Msg.Name, faultOf(req.Msg.Reason)); err != nil {
			return nil, apiError(err)
		}
	}
	if !ok || len(j.Placements) == 0 || j.Placements[0].Node != req.Msg.Name {
		// Only the node that runs the program (its first) says how it
		// ended: a job's other nodes hold GPUs for it, and a client can
		// open a stream on them and break it.
		return connect.NewResponse(&hacv1.JobEndedResponse{}), nil
	}
	state, reason, fault := stateForExit(req.Msg.ExitCode), req.Msg.Reason, ""
	if req.Msg.InfrastructureFault {
		state, fault = store.JobLost, faultOf(reason)
	} else if j.stopping != nil {
		state = store.JobCanceled // it ended as hac cancel asked
		if reason == "" {
			reason = j.stopping.reason
		}
	}
	if reason == "" {
		reason = "program exited"
	}
	if _, err := a.s.broker.end(id, state, sql.NullInt64{Int64: int64(req.Msg.ExitCode), Valid: true}, reason, fault); err != nil {
		return nil, apiError(err)
	}
	return connect.NewResponse(&hacv1.JobEndedResponse{}), nil
}

// faultOf is the fault a node reports, as the meter keeps it.
func faultOf(reason string) string {
	if len(reason) > 200 {
		reason = reason[:200]
	}
	if reason == "" {
		reason = "no reason given"
	}
	return "the node failed to run the job: " + strings.ToValidUTF8(reason, "?")
}
