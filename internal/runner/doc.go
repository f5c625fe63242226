// Package runner starts and stops one job's program on a node.
//
// The program starts in a new session, inside a cgroup of its own
// (cgroup v2, entered atomically at clone with UseCgroupFD), with a
// pseudo-terminal when the client has one, else pipes. Stopping a job kills
// the whole cgroup (cgroup.kill, or freezing it and killing every member),
// so children that called setsid or daemonized die too. Without a writable
// cgroup v2 the runner falls back to a v1 freezer cgroup (which the program
// enters through a /bin/sh trampoline before exec), then to the process
// group, and says so in Job.Isolation.
//
// A job ends when its main process exits; the rest of its tree is killed
// then (SPEC A4: nothing of the program survives on the node).
package runner
