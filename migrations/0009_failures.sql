-- Failures without loss (DESIGN.md section 5): retry policies, dead-letter replays.

-- The retry policy a task was given, every field set:
-- {"initial_backoff_ms": u64, "multiplier": f64, "max_backoff_ms": u64, "jitter": f64}.
-- NULL for tasks written before this migration: the `retry.*` settings apply to them.
ALTER TABLE tasks ADD COLUMN retry JSONB;
-- Times the task was replayed from the dead letters.
ALTER TABLE tasks ADD COLUMN replays INTEGER NOT NULL DEFAULT 0;

-- The policy a schedule gives its tasks, only the fields it sets (same shape, each field optional);
-- NULL when it sets none. (A relationship's policy lives in its chain version's definition.)
ALTER TABLE schedules ADD COLUMN retry JSONB;

-- Dead letters, newest first.
CREATE INDEX tasks_dead_lettered ON tasks (id) WHERE status = 'dead_lettered';
