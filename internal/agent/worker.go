package agent

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"

	"connectrpc.com/connect"

	hacv1 "github.com/hac-project/hac/gen/hac/v1"
	"github.com/hac-project/hac/internal/gpu"
	"github.com/hac-project/hac/internal/runner"
	"github.com/hac-project/hac/internal/ticket"
	"github.com/hac-project/hac/internal/workspace"
)

// worker implements hacv1connect.WorkerServiceHandler.
type worker struct{ a *Agent }

// jobRun is one job on this node.
type jobRun struct {
	id       int64
	limitMiB int64 // the accelerator memory the job may use
	mu       sync.Mutex
	job      *runner.Job
	// reason is why the agent killed the job, if it did.
	reason  string
	usedMiB int64
	// fakeDir holds the job's simulated GPU allocations, if any.
	fakeDir string
	// stopBy and stopReason: hac cancel's order, once given (terminate).
	stopBy     time.Time
	stopReason string
	stopTimer  *time.Timer
	// suspendedAt is when the client suspended the job (Ctrl+Z); zero
	// while it runs.
	suspendedAt time.Time
}

// setSuspended records that the client suspended the job or let it go on.
func (j *jobRun) setSuspended(frozen bool) {
	j.mu.Lock()
	defer j.mu.Unlock()
	switch {
	case !frozen:
		j.suspendedAt = time.Time{}
	case j.suspendedAt.IsZero():
		j.suspendedAt = time.Now()
	}
}

// suspendedFor is how long the client has held the job suspended.
func (j *jobRun) suspendedFor() time.Duration {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.suspendedAt.IsZero() {
		return 0
	}
	return max(time.Since(j.suspendedAt), time.Millisecond)
}

// terminate stops the job as hac cancel asks: SIGTERM to each of its
// processes now, SIGKILL to its whole tree once grace has passed. The order is repeated
// with every heartbeat: only one that ends sooner changes anything.
func (j *jobRun) terminate(grace time.Duration, reason string) {
	j.mu.Lock()
	defer j.mu.Unlock()
	by := time.Now().Add(grace)
	if !j.stopBy.IsZero() && !by.Before(j.stopBy) {
		return
	}
	first := j.stopBy.IsZero()
	j.stopBy, j.stopReason = by, reason
	if j.job == nil {
		// Not started yet: Exec does not start it.
		if j.reason == "" {
			j.reason = reason
		}
		return
	}
	if first {
		j.job.SignalAll(syscall.SIGTERM)
		j.suspendedAt = time.Time{} // thawed too: it is being stopped
	}
	if j.stopTimer != nil {
		j.stopTimer.Stop()
	}
	j.stopTimer = time.AfterFunc(grace, func() { j.kill(fmt.Sprintf("%s: killed after its grace period of %v", reason, grace)) })
}

// endReason is why the job ended, if not on its own: the agent's kill, or
// else hac cancel's order that it followed.
func (j *jobRun) endReason() string {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.stopTimer != nil {
		j.stopTimer.Stop()
	}
	return cmp.Or(j.reason, j.stopReason)
}

// used returns the GPU memory the job used at the last look.
func (j *jobRun) used() int64 {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.usedMiB
}

func (j *jobRun) pid() int {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.job == nil {
		return 0
	}
	return j.job.Pid()
}

// kill stops the job's whole tree and remembers why.
func (j *jobRun) kill(reason string) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.reason == "" {
		j.reason = reason
	}
	if j.job != nil {
		j.job.Kill()
	}
}

// killReason is why the agent killed the job (or will, once started).
func (j *jobRun) killReason() string {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.reason
}

// signal passes a client's signal to the program: those a terminal or a
// user sends; SIGKILL (a second Ctrl+C) kills the whole tree.
func (j *jobRun) signal(sig syscall.Signal) {
	switch sig {
	case syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGWINCH:
		j.mu.Lock()
		job := j.job
		j.mu.Unlock()
		if job != nil {
			job.Signal(sig)
		}
	case syscall.SIGKILL:
		j.kill("killed with a second Ctrl+C")
	}
}

// sender serializes sends on the stream; output goroutines share it.
type sender struct {
	mu     sync.Mutex
	stream *connect.BidiStream[hacv1.ExecRequest, hacv1.ExecResponse]
}

func (s *sender) send(m *hacv1.ExecResponse) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stream.Send(m)
}

// output is an io.Writer that sends a program's stdout or stderr.
type output struct {
	s      *sender
	stderr bool
}

func (o output) Write(p []byte) (int, error) {
	msg := &hacv1.ExecResponse{}
	if o.stderr {
		msg.Msg = &hacv1.ExecResponse_Stderr{Stderr: p}
	} else {
		msg.Msg = &hacv1.ExecResponse_Stdout{Stdout: p}
	}
	if err := o.s.send(msg); err != nil {
		return 0, err
	}
	return len(p), nil
}

// userError ends an exchange with a message for the user.
func userError(s *sender, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	s.send(&hacv1.ExecResponse{Msg: &hacv1.ExecResponse_Error{Error: msg}})
	return nil
}

func (w *worker) Exec(ctx context.Context, stream *connect.BidiStream[hacv1.ExecRequest, hacv1.ExecResponse]) error {
	a := w.a
	s := &sender{stream: stream}
	first, err := stream.Receive()
	if err != nil {
		return err
	}
	start := first.GetStart()
	if start == nil {
		return userError(s, "protocol error: the first message must be Start")
	}
	// ticketFirst checked the header's ticket; the Start message names the same.
	claims, ok := ctx.Value(claimsKey{}).(ticket.Claims)
	if !ok || start.Ticket != stream.RequestHeader().Get(TicketHeader) || claims.Access != "" {
		return connect.NewError(connect.CodePermissionDenied, errTicket)
	}
	a.mu.Lock()
	if _, dup := a.used[claims.JobID]; dup {
		a.mu.Unlock()
		return connect.NewError(connect.CodePermissionDenied, errors.New("this ticket was already used: run the program again"))
	}
	a.used[claims.JobID] = time.Unix(claims.Expires, 0)
	run := &jobRun{id: claims.JobID, limitMiB: claims.MemoryMiB}
	a.jobs[claims.JobID] = run
	a.mu.Unlock()
	// What the job holds goes when it ends: when Exec returns, or, for a
	// detached job, when its program ended (handedOff).
	handedOff := false
	forget := func() {
		a.mu.Lock()
		delete(a.jobs, claims.JobID)
		a.mu.Unlock()
	}
	defer func() {
		if !handedOff {
			forget()
		}
	}()

	if len(start.Argv) == 0 || start.Argv[0] == "" {
		go a.reportEnd(claims.JobID, 2, "empty command", false)
		return userError(s, "the command is empty")
	}
	if err := workspace.Validate(start.Manifest); err != nil {
		go a.reportEnd(claims.JobID, 2, "bad workspace", false)
		return userError(s, "the workspace was refused: %v", err)
	}
	if err := checkEnvironment(claims, start.Environment); err != nil {
		go a.reportEnd(claims.JobID, 2, "bad environment", false)
		return userError(s, "the server's files were refused: %v", err)
	}
	uid := -1
	if !a.cfg.NoSandbox {
		if uid, err = a.allocUID(); err != nil {
			go a.reportEnd(claims.JobID, 1, "no job uid free", true)
			return userError(s, "the node has no room for another job: %v", err)
		}
	}
	folders := newJobFolders(filepath.Join(a.cfg.DataDir, "jobs", fmt.Sprint(claims.JobID)))
	var job *runner.Job
	var files jobFiles
	a.releases.Add(1)
	// The job's folders, files and uid are kept until its cgroups are gone
	// (a sandbox's namespaces are taken down after its end), off the
	// client's wait.
	cleanup := func() {
		go func() {
			defer a.releases.Done()
			if job != nil {
				if err := job.Released(); err != nil {
					// Its processes may live on: their uid is not given out
					// again while this agent runs.
					a.log.Warn("job cleanup; its uid stays reserved", "job", claims.JobID, "uid", uid, "err", err)
					return
				}
			}
			files.release()
			os.RemoveAll(folders.dir)
			os.RemoveAll(folders.workOverlay()) // a detached job's is beside its record's
			if uid >= 0 {
				a.freeUID(uid)
			}
		}()
	}
	defer func() {
		if !handedOff {
			cleanup()
		}
	}()
	// Every job's output is kept (hac logs); a detached job's workspace too.
	kept, err := a.keep(run, claims.User, claims.Detached, start.KeepStdin)
	if err != nil {
		go a.reportEnd(claims.JobID, 1, "job record", true)
		return userError(s, "the node could not keep a record of the job: %v", err)
	}
	defer func() {
		if job == nil {
			a.discard(kept) // never started: nothing to keep
		}
	}()
	if claims.Detached {
		folders.work = kept.work // the workspace outlives the job's folder
	}
	if err := folders.make(uid); err != nil {
		go a.reportEnd(claims.JobID, 1, "job folder", true)
		return userError(s, "the node could not prepare the job's folder: %v", err)
	}
	workDir := folders.work
	files, err = w.receiveFiles(ctx, stream, s, claims, start, workDir, uid)
	if err != nil {
		var pe *prepError
		errors.As(err, &pe)
		go a.reportEnd(claims.JobID, 1, pe.reason, pe.fault)
		return userError(s, "%v", err)
	}
	spec, err := a.jobSpec(folders, uid, claims, start, files)
	if err != nil {
		go a.reportEnd(claims.JobID, 1, "sandbox", true)
		return userError(s, "the node could not prepare the job's sandbox: %v", err)
	}
	spec.Stdout, spec.Stderr = output{s: s}, output{s: s, stderr: true}
	if err := kept.begin(start.Manifest, a.cfg.JobOutputBytes, a.cfg.RunOutputBytes); err != nil {
		go a.reportEnd(claims.JobID, 1, "job record", true)
		return userError(s, "the node could not keep the job's output: %v", err)
	}
	if claims.Detached {
		// No client, so no terminal: the output goes to the node's record.
		spec.TTY, spec.Stdout, spec.Stderr = false, kept.output().writer(streamStdout), kept.output().writer(streamStderr)
	} else {
		// The record first: a client that goes does not stop the copy.
		spec.Stdout = io.MultiWriter(kept.output().writer(streamStdout), spec.Stdout)
		spec.Stderr = io.MultiWriter(kept.output().writer(streamStderr), spec.Stderr)
	}
	if a.simulated() {
		run.fakeDir = folders.gpu
	}
	if reason := run.killReason(); reason != "" {
		// Stopped (hac cancel) while its files came: it never starts.
		go a.reportEnd(claims.JobID, 143, reason, false)
		return userError(s, "%s", reason)
	}
	job, err = a.launcher.Start(spec)
	if errors.Is(err, runner.ErrSandbox) {
		a.log.Error("job sandbox", "job", claims.JobID, "err", err)
		go a.reportEnd(claims.JobID, 1, "sandbox", true)
		return userError(s, "the node could not start the job's sandbox (an operator can see why in the agent's log); run the program again")
	}
	if err != nil {
		code := 126
		if errors.Is(err, runner.ErrNotFound) {
			code = 127
		}
		go a.reportEnd(claims.JobID, code, "command not started", false)
		msg := "hac: " + err.Error() + "\n"
		s.send(&hacv1.ExecResponse{Msg: &hacv1.ExecResponse_Stderr{Stderr: []byte(msg)}})
		s.send(&hacv1.ExecResponse{Msg: &hacv1.ExecResponse_Exited{Exited: &hacv1.Exited{ExitCode: int32(code)}}})
		return newSyncer(s, workDir, start.Manifest, a.log.Warn).finish()
	}
	run.mu.Lock()
	run.job = job
	reason := run.reason
	run.mu.Unlock()
	if reason != "" {
		job.Kill()
	}
	s.send(&hacv1.ExecResponse{Msg: &hacv1.ExecResponse_Started{Started: &hacv1.Started{Pid: int64(job.Pid())}}})
	a.log.Info("job started", "job", claims.JobID, "pid", job.Pid(), "gpus", claims.GPUs, "isolation", job.Isolation(), "cgroup", job.Cgroup(), "detached", claims.Detached)
	if claims.Detached {
		// The client may go: the job runs on, and what it holds goes
		// when its program ends.
		if start.KeepStdin {
			kept.openStdin(job.Stdin()) // for hac attach
		} else {
			job.Stdin().Close()
		}
		handedOff = true
		go func() {
			defer cleanup()
			defer forget()
			exit, err := job.Wait()
			if err != nil {
				a.log.Warn("job cleanup", "job", claims.JobID, "err", err)
			}
			reason := run.endReason()
			a.log.Info("job ended", "job", claims.JobID, "exit", exit.Code, "reason", reason, "detached", true)
			// The record first: whoever hears of the end finds it complete.
			if err := kept.ended(keptEnd{ExitCode: int32(exit.Code), Signal: int32(exit.Signal), Reason: reason, At: time.Now()}); err != nil {
				a.log.Warn("keep a detached job's record", "job", claims.JobID, "err", err)
			}
			go a.reportEnd(claims.JobID, exit.Code, reason, false)
		}()
		return nil
	}

	clientGone := make(chan struct{})
	go w.relayInput(ctx, stream, s, job, run, clientGone)
	// Files come back while the program runs too, so checkpoints survive.
	changes := newSyncer(s, workDir, start.Manifest, a.log.Warn)
	stopSync, syncDone := make(chan struct{}), make(chan struct{})
	go func() { changes.every(a.cfg.SyncInterval, stopSync); close(syncDone) }()
	exit, err := job.Wait()
	close(stopSync)
	<-syncDone
	if err != nil {
		a.log.Warn("job cleanup", "job", claims.JobID, "err", err)
	}
	reason = run.endReason()
	go a.reportEnd(claims.JobID, exit.Code, reason, false)
	a.log.Info("job ended", "job", claims.JobID, "exit", exit.Code, "reason", reason)
	go kept.ended(keptEnd{ExitCode: int32(exit.Code), Signal: int32(exit.Signal), Reason: reason, At: time.Now()})
	select {
	case <-clientGone:
		return nil
	default:
	}
	s.send(&hacv1.ExecResponse{Msg: &hacv1.ExecResponse_Exited{Exited: &hacv1.Exited{ExitCode: int32(exit.Code), Signal: int32(exit.Signal), Reason: reason}}})
	return changes.finish()
}

// jobSpec describes how the job's program runs: in a sandbox as uid, or,
// with --no-sandbox, as the agent's user in the job folder.
func (a *Agent) jobSpec(f jobFolders, uid int, c ticket.Claims, start *hacv1.Start, files jobFiles) (runner.Spec, error) {
	spec := runner.Spec{Name: fmt.Sprint(c.JobID), Argv: start.Argv, TTY: start.Tty, CgroupRoot: a.cgroupRoot()}
	if start.Window != nil {
		spec.Rows, spec.Cols = uint16(start.Window.Rows), uint16(start.Window.Cols)
	}
	home, gpuDir := f.home, f.gpu
	spec.Dir = f.work
	if files.jos != nil {
		sb, dir, env, err := a.osSandbox(f, uid, c, start, files)
		if err != nil {
			return spec, err
		}
		spec.Sandbox, spec.Dir, spec.Env = sb, dir, env
		return spec, nil
	}
	if uid > 0 {
		inside := workDirInside(start.Cwd)
		sb, err := a.sandbox(f, uid, c, inside, files.tree)
		if err != nil {
			return spec, err
		}
		spec.Sandbox, spec.Dir, home, gpuDir = sb, inside, jobHome, jobFakeGPU
	}
	var extra []string
	if a.simulated() {
		extra = append(extra, gpu.FakeUsageEnv+"="+gpuDir)
	}
	spec.Env = jobEnv(start.Env, c, "", home, start.Tty, extra...)
	return spec, nil
}

// simulated reports whether the node's GPUs are simulated ones.
func (a *Agent) simulated() bool {
	devs := a.devices()
	return len(devs) > 0 && gpu.IsFake(devs[0])
}

// prepError is a job's files that could not be made ready: why, for the
// job's end, and whether the node is at fault.
type prepError struct {
	reason string
	fault  bool
	err    error
}

func (e *prepError) Error() string { return e.err.Error() }

// jobFiles are a job's files once received.
type jobFiles struct {
	// jos describes a job on its server's files: its layers and image.
	jos *jobOS
	// tree is the node's shared read-only copy of the workspace, the lower
	// layer of its overlay in the sandbox; "" when it was copied into the
	// job's folder (no sandbox, an empty workspace, or a data folder
	// without overlays), and releaseTree nil.
	tree        string
	releaseTree func()
}

// release lets go of what the files hold, once the job's namespaces are
// gone.
func (f jobFiles) release() {
	if f.releaseTree != nil {
		f.releaseTree()
	}
	if f.jos != nil {
		f.jos.release()
	}
}

// nodeFailed reports whether a transfer failed on the node's side: its
// disk refused a write (a path error: full, read-only, gone). Every other
// failure is the client's: a stream it closed or broke, a protocol it did
// not keep, content that is not its hash. Only the node's own failures
// are infrastructure faults (a run that is not charged, SPEC A10): a client
// must not be able to make its run free by breaking its own upload.
func nodeFailed(err error) bool {
	var pe *fs.PathError
	var le *os.LinkError
	return !errors.Is(err, workspace.ErrHashMismatch) && (errors.As(err, &pe) || errors.As(err, &le))
}

// receiveFiles takes in a job's workspace and, for a job on its server's
// files, the server's changes and image (fetched meanwhile). A sandboxed
// job's workspace is a tree shared while its manifest is unchanged (its
// writes go to dir, the overlay's upper); without a sandbox it is copied
// into dir.
func (w *worker) receiveFiles(ctx context.Context, stream *connect.BidiStream[hacv1.ExecRequest, hacv1.ExecResponse], s *sender, c ticket.Claims, start *hacv1.Start, dir string, uid int) (files jobFiles, err error) {
	a := w.a
	owner := strconv.FormatInt(c.User, 10) // whose blobs and trees
	transferFailed := func(what string, err error) error {
		return &prepError{"workspace transfer failed", nodeFailed(err), fmt.Errorf("%s could not be transferred: %v", what, err)}
	}
	// workspaceFiles makes the received workspace the job's. An error is
	// the node's (its disk), but for a declared size that is not its
	// content's.
	workspaceFiles := func() error {
		var err error
		if uid <= 0 || a.trees == nil || len(start.Manifest.GetFiles()) == 0 {
			// No sandbox, no overlay on this disk, or nothing to show (an
			// overlay's idmapped layer costs a user namespace): a copy.
			err = a.cache.Materialize(start.Manifest, dir, uid)
		} else {
			files.tree, files.releaseTree, err = a.trees.Acquire(owner, start.Manifest)
		}
		switch {
		case errors.Is(err, workspace.ErrDeclaredSize):
			// The client's manifest: what the cache holds is not said.
			return &prepError{"bad workspace", false, errors.New("the workspace was refused: a file's declared size is not its content's")}
		case err != nil:
			a.log.Error("job workspace", "job", c.JobID, "err", err)
			return &prepError{"workspace layout failed", true, errors.New("the node could not lay out the workspace it received (an operator can see why in the agent's log: the data folder's free space and inodes); run the program again")}
		}
		return nil
	}
	if c.Image == "" || uid <= 0 {
		done, err := w.receiveBlobs(stream, s, owner, start.Manifest, start.Manifest, nil)
		if err != nil {
			return files, transferFailed("the workspace", err)
		}
		defer done()
		return files, workspaceFiles()
	}
	image := a.startImage(ctx, c.Image) // a client that goes stops the wait, not the fetch
	env := start.Environment
	all := &hacv1.Manifest{Files: append(append([]*hacv1.FileEntry(nil), start.Manifest.Files...), env.Layer.Files...)}
	if err := a.fitsCache(all); err != nil {
		return files, &prepError{"environment too large", false, err}
	}
	done, err := w.receiveBlobs(stream, s, owner, all, start.Manifest, env.Layer)
	if err != nil {
		return files, transferFailed("the workspace and the server's files", err)
	}
	defer done()
	select {
	case <-image.done:
	default:
		// Once per image and node, unless the heartbeat's prefetch was first.
		s.send(&hacv1.ExecResponse{Msg: &hacv1.ExecResponse_Stderr{Stderr: []byte(fmt.Sprintf("[info] The server's image is on its way to node %s (once per image and node)...\n", a.cfg.Name))}})
	}
	jos, err := a.prepareOS(c, env, start.Cwd, image)
	if err != nil {
		return files, &prepError{"environment", true, err}
	}
	if err := workspaceFiles(); err != nil {
		jos.release()
		return files, err
	}
	files.jos = jos
	return files, nil
}

// receiveBlobs asks owner for the blobs of the workspace and the server's
// layer (nil for none) that the cache lacks or that owner never sent
// (workspace.Cache.Reserve), and stores them; m is both together. The
// cache keeps their blobs until release. A file that changed while the
// client sent it arrives under another hash (Blob.changed_to), which its
// entry then names.
func (w *worker) receiveBlobs(stream *connect.BidiStream[hacv1.ExecRequest, hacv1.ExecResponse], s *sender, owner string, m, work, layer *hacv1.Manifest) (release func(), err error) {
	missing, reserved := w.a.cache.Reserve(m, owner)
	in := newIncoming(owner, work, layer, missing)
	release = func() {
		reserved()
		for _, u := range in.unpin {
			u()
		}
	}
	ok := false
	defer func() {
		if !ok { // an error, or a panic: the pins go either way
			release()
		}
	}()
	if err := w.receiveMissing(stream, s, in); err != nil {
		return nil, err
	}
	ok = true
	in.entries(func(e entryPath, f *hacv1.FileEntry) {
		if c, ok := in.changed[entryKey{e, f.Sha256}]; ok {
			f.Sha256, f.Size = c.sum, c.size
		}
	})
	w.a.log.Info("blobs ready", "files", len(m.Files), "blobs_received", len(missing), "changed_in_transit", len(in.changed), "bytes", workspace.TotalSize(m))
	return release, nil
}

// incoming is what a node still awaits of a workspace's blobs, from owner.
type incoming struct {
	owner       string
	work, layer *hacv1.Manifest // layer is nil without one
	// wanted are the blobs asked for: the size the manifest declares and
	// the paths that name each (a path that changed in transit is served).
	wanted  map[string]*wantedBlob
	changed map[entryKey]changedBlob // by the entry and the hash asked
	unpin   []func()
}

type wantedBlob struct {
	size  int64
	paths map[entryPath]bool
}

// entryPath names a manifest entry: the workspace's or the layer's (the
// same path may be in both).
type entryPath struct {
	layer bool
	path  string
}

// entryKey is an entry and the hash it was asked as.
type entryKey struct {
	entryPath
	sum string
}

// changedBlob is what came for one path whose file changed in transit.
type changedBlob struct {
	sum  string
	size int64
}

func newIncoming(owner string, work, layer *hacv1.Manifest, missing []string) *incoming {
	in := &incoming{owner: owner, work: work, layer: layer, wanted: map[string]*wantedBlob{}, changed: map[entryKey]changedBlob{}}
	for _, sum := range missing {
		in.wanted[sum] = &wantedBlob{paths: map[entryPath]bool{}}
	}
	in.entries(func(e entryPath, f *hacv1.FileEntry) {
		if b := in.wanted[f.Sha256]; b != nil {
			b.size, b.paths[e] = f.Size, true
		}
	})
	return in
}

// entries calls f with each entry of the workspace, then of the layer.
func (in *incoming) entries(f func(entryPath, *hacv1.FileEntry)) {
	for _, fe := range in.work.GetFiles() {
		f(entryPath{false, fe.Path}, fe)
	}
	for _, fe := range in.layer.GetFiles() {
		f(entryPath{true, fe.Path}, fe)
	}
}

// arrived stores one blob received whole in cur, asked as sum.
func (in *incoming) arrived(cur *workspace.Writer, sum string, b *hacv1.Blob) error {
	want := in.wanted[sum]
	if b.ChangedTo == "" {
		delete(in.wanted, sum)
		return cur.Commit()
	}
	entry := entryPath{b.ChangedInLayer, b.ChangedPath}
	if !want.paths[entry] || cur.Size() > want.size {
		cur.Abort()
		where := "the workspace's"
		if entry.layer {
			where = "the server layer's"
		}
		return fmt.Errorf("blob %s changed in transit, but not as a path of it (%s %q) of at most its %d bytes", sum, where, b.ChangedPath, want.size)
	}
	unpin, err := cur.CommitAs(b.ChangedTo)
	if err != nil {
		return err
	}
	in.unpin = append(in.unpin, unpin)
	in.changed[entryKey{entry, sum}] = changedBlob{b.ChangedTo, cur.Size()}
	if delete(want.paths, entry); len(want.paths) == 0 {
		delete(in.wanted, sum) // every path that named it changed
	}
	return nil
}

func (w *worker) receiveMissing(stream *connect.BidiStream[hacv1.ExecRequest, hacv1.ExecResponse], s *sender, in *incoming) error {
	missing := make([]string, 0, len(in.wanted))
	for sum := range in.wanted {
		missing = append(missing, sum)
	}
	slices.Sort(missing)
	if err := s.send(&hacv1.ExecResponse{Msg: &hacv1.ExecResponse_NeedBlobs{NeedBlobs: &hacv1.NeedBlobs{Sha256: missing}}}); err != nil {
		return err
	}
	return in.receive(w.a.cache, stream.Receive)
}

// receive stores the blobs recv brings into cache, until blobs_done: each
// blob asked, whole (its chunks in a row), at most its declared size.
func (in *incoming) receive(cache *workspace.Cache, recv func() (*hacv1.ExecRequest, error)) error {
	var cur *workspace.Writer
	var curSum string // the blob cur receives
	defer func() {
		if cur != nil {
			cur.Abort()
		}
	}()
	for {
		msg, err := recv()
		if err != nil {
			return err
		}
		if msg.GetBlobsDone() {
			break
		}
		b := msg.GetBlob()
		if b == nil {
			return errors.New("protocol error: expected blobs")
		}
		if cur == nil {
			if in.wanted[b.Sha256] == nil {
				return fmt.Errorf("blob %s was not asked for", b.Sha256)
			}
			if cur, err = cache.Create(b.Sha256, in.owner); err != nil {
				return err
			}
			curSum = b.Sha256
		} else if b.Sha256 != curSum {
			return fmt.Errorf("protocol error: a chunk of blob %s while blob %s was not whole", b.Sha256, curSum)
		}
		if _, err := cur.Write(b.Data); err != nil {
			return err
		}
		if cur.Size() > in.wanted[curSum].size {
			return fmt.Errorf("blob %s is longer than its declared %d bytes", curSum, in.wanted[curSum].size)
		}
		if b.Last {
			err := in.arrived(cur, curSum, b)
			cur = nil
			if err != nil {
				return err
			}
		}
	}
	if len(in.wanted) > 0 {
		return fmt.Errorf("%d blobs were not sent", len(in.wanted))
	}
	return nil
}

// relayInput feeds the client's stdin, signals and window sizes to the job.
// When the client goes away the job is killed: nothing outlives its client.
func (w *worker) relayInput(ctx context.Context, stream *connect.BidiStream[hacv1.ExecRequest, hacv1.ExecResponse], s *sender, job *runner.Job, run *jobRun, gone chan struct{}) {
	stdin := newStdinQueue(job.Stdin(), stdinBacklog)
	defer stdin.close()
	for {
		msg, err := stream.Receive()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return // the client half-closed: no more input, but it still listens
			}
			close(gone)
			run.kill("the client disconnected")
			return
		}
		switch m := msg.Msg.(type) {
		case *hacv1.ExecRequest_Stdin:
			// Waits while the program reads slower than it comes.
			if err := stdin.write(ctx, m.Stdin); err != nil {
				run.kill("the client sent " + err.Error())
				return
			}
		case *hacv1.ExecRequest_CloseStdin:
			stdin.close()
		case *hacv1.ExecRequest_Resize:
			job.Resize(uint16(m.Resize.Rows), uint16(m.Resize.Cols))
		case *hacv1.ExecRequest_Signal:
			switch sig := syscall.Signal(m.Signal); sig {
			case syscall.SIGTSTP, syscall.SIGCONT: // Ctrl+Z and fg: the whole tree
				frozen := sig == syscall.SIGTSTP
				if err := job.Suspend(frozen); err != nil {
					w.a.log.Warn("suspend a job", "err", err)
					frozen = false
				} else {
					run.setSuspended(frozen)
				}
				// The client stops itself once it hears this.
				s.send(&hacv1.ExecResponse{Msg: &hacv1.ExecResponse_Suspended{Suspended: frozen}})
			default:
				run.signal(sig)
			}
		case *hacv1.ExecRequest_SyncDone:
			return
		}
	}
}

// syncer sends the files the program created or changed, and remembers
// what it sent, so that each sync sends only what changed since the last.
type syncer struct {
	mu   sync.Mutex
	s    *sender
	dir  string
	base map[string]*hacv1.FileEntry // path -> what the client has
	log  func(msg string, args ...any)
}

func newSyncer(s *sender, dir string, m *hacv1.Manifest, log func(string, ...any)) *syncer {
	y := &syncer{s: s, dir: dir, base: map[string]*hacv1.FileEntry{}, log: log}
	for _, f := range m.GetFiles() {
		y.base[f.Path] = f
	}
	return y
}

// sync sends what changed since the last sync.
func (y *syncer) sync() error {
	y.mu.Lock()
	defer y.mu.Unlock()
	m := &hacv1.Manifest{}
	for _, f := range y.base {
		m.Files = append(m.Files, f)
	}
	changes, err := workspace.Changes(m, y.dir)
	if err != nil {
		y.log("list changed files", "err", err)
	}
	for _, c := range changes {
		// Stat first: a change during the send shows as a newer mtime and
		// goes again next time.
		fi, err := os.Lstat(filepath.Join(y.dir, filepath.FromSlash(c.Path)))
		if err != nil {
			continue
		}
		if err := workspace.SendChanged(y.send, y.dir, c); errors.Is(err, workspace.ErrUnreadable) {
			y.log("send a changed file", "path", c.Path, "err", err)
			continue // not sent whole: again next time
		} else if err != nil {
			return err
		}
		y.base[c.Path] = &hacv1.FileEntry{Path: c.Path, Mode: uint32(fi.Mode()), Size: fi.Size(), MtimeNs: fi.ModTime().UnixNano(), Link: c.Link}
	}
	return nil
}

// every syncs each interval until stop closes, then returns.
func (y *syncer) every(interval time.Duration, stop <-chan struct{}) {
	if interval <= 0 {
		<-stop
		return
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			if err := y.sync(); err != nil {
				return
			}
		}
	}
}

func (y *syncer) send(c *hacv1.ChangedFile) error {
	return y.s.send(&hacv1.ExecResponse{Msg: &hacv1.ExecResponse_Changed{Changed: c}})
}

// finish sends the last changes and says so.
func (y *syncer) finish() error {
	if err := y.sync(); err != nil {
		return err
	}
	return y.s.send(&hacv1.ExecResponse{Msg: &hacv1.ExecResponse_ChangesDone{ChangesDone: true}})
}
