// Package client is the client half of hac's protocol, for the hac
// command line and the web console alike: a connection to the control
// plane (Conn), and a job's session on its node after the grant: the
// lease (Lease), the workspace's upload (Upload), and for detached jobs
// their output (Logs), their program (Attach), their files (Fetch) and
// their end (Stop, WaitEnded), with the record this machine keeps of the
// jobs it started (Record). It knows nothing of cobra or of terminals:
// callers pass the streams to write and the signals to forward.
package client
