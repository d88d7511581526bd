-- Schedules: a function (or the root of a chain run) fired on a cron expression in an IANA time zone,
-- or every interval_ms. The leader's scheduler deals with every due slot once: it fires it (a task) or
-- passes over it (overlap, missed), writing a schedule_fires row whose primary key (schedule_id, slot)
-- makes a second fire of the same slot impossible, even by two replicas that both believe they lead.

CREATE TABLE schedules (
    id              UUID PRIMARY KEY,
    name            TEXT NOT NULL UNIQUE,
    description     TEXT NOT NULL DEFAULT '',
    function        TEXT NOT NULL,
    args            JSONB NOT NULL,
    -- {"engine": "jinja"|"jq"|"static", ...}, evaluated at each fire into the task's args.
    transformation  JSONB,
    chain           TEXT,
    priority        SMALLINT NOT NULL CHECK (priority BETWEEN 0 AND 9),
    max_attempts    INTEGER NOT NULL CHECK (max_attempts >= 1),
    timeout_ms      INTEGER NOT NULL CHECK (timeout_ms >= 1),
    region          TEXT,
    cron            TEXT,
    timezone        TEXT NOT NULL DEFAULT 'UTC',
    interval_ms     BIGINT CHECK (interval_ms >= 1000),
    allow_overlap   BOOLEAN NOT NULL DEFAULT false,
    misfire         TEXT NOT NULL DEFAULT 'fire_once' CHECK (misfire IN ('fire_once', 'skip')),
    paused          BOOLEAN NOT NULL DEFAULT false,
    -- Slots before this instant are never due: the creation, or the last resume.
    active_since    TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- The last slot dealt with (fired or passed over); NULL before the first.
    cursor          TIMESTAMPTZ,
    -- When the scheduler must look at the schedule next: the first slot after the cursor, or now() after
    -- a change (the scheduler then computes it). NULL when the cadence has no further slot.
    next_due        TIMESTAMPTZ DEFAULT now(),
    -- The task of the newest fire (an interval schedule without allow_overlap waits for it to finish).
    last_task_id    UUID,
    -- Incremented by every change (pause, resume, a tick): the scheduler writes a decision only if the
    -- schedule is still at the revision it read.
    revision        BIGINT NOT NULL DEFAULT 1,
    -- The principal that created it and its policies then: fired tasks are owned by it, and are
    -- re-authorized against those policies' current rules at each fire.
    created_by      TEXT NOT NULL,
    policies        TEXT[] NOT NULL DEFAULT '{}',
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK ((cron IS NULL) <> (interval_ms IS NULL))
);
CREATE INDEX schedules_due ON schedules (next_due) WHERE NOT paused AND next_due IS NOT NULL;

CREATE TABLE schedule_fires (
    schedule_id  UUID NOT NULL REFERENCES schedules (id) ON DELETE CASCADE,
    slot         TIMESTAMPTZ NOT NULL,
    fired_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- The scheduler lease's epoch under which the slot was dealt with (fencing token).
    epoch        BIGINT NOT NULL,
    outcome      TEXT NOT NULL CHECK (outcome IN ('fired', 'overlap', 'missed', 'failed')),
    -- Set when outcome = 'fired'. No foreign key: tasks may be purged before the history.
    task_id      UUID,
    reason       TEXT,
    -- Older due slots this row stands for (missed while no leader ticked), not listed themselves.
    missed       BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (schedule_id, slot),
    CHECK ((outcome = 'fired') = (task_id IS NOT NULL))
);
