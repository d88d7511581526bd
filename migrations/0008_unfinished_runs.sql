-- The unfinished tasks of a chain run, by root: the scheduler asks, for each due interval schedule,
-- whether any task of its previous fire's run is still unfinished (no overlap, DESIGN.md section 4).
-- tasks_root_id would visit every task of the run, finished or not; this index holds only the few
-- unfinished ones.
CREATE INDEX tasks_root_unfinished ON tasks (root_id)
    WHERE root_id IS NOT NULL AND status IN ('pending', 'scheduled', 'queued', 'running');
