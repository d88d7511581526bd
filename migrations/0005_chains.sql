-- Chains: named sets of relationships (trigger function -> action function, with conditions and a
-- transformation). Every apply that changes a chain writes a new immutable version; a chain run is
-- pinned to the version current when its root task was submitted, so changing a chain never changes a
-- run in flight. Deleting a chain deletes its versions: runs in flight fire nothing more.

CREATE TABLE chains (
    name        TEXT PRIMARY KEY,
    description TEXT NOT NULL DEFAULT '',
    -- The current chain_versions row (no foreign key: the two rows reference each other).
    version     BIGINT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- The principal of the last apply (`api-key/<id>`, `jwt/<sub>`).
    updated_by  TEXT NOT NULL
);

CREATE TABLE chain_versions (
    -- Global sequence, so a chain deleted and created again never reuses a version a run is pinned to.
    id          BIGSERIAL PRIMARY KEY,
    chain       TEXT NOT NULL REFERENCES chains (name) ON DELETE CASCADE,
    -- The validated chain (crate::chains::Definition as JSON): description, max_depth, relationships
    -- with their ids.
    definition  JSONB NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    created_by  TEXT NOT NULL
);
CREATE INDEX chain_versions_chain ON chain_versions (chain, id);

-- The chain version a chain run is pinned to (set on every task of the run).
ALTER TABLE tasks ADD COLUMN chain_version BIGINT;
-- Position of a task among the children one relationship created from one parent (fan-out), from 0.
ALTER TABLE tasks ADD COLUMN fanout_index INTEGER;
-- On the root task of a chain run: how many tasks the run holds (itself included), capped by
-- limits.max_run_tasks. Maintained under the root row's lock when children are created.
ALTER TABLE tasks ADD COLUMN run_tasks INTEGER NOT NULL DEFAULT 1;
-- A parent's relationship creates each child once, whatever happens to CompleteTask.
CREATE UNIQUE INDEX tasks_parent_relationship ON tasks (parent_id, relationship_id, fanout_index)
    WHERE parent_id IS NOT NULL;
