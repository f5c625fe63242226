-- +goose Up
-- Metering and billing (SPEC P4). meter_records holds every interval a job
-- held pool resources (from its grant to its end) and every interval a
-- server made by hac ran or stood stopped; end_ms is NULL while it lasts.
-- fault is why an infrastructure fault ended a run (not charged; SPEC A10),
-- empty for a run that is charged. Times in milliseconds since the epoch.
CREATE TABLE meter_records (
    id         INTEGER PRIMARY KEY,
    price_kind TEXT    NOT NULL,
    user_id    INTEGER NOT NULL REFERENCES users (id),
    server_id  INTEGER NOT NULL REFERENCES servers (id),
    job_id     INTEGER REFERENCES jobs (id),
    item       TEXT    NOT NULL,
    start_ms   INTEGER NOT NULL,
    end_ms     INTEGER,
    gpus       INTEGER NOT NULL DEFAULT 0,
    memory_mib INTEGER NOT NULL DEFAULT 0,
    nodes      TEXT    NOT NULL DEFAULT '',
    fault      TEXT    NOT NULL DEFAULT ''
);
-- Partial indexes: a job's end, which updates end_ms with every run,
-- leaves one entry of the open ones and touches no other.
CREATE INDEX meter_records_job ON meter_records (job_id) WHERE job_id IS NOT NULL;
CREATE INDEX meter_records_server ON meter_records (server_id) WHERE job_id IS NULL AND end_ms IS NULL;
CREATE INDEX meter_records_open ON meter_records (start_ms) WHERE end_ms IS NULL;

-- meter_hours sums the closed records by UTC hour, at the price in force:
-- what reports and invoices read. charged is 0 for faulted runs.
CREATE TABLE meter_hours (
    hour_ms    INTEGER NOT NULL,
    user_id    INTEGER NOT NULL,
    server_id  INTEGER NOT NULL,
    price_kind TEXT    NOT NULL,
    item       TEXT    NOT NULL,
    per_hour   INTEGER NOT NULL,
    charged    INTEGER NOT NULL,
    held_ms    INTEGER NOT NULL,
    gpu_ms     INTEGER NOT NULL,
    PRIMARY KEY (hour_ms, user_id, server_id, price_kind, item, per_hour, charged)
);
CREATE INDEX meter_hours_user ON meter_hours (user_id, hour_ms);

-- meter_days is meter_hours summed by UTC day: reports over months and
-- years read it for their whole days (a year is 365 rows a server and
-- price, not 8,760).
CREATE TABLE meter_days (
    day_ms     INTEGER NOT NULL,
    user_id    INTEGER NOT NULL,
    server_id  INTEGER NOT NULL,
    price_kind TEXT    NOT NULL,
    item       TEXT    NOT NULL,
    per_hour   INTEGER NOT NULL,
    charged    INTEGER NOT NULL,
    held_ms    INTEGER NOT NULL,
    gpu_ms     INTEGER NOT NULL,
    PRIMARY KEY (day_ms, user_id, server_id, price_kind, item, per_hour, charged)
);
CREATE INDEX meter_days_user ON meter_days (user_id, day_ms);

-- prices are per hour in the currency's minor units, each in force from
-- effective_from (nanoseconds) until the next of its kind and item.
CREATE TABLE prices (
    price_kind     TEXT    NOT NULL,
    item           TEXT    NOT NULL,
    per_hour       INTEGER NOT NULL,
    effective_from INTEGER NOT NULL,
    set_at         INTEGER NOT NULL,
    set_by         INTEGER NOT NULL REFERENCES users (id),
    PRIMARY KEY (price_kind, item, effective_from)
);

-- settings are the control plane's own choices that must outlive a
-- restart (the currency its amounts are counted in).
CREATE TABLE settings (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- Servers that exist now are metered from now on.
INSERT INTO meter_records (price_kind, user_id, server_id, item, start_ms)
    SELECT CASE state WHEN 'stopped' THEN 'stopped-server' ELSE 'server' END, user_id, id, server_type,
           CAST(strftime('%s', 'now') AS INTEGER) * 1000
    FROM servers WHERE kind = 'vm' AND state IN ('running', 'stopped');

-- Jobs that run now are metered from their grant: a control plane keeps
-- them across the upgrade's restart.
INSERT INTO meter_records (price_kind, user_id, server_id, job_id, item, start_ms, gpus, memory_mib, nodes)
    SELECT 'model', j.user_id, j.server_id, j.id, j.model, COALESCE(j.allocated_at, 0) / 1000000,
           (SELECT COUNT(DISTINCT p.gpu_uuid) FROM placements p WHERE p.job_id = j.id),
           (SELECT COALESCE(SUM(p.memory_mib), 0) FROM placements p WHERE p.job_id = j.id),
           COALESCE((SELECT group_concat(n.node_name) FROM (SELECT node_name, MIN(rowid) AS first FROM placements
                     WHERE job_id = j.id GROUP BY node_name ORDER BY first) n), '')
    FROM jobs j WHERE j.state = 'running';

-- +goose Down
DROP TABLE settings;
DROP TABLE prices;
DROP TABLE meter_days;
DROP TABLE meter_hours;
DROP TABLE meter_records;
