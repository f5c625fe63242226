-- +goose Up
CREATE TABLE users (
    id         INTEGER PRIMARY KEY,
    name       TEXT    NOT NULL UNIQUE,
    admin      INTEGER NOT NULL DEFAULT 0,
    priority   INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL
);

CREATE TABLE servers (
    id                INTEGER PRIMARY KEY,
    user_id           INTEGER NOT NULL REFERENCES users (id),
    name              TEXT    NOT NULL,
    model             TEXT    NOT NULL,
    accelerator_token TEXT    NOT NULL UNIQUE,
    created_at        INTEGER NOT NULL,
    UNIQUE (user_id, name)
);

-- tokens holds every credential, hashed: kind is user, server or node.
CREATE TABLE tokens (
    hash       TEXT    PRIMARY KEY,
    kind       TEXT    NOT NULL,
    user_id    INTEGER,
    server_id  INTEGER,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
);

CREATE TABLE nodes (
    name          TEXT    PRIMARY KEY,
    address       TEXT    NOT NULL,
    ticket_key    BLOB    NOT NULL,
    state         TEXT    NOT NULL,
    registered_at INTEGER NOT NULL
);

CREATE TABLE gpus (
    uuid       TEXT    PRIMARY KEY,
    node_name  TEXT    NOT NULL REFERENCES nodes (name) ON DELETE CASCADE,
    idx        INTEGER NOT NULL,
    name       TEXT    NOT NULL,
    memory_mib INTEGER NOT NULL
);

CREATE TABLE jobs (
    id           INTEGER PRIMARY KEY,
    server_id    INTEGER NOT NULL REFERENCES servers (id),
    user_id      INTEGER NOT NULL REFERENCES users (id),
    model        TEXT    NOT NULL,
    memory_mib   INTEGER NOT NULL,
    priority     INTEGER NOT NULL,
    command      TEXT    NOT NULL,
    client_pid   INTEGER NOT NULL,
    state        TEXT    NOT NULL,
    submitted_at INTEGER NOT NULL,
    allocated_at INTEGER,
    ended_at     INTEGER,
    exit_code    INTEGER,
    end_reason   TEXT    NOT NULL DEFAULT ''
);
CREATE INDEX jobs_state ON jobs (state);

-- placements records the GPU memory each job held (kept after release for
-- metering).
CREATE TABLE placements (
    job_id     INTEGER NOT NULL REFERENCES jobs (id),
    node_name  TEXT    NOT NULL,
    gpu_uuid   TEXT    NOT NULL,
    memory_mib INTEGER NOT NULL
);
CREATE INDEX placements_job ON placements (job_id);

-- +goose Down
DROP TABLE placements;
DROP TABLE jobs;
DROP TABLE gpus;
DROP TABLE nodes;
DROP TABLE tokens;
DROP TABLE servers;
DROP TABLE users;
