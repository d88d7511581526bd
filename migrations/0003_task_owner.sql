-- The principal that submitted each task (`api-key/<id>`, `jwt/<sub>`). Idempotency keys are scoped to
-- it, so one caller's key never returns another caller's task.
ALTER TABLE tasks ADD COLUMN owner TEXT NOT NULL DEFAULT '';

DROP INDEX tasks_idempotency_key;
CREATE UNIQUE INDEX tasks_idempotency_key ON tasks (owner, idempotency_key) WHERE idempotency_key IS NOT NULL;
