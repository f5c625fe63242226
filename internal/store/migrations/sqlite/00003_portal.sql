-- +goose Up
-- Servers made by a server driver (kind vm) beside registered ones, with
-- their port forwarding and firewall rules (SPEC S2-S6).
ALTER TABLE servers ADD COLUMN kind TEXT NOT NULL DEFAULT 'registered';
ALTER TABLE servers ADD COLUMN state TEXT NOT NULL DEFAULT 'registered';
ALTER TABLE servers ADD COLUMN state_reason TEXT NOT NULL DEFAULT '';
ALTER TABLE servers ADD COLUMN zone TEXT NOT NULL DEFAULT '';
ALTER TABLE servers ADD COLUMN tier TEXT NOT NULL DEFAULT '';
ALTER TABLE servers ADD COLUMN server_type TEXT NOT NULL DEFAULT '';
ALTER TABLE servers ADD COLUMN image TEXT NOT NULL DEFAULT '';
ALTER TABLE servers ADD COLUMN keypair_id INTEGER REFERENCES keypairs (id);
ALTER TABLE servers ADD COLUMN private_ip TEXT;
ALTER TABLE servers ADD COLUMN reference_model TEXT NOT NULL DEFAULT '';
CREATE UNIQUE INDEX servers_private_ip ON servers (private_ip);

CREATE TABLE port_forwards (
    id           INTEGER PRIMARY KEY,
    server_id    INTEGER NOT NULL REFERENCES servers (id),
    protocol     TEXT    NOT NULL,
    public_port  INTEGER NOT NULL,
    private_port INTEGER NOT NULL,
    created_at   INTEGER NOT NULL,
    UNIQUE (protocol, public_port)
);

CREATE TABLE firewall_rules (
    id         INTEGER PRIMARY KEY,
    server_id  INTEGER NOT NULL REFERENCES servers (id),
    protocol   TEXT    NOT NULL,
    port       INTEGER NOT NULL,
    source     TEXT    NOT NULL,
    created_at INTEGER NOT NULL
);

-- +goose Down
DROP TABLE firewall_rules;
DROP TABLE port_forwards;
DROP INDEX servers_private_ip;
