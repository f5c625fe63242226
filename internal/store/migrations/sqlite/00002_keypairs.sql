-- +goose Up
-- keypairs holds users' SSH public keys (SPEC S1); private keys are never
-- stored.
CREATE TABLE keypairs (
    id             INTEGER PRIMARY KEY,
    user_id        INTEGER NOT NULL REFERENCES users (id),
    name           TEXT    NOT NULL,
    type           TEXT    NOT NULL,
    authorized_key TEXT    NOT NULL,
    fingerprint    TEXT    NOT NULL,
    created_at     INTEGER NOT NULL,
    UNIQUE (user_id, name)
);

-- +goose Down
DROP TABLE keypairs;
