// Package runner starts and stops one job's program on a node.
//
// With a Sandbox (SPEC P8; how it is built: docs/decisions/0002), the
// program runs as a uid of its own with no capabilities, no_new_privs and a
// seccomp filter, in its own mount, PID, IPC and cgroup namespaces, on a
// root assembled from the node's runtime (read-only), its own /tmp, home
// and workspace, and a /dev where only its granted devices open (a BPF
// device program); pids and memory limits bound it on pure cgroup v2 and on
// hybrid hosts. The agent's own binary, run again as InitName, builds all
// that as PID 1 of the job's namespaces (Init); a Launcher keeps one such
// init warm (made at nice 19, so that making it does not slow running
// jobs), so a job's start does not wait for it.
//
// Without one (hac agent --no-sandbox), the program starts in a new
// session, inside a cgroup of its own (cgroup v2, entered at clone with
// UseCgroupFD; else a v1 freezer cgroup, entered through a /bin/sh
// trampoline before exec; else only the process group, as Job.Isolation
// says). Either way it gets a pseudo-terminal when the client has one,
// else pipes, and stopping a job kills the whole cgroup (cgroup.kill, or
// freezing it and killing every member), so children that called setsid
// or daemonized die too.
//
// A job ends when its main process exits; the rest of its tree is killed
// then (SPEC A4: nothing of the program survives on the node). A
// sandbox's init kills and reaps the rest of its namespace before it
// reports the end, so Wait returns without waiting for the kernel to take
// the namespaces down; Released waits for that and the cgroups' removal.
package runner
