-- +goose Up
-- A detached job (hac run -d) runs without its client: its lease is kept
-- while its node reports it, and its output and files stay on the node.
ALTER TABLE jobs ADD COLUMN detached INTEGER NOT NULL DEFAULT 0;

-- +goose Down
ALTER TABLE jobs DROP COLUMN detached;
