-- Legion core schema: the extension catalog, nodes, tasks, attempts and the transactional outbox.

-- Extensions known to the control plane, registered by executors (compiled into them).
CREATE TABLE extensions (
    name        TEXT PRIMARY KEY,
    version     TEXT NOT NULL,
    -- Set by an operator: new tasks for the extension are refused.
    disabled    BOOLEAN NOT NULL DEFAULT FALSE,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE runners (
    extension   TEXT NOT NULL REFERENCES extensions (name) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    PRIMARY KEY (extension, name)
);

CREATE TABLE functions (
    extension   TEXT NOT NULL,
    runner      TEXT NOT NULL,
    name        TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (extension, runner, name),
    FOREIGN KEY (extension, runner) REFERENCES runners (extension, name) ON DELETE CASCADE
);

-- Executor (and control-plane) processes.
CREATE TABLE nodes (
    name            TEXT PRIMARY KEY,
    kind            TEXT NOT NULL DEFAULT 'executor' CHECK (kind IN ('executor', 'control_plane')),
    region          TEXT NOT NULL DEFAULT 'default',
    version         TEXT NOT NULL DEFAULT '',
    status          TEXT NOT NULL CHECK (status IN ('active', 'draining', 'lost')),
    concurrency     INTEGER NOT NULL DEFAULT 0,
    started_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_heartbeat  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- The catalog state machine: the state of each extension on each node.
CREATE TABLE node_extensions (
    node        TEXT NOT NULL REFERENCES nodes (name) ON DELETE CASCADE,
    extension   TEXT NOT NULL REFERENCES extensions (name) ON DELETE CASCADE,
    state       TEXT NOT NULL CHECK (state IN ('registered', 'loaded', 'running', 'stopping', 'stopped', 'failed', 'disabled')),
    reason      TEXT,
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (node, extension)
);

-- Every persisted transition of the catalog state machine, append-only.
CREATE TABLE node_extension_transitions (
    id          BIGSERIAL PRIMARY KEY,
    node        TEXT NOT NULL,
    extension   TEXT NOT NULL,
    from_state  TEXT,
    to_state    TEXT NOT NULL,
    event       TEXT NOT NULL,
    at          TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX node_extension_transitions_node_ext ON node_extension_transitions (node, extension, id);

CREATE TABLE tasks (
    -- UUIDv7: time-ordered, so keyset paging by id is paging by creation time.
    id               UUID PRIMARY KEY,
    function         TEXT NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('pending', 'scheduled', 'queued', 'running', 'succeeded',
                                                     'failed', 'cancelled', 'timed_out', 'dead_lettered', 'skipped')),
    args             JSONB NOT NULL,
    result           JSONB,
    error            TEXT,
    -- Number of the current attempt (the fencing token): incremented by every start.
    attempt          INTEGER NOT NULL DEFAULT 0,
    -- Attempts that ended in a runner error or timeout; retried while below max_attempts.
    failures         INTEGER NOT NULL DEFAULT 0,
    max_attempts     INTEGER NOT NULL CHECK (max_attempts >= 1),
    -- Incremented by every publish; a broker message of an older dispatch is dropped.
    dispatch         INTEGER NOT NULL DEFAULT 0,
    -- Starts taken over from a consumer that vanished (redeliveries); capped by transport.delivery_limit.
    redeliveries     INTEGER NOT NULL DEFAULT 0,
    priority         SMALLINT NOT NULL CHECK (priority BETWEEN 0 AND 9),
    timeout_ms       INTEGER NOT NULL CHECK (timeout_ms > 0),
    chain            TEXT,
    root_id          UUID,
    parent_id        UUID,
    relationship_id  UUID,
    depth            INTEGER NOT NULL DEFAULT 0,
    node             TEXT,
    region           TEXT,
    idempotency_key  TEXT,
    not_before       TIMESTAMPTZ,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    queued_at        TIMESTAMPTZ,
    started_at       TIMESTAMPTZ,
    finished_at      TIMESTAMPTZ
) WITH (fillfactor = 80);

CREATE UNIQUE INDEX tasks_idempotency_key ON tasks (idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX tasks_function_id ON tasks (function, id);
CREATE INDEX tasks_root_id ON tasks (root_id) WHERE root_id IS NOT NULL;
CREATE INDEX tasks_chain_id ON tasks (chain, id) WHERE chain IS NOT NULL;
-- Unfinished tasks, for listing by status and for the control plane's sweeps.
CREATE INDEX tasks_active_status ON tasks (status, id)
    WHERE status IN ('pending', 'scheduled', 'queued', 'running');

-- One row per run of a task.
CREATE TABLE task_attempts (
    task_id      UUID NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    attempt      INTEGER NOT NULL,
    node         TEXT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('running', 'succeeded', 'failed', 'timed_out', 'lost', 'cancelled')),
    error        TEXT,
    started_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at  TIMESTAMPTZ,
    duration_ms  BIGINT,
    PRIMARY KEY (task_id, attempt)
);

-- Transactional outbox: written in the same transaction as the task, deleted after the broker's confirm.
CREATE TABLE outbox (
    id           BIGSERIAL PRIMARY KEY,
    task_id      UUID NOT NULL,
    exchange     TEXT NOT NULL,
    routing_key  TEXT NOT NULL,
    priority     SMALLINT NOT NULL,
    -- The broker message body (JSON, see legion_common::message::TaskMessage).
    payload      BYTEA NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- Publish attempts that failed (unroutable, nacked, broker down).
    failures     INTEGER NOT NULL DEFAULT 0,
    last_error   TEXT
);
