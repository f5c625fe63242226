package hacv1

// AgentProtocolVersion is the version of the protocol between a node's
// agent and the control plane (AgentService) and between clients and the
// agent (WorkerService). An agent and a control plane of other versions
// refuse each other at Join and RegisterNode. This file is written by hand
// beside the generated code, which go generate ./gen leaves it.
//
// History:
//   - 1 (2026-11-28): RegisterNode, Heartbeat, JobEnded; Exec on the worker.
//   - 2 (2026-12-01): Join; every call as the node's own credential; the
//     ticket also in the Hac-Ticket header of Exec.
//   - 3: a worker certificate per node; images (GetImage, Start.environment).
//   - 4: detached jobs: tickets with an access (Output, Attach, Fetch),
//     heartbeats that terminate jobs with a grace period.
const AgentProtocolVersion = 4
