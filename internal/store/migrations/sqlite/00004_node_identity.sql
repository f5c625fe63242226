-- +goose Up
-- Every node has a credential of its own, enrolled by an admin with a
-- one-time join token bound to its name (SPEC P8); the shared node token of
-- the first build is revoked. Drained nodes take no new jobs (P1).
ALTER TABLE tokens ADD COLUMN node_name TEXT;
ALTER TABLE tokens ADD COLUMN expires_at INTEGER;
CREATE INDEX tokens_node ON tokens (node_name);
UPDATE tokens SET revoked_at = created_at WHERE kind = 'node' AND node_name IS NULL AND revoked_at IS NULL;
ALTER TABLE nodes ADD COLUMN drained INTEGER NOT NULL DEFAULT 0;

-- +goose Down
ALTER TABLE nodes DROP COLUMN drained;
DROP INDEX tokens_node;
ALTER TABLE tokens DROP COLUMN expires_at;
ALTER TABLE tokens DROP COLUMN node_name;
