// Package store keeps the control plane's durable state in SQL: users,
// servers, tokens (hashed), nodes and their GPUs, jobs and their placements,
// and the meter: what each job held and each server was, priced by the
// hour (meter.go).
// SQLite is the default (one file, WAL, migrations embedded); the SQL stays in
// the subset PostgreSQL shares so that a second dialect needs only its own
// migrations folder.
//
// Times are stored as Unix nanoseconds. Writes go through Update, one
// transaction per call, or through Queue, where the changes queued while a
// commit is on its way to the disk share the next transaction (group
// commit). Statements are prepared once per connection. AccountsGeneration
// moves after every commit that wrote tokens, users, servers or key pairs,
// for caches of what requests read from them.
package store
