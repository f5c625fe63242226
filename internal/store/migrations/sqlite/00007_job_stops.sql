-- +goose Up
-- hac cancel's order to a running job (SIGTERM, then SIGKILL after the
-- grace), kept so that a control plane restart still sends it.
ALTER TABLE jobs ADD COLUMN stop_at INTEGER;
ALTER TABLE jobs ADD COLUMN stop_grace_ns INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN stop_reason TEXT NOT NULL DEFAULT '';

-- +goose Down
ALTER TABLE jobs DROP COLUMN stop_at;
ALTER TABLE jobs DROP COLUMN stop_grace_ns;
ALTER TABLE jobs DROP COLUMN stop_reason;
