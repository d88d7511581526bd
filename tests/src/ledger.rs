//! What fault tests check in the end, read straight from the test's PostgreSQL database: every task
//! ended, each succeeded task has exactly one `succeeded` attempt row (and no other task has one), and
//! each parent of a chain run has at most one child per relationship and fan-out position.
//!
//! Instants are microseconds since the Unix epoch (`extract(epoch …)`), PostgreSQL's precision, so
//! orderings compare exactly without a date library.

use std::collections::BTreeMap;

use sqlx::PgPool;

/// Statuses a task never leaves.
pub const TERMINAL: [&str; 6] = ["succeeded", "failed", "cancelled", "timed_out", "dead_lettered", "skipped"];

/// A `tasks` row as the checks need it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct TaskRow {
    /// Task id.
    pub id: String,
    /// Status (`succeeded`, …).
    pub status: String,
    /// The current attempt (0 before the first start).
    pub attempt: i32,
    /// Priority, 0 to 9.
    pub priority: i16,
    /// The node of the current attempt.
    pub node: Option<String>,
    /// Whether a result is stored.
    pub has_result: bool,
    /// The error or reason, if any.
    pub error: Option<String>,
    /// Submit (µs since the epoch).
    pub created_at_us: i64,
    /// First publish confirmed by the broker (µs), if any.
    pub queued_at_us: Option<i64>,
    /// Start of the current attempt (µs), if any.
    pub started_at_us: Option<i64>,
    /// End (µs), if any.
    pub finished_at_us: Option<i64>,
}

/// A `task_attempts` row.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct AttemptRow {
    /// Task id.
    pub task_id: String,
    /// Attempt number, from 1.
    pub attempt: i32,
    /// The node that ran it.
    pub node: String,
    /// `running`, `succeeded`, `failed`, `timed_out`, `lost` or `cancelled`.
    pub status: String,
    /// The error, if any.
    pub error: Option<String>,
}

const TASK_COLUMNS: &str = "id::text AS id, status, attempt, priority, node, result IS NOT NULL AS has_result, error, \
     (extract(epoch FROM created_at) * 1000000)::bigint AS created_at_us, \
     (extract(epoch FROM queued_at) * 1000000)::bigint AS queued_at_us, \
     (extract(epoch FROM started_at) * 1000000)::bigint AS started_at_us, \
     (extract(epoch FROM finished_at) * 1000000)::bigint AS finished_at_us";

/// Every task of the database, oldest first.
///
/// # Errors
/// The driver's error.
pub async fn all_tasks(pool: &PgPool) -> Result<Vec<TaskRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {TASK_COLUMNS} FROM tasks ORDER BY id"))).fetch_all(pool).await
}

/// The tasks `ids`, oldest first (unknown ids are left out).
///
/// # Errors
/// The driver's error.
pub async fn tasks(pool: &PgPool, ids: &[String]) -> Result<Vec<TaskRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {TASK_COLUMNS} FROM tasks WHERE id::text = ANY($1) ORDER BY id"
    )))
    .bind(ids)
    .fetch_all(pool)
    .await
}

/// One task.
///
/// # Errors
/// The driver's error (`RowNotFound` for an unknown id).
pub async fn task(pool: &PgPool, id: &str) -> Result<TaskRow, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id::text = $1")))
        .bind(id)
        .fetch_one(pool)
        .await
}

/// Every attempt row of the database by task id, in attempt order.
///
/// # Errors
/// The driver's error.
pub async fn all_attempts(pool: &PgPool) -> Result<BTreeMap<String, Vec<AttemptRow>>, sqlx::Error> {
    let rows: Vec<AttemptRow> = sqlx::query_as(
        "SELECT task_id::text AS task_id, attempt, node, status, error FROM task_attempts ORDER BY task_id, attempt",
    )
    .fetch_all(pool)
    .await?;
    let mut by_task: BTreeMap<String, Vec<AttemptRow>> = BTreeMap::new();
    for row in rows {
        by_task.entry(row.task_id.clone()).or_default().push(row);
    }
    Ok(by_task)
}

/// `(tasks, unfinished tasks)` of the whole database.
///
/// # Errors
/// The driver's error as text, for probes.
pub async fn counts(pool: &PgPool) -> Result<(i64, i64), String> {
    sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE status IN ('pending', 'scheduled', 'queued', 'running')) FROM tasks",
    )
    .fetch_one(pool)
    .await
    .map_err(|e| format!("count the tasks: {e}"))
}

/// Count of tasks by status, for messages and progress probes.
///
/// # Errors
/// The driver's error as text.
pub async fn by_status(pool: &PgPool) -> Result<BTreeMap<String, i64>, String> {
    let rows: Vec<(String, i64)> = sqlx::query_as("SELECT status, count(*) FROM tasks GROUP BY status")
        .fetch_all(pool)
        .await
        .map_err(|e| format!("count the tasks by status: {e}"))?;
    Ok(rows.into_iter().collect())
}

/// Children per `(parent, relationship, fan-out position)` that occur more than once: a follow-up that
/// fired twice. Empty when every follow-up fired at most once.
///
/// # Errors
/// The driver's error.
pub async fn repeated_children(pool: &PgPool) -> Result<Vec<(String, i64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT parent_id::text, count(*) FROM tasks WHERE parent_id IS NOT NULL \
         GROUP BY parent_id, relationship_id, fanout_index HAVING count(*) > 1",
    )
    .fetch_all(pool)
    .await
}

/// The exactly-once check over `tasks` and their `attempts` (as [`tasks`] and [`all_attempts`] read
/// them): every task is terminal; a `succeeded` task has exactly one `succeeded` attempt row, its
/// current attempt, on its node, and a stored result; any other task has no `succeeded` attempt row;
/// no attempt is still `running`. Returns every violation, one line each (empty when all hold).
pub fn exactly_once_violations(tasks: &[TaskRow], attempts: &BTreeMap<String, Vec<AttemptRow>>) -> Vec<String> {
    let mut violations = Vec::new();
    let none = Vec::new();
    for task in tasks {
        let rows = attempts.get(&task.id).unwrap_or(&none);
        let summary: Vec<String> = rows.iter().map(|a| format!("{}:{}@{}", a.attempt, a.status, a.node)).collect();
        let succeeded: Vec<&AttemptRow> = rows.iter().filter(|a| a.status == "succeeded").collect();
        if !TERMINAL.contains(&task.status.as_str()) {
            violations.push(format!("task {} did not end: {} (attempts {summary:?})", task.id, task.status));
        }
        if rows.iter().any(|a| a.status == "running") && TERMINAL.contains(&task.status.as_str()) {
            violations
                .push(format!("task {} ended {} with an attempt still running: {summary:?}", task.id, task.status));
        }
        if task.status == "succeeded" {
            match succeeded.as_slice() {
                [one] if one.attempt == task.attempt && task.node.as_deref() == Some(one.node.as_str()) => {}
                [one] => violations.push(format!(
                    "task {} succeeded as attempt {} on {:?} but its succeeded attempt row is {} on {}",
                    task.id, task.attempt, task.node, one.attempt, one.node
                )),
                many => violations.push(format!(
                    "task {} succeeded with {} succeeded attempt rows: {summary:?}",
                    task.id,
                    many.len()
                )),
            }
            if !task.has_result {
                violations.push(format!("task {} succeeded without a result", task.id));
            }
        } else if !succeeded.is_empty() {
            violations.push(format!("task {} is {} but has a succeeded attempt: {summary:?}", task.id, task.status));
        }
    }
    violations
}

/// [`exactly_once_violations`] over every task of the database.
///
/// # Errors
/// The driver's error as text.
pub async fn check_exactly_once(pool: &PgPool) -> Result<Vec<String>, String> {
    let tasks = all_tasks(pool).await.map_err(|e| format!("read tasks: {e}"))?;
    let attempts = all_attempts(pool).await.map_err(|e| format!("read task_attempts: {e}"))?;
    Ok(exactly_once_violations(&tasks, &attempts))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(id: &str, status: &str, attempt: i32, node: Option<&str>, has_result: bool) -> TaskRow {
        TaskRow {
            id: id.into(),
            status: status.into(),
            attempt,
            priority: 0,
            node: node.map(Into::into),
            has_result,
            error: None,
            created_at_us: 0,
            queued_at_us: None,
            started_at_us: None,
            finished_at_us: None,
        }
    }

    fn attempt(task_id: &str, attempt: i32, node: &str, status: &str) -> AttemptRow {
        AttemptRow { task_id: task_id.into(), attempt, node: node.into(), status: status.into(), error: None }
    }

    fn by_task(rows: Vec<AttemptRow>) -> BTreeMap<String, Vec<AttemptRow>> {
        let mut map: BTreeMap<String, Vec<AttemptRow>> = BTreeMap::new();
        for row in rows {
            map.entry(row.task_id.clone()).or_default().push(row);
        }
        map
    }

    #[test]
    fn a_takeover_that_succeeded_once_passes() {
        let tasks = vec![task("a", "succeeded", 2, Some("n2"), true), task("b", "cancelled", 0, None, false)];
        let attempts = by_task(vec![attempt("a", 1, "n1", "lost"), attempt("a", 2, "n2", "succeeded")]);
        assert!(exactly_once_violations(&tasks, &attempts).is_empty());
    }

    #[test]
    fn every_violation_is_named() {
        let tasks = vec![
            task("twice", "succeeded", 2, Some("n"), true),
            task("open", "running", 1, Some("n"), false),
            task("wrong", "succeeded", 2, Some("n2"), true),
            task("ghost", "failed", 1, Some("n"), false),
            task("empty", "succeeded", 1, Some("n"), false),
            task("dangling", "cancelled", 1, Some("n"), false),
        ];
        let attempts = by_task(vec![
            attempt("twice", 1, "n", "succeeded"),
            attempt("twice", 2, "n", "succeeded"),
            attempt("open", 1, "n", "running"),
            attempt("wrong", 1, "n1", "succeeded"),
            attempt("wrong", 2, "n2", "lost"),
            attempt("ghost", 1, "n", "succeeded"),
            attempt("empty", 1, "n", "succeeded"),
            attempt("dangling", 1, "n", "running"),
        ]);
        let found = exactly_once_violations(&tasks, &attempts);
        let text = found.join("\n");
        assert_eq!(found.len(), 6, "{text}");
        for needle in [
            "task twice succeeded with 2 succeeded attempt rows",
            "task open did not end: running",
            "task wrong succeeded as attempt 2",
            "task ghost is failed but has a succeeded attempt",
            "task empty succeeded without a result",
            "task dangling ended cancelled with an attempt still running",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
        }
    }
}
