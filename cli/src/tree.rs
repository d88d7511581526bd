//! `legion task tree ID`: the tasks of a chain run arranged by `parent_id`, printed as indented lines
//! or as nested JSON.
//!
//! [`fetch_run`] gets the task and pages through every task of its run (`ListTasks` with `root_id`,
//! 1000 per page); [`TaskTree::build`] arranges them under the task asked for in O(n log n) (a hash
//! index, then one sort per sibling list), so runs of tens of thousands of tasks print at once. Siblings
//! are ordered by relationship (its id: the control plane assigns them as UUIDv7 in the chain's order),
//! then `fanout_index`, then task id. Tasks that cannot be reached from the task asked for (their parent
//! is outside the listing) are not shown; a `parent_id` loop cannot make the tree loop.

use std::collections::HashMap;
use std::io::Write;

use legion_common::TaskStatus;
use legion_gateway::view::Task;
use legion_proto::v1;
use legion_proto::v1::task_service_client::TaskServiceClient;
use serde::Serialize;
use serde::ser::{SerializeMap, SerializeSeq};

use crate::connect::AuthChannel;
use crate::error::Error;

/// Tasks per `ListTasks` page when fetching a run (the API's maximum).
pub const PAGE_SIZE: u32 = 1000;

/// Longest error text shown on a line, in characters; longer ones end with `…`.
pub const ERROR_CHARS: usize = 120;

/// Gets the task `id` and every task of its chain run: the task alone when it belongs to no run (no
/// `root_id`, no `chain`), else all pages of `ListTasks { root_id }`, with the task itself added if the
/// listing lacks it.
///
/// # Errors
/// [`Error::Grpc`] when a call fails, or when the control plane hands out the same page token twice
/// (the listing would never end); [`Error::Response`] for a task without a known status.
pub async fn fetch_run(client: &mut TaskServiceClient<AuthChannel>, id: &str) -> Result<Vec<Task>, Error> {
    let task = client.get_task(v1::GetTaskRequest { id: id.to_owned() }).await?.into_inner();
    let task = Task::try_from(&task)?;
    if task.root_id.is_none() && task.chain.is_none() {
        return Ok(vec![task]);
    }
    let root = task.root_id.clone().unwrap_or_else(|| task.id.clone());
    let mut tasks = Vec::new();
    let mut page_token = String::new();
    loop {
        let request = v1::ListTasksRequest {
            root_id: Some(root.clone()),
            page_size: PAGE_SIZE,
            page_token: page_token.clone(),
            ..Default::default()
        };
        let response = client.list_tasks(request).await?.into_inner();
        for listed in &response.tasks {
            tasks.push(Task::try_from(listed)?);
        }
        if response.next_page_token.is_empty() {
            break;
        }
        if response.next_page_token == page_token {
            return Err(Error::Grpc(tonic::Status::internal(format!(
                "the control plane returned page token {page_token:?} twice while listing run {root}"
            ))));
        }
        page_token = response.next_page_token;
    }
    if !tasks.iter().any(|t| t.id == task.id) {
        tasks.push(task);
    }
    Ok(tasks)
}

/// The tasks under one task of a run, arranged by `parent_id`. Only tasks reachable from the top task
/// are held; each is held once.
#[derive(Debug, Clone)]
pub struct TaskTree {
    tasks: Vec<Task>,
    /// Children of each task of `tasks`, in display order.
    children: Vec<Vec<usize>>,
    top: usize,
}

impl TaskTree {
    /// Arranges `tasks` (in any order; a repeated id counts once, its first occurrence) under the task
    /// `top_id`. `None` when `top_id` is not among them.
    pub fn build(tasks: Vec<Task>, top_id: &str) -> Option<Self> {
        let mut index: HashMap<&str, usize> = HashMap::with_capacity(tasks.len());
        for (i, task) in tasks.iter().enumerate() {
            index.entry(task.id.as_str()).or_insert(i);
        }
        let top = *index.get(top_id)?;
        // Each task has one parent, so each appears in at most one list.
        let mut children_of: Vec<Vec<usize>> = vec![Vec::new(); tasks.len()];
        for (i, task) in tasks.iter().enumerate() {
            let first = index.get(task.id.as_str()) == Some(&i);
            if let Some(&parent) = task.parent_id.as_deref().and_then(|p| index.get(p))
                && first
                && i != top
            {
                children_of[parent].push(i);
            }
        }
        // Breadth first from the top: what is reachable, renumbered in visiting order (the top is 0).
        // The top never counts as a child, so a parent_id loop through it cannot loop the tree.
        let mut position = vec![usize::MAX; tasks.len()];
        let mut order = vec![top];
        position[top] = 0;
        let mut next = 0;
        while let Some(&parent) = order.get(next) {
            next += 1;
            for &child in &children_of[parent] {
                position[child] = order.len();
                order.push(child);
            }
        }
        drop(index);
        let mut slots: Vec<Option<Task>> = tasks.into_iter().map(Some).collect();
        let kept: Vec<Task> = order.iter().filter_map(|&i| slots[i].take()).collect();
        let mut children: Vec<Vec<usize>> =
            order.iter().map(|&i| children_of[i].iter().map(|&c| position[c]).collect()).collect();
        for list in &mut children {
            list.sort_by(|&a, &b| sibling_key(&kept[a]).cmp(&sibling_key(&kept[b])));
        }
        Some(Self { tasks: kept, children, top: 0 })
    }

    /// The number of tasks in the tree (the top task included).
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    /// Whether the tree is empty; never, as it holds at least its top task.
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// The top task.
    pub fn top(&self) -> &Task {
        &self.tasks[self.top]
    }

    /// Writes one line per task, depth first, children indented two spaces under their parent:
    /// `ID  FUNCTION  STATUS  DURATION[  ERROR]` (see [`line`]).
    ///
    /// # Errors
    /// The writer's.
    pub fn write_text(&self, out: &mut impl Write) -> std::io::Result<()> {
        let mut stack = vec![(self.top, 0usize)];
        while let Some((i, depth)) = stack.pop() {
            writeln!(out, "{:indent$}{}", "", line(&self.tasks[i]), indent = depth * 2)?;
            stack.extend(self.children[i].iter().rev().map(|&c| (c, depth + 1)));
        }
        Ok(())
    }

    /// The tree as nested JSON: `{"task": <REST task>, "children": [<same shape>…]}`.
    pub fn json(&self) -> impl Serialize + '_ {
        Node { tree: self, index: self.top }
    }
}

/// Sibling order: relationship (tasks without one first), then fan-out index, then id.
fn sibling_key(task: &Task) -> (Option<&str>, Option<u32>, &str) {
    (task.relationship_id.as_deref(), task.fanout_index, task.id.as_str())
}

struct Node<'a> {
    tree: &'a TaskTree,
    index: usize,
}

impl Serialize for Node<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(2))?;
        map.serialize_entry("task", &self.tree.tasks[self.index])?;
        map.serialize_entry("children", &Children { tree: self.tree, index: self.index })?;
        map.end()
    }
}

struct Children<'a> {
    tree: &'a TaskTree,
    index: usize,
}

impl Serialize for Children<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let children = &self.tree.children[self.index];
        let mut seq = serializer.serialize_seq(Some(children.len()))?;
        for &child in children {
            seq.serialize_element(&Node { tree: self.tree, index: child })?;
        }
        seq.end()
    }
}

/// One line of the text tree, without indentation: `ID  FUNCTION  STATUS  DURATION`, then, for a task
/// that did not succeed and has an error (a failure, a skip reason, a cancel or dead-letter reason),
/// two spaces and its first line, at most [`ERROR_CHARS`] characters.
pub fn line(task: &Task) -> String {
    let mut text = format!("{}  {}  {}  {}", task.id, task.function, task.status, duration(task));
    if task.status != TaskStatus::Succeeded
        && let Some(error) = task.error.as_deref().filter(|e| !e.trim().is_empty())
    {
        text.push_str("  ");
        text.push_str(&one_line(error, ERROR_CHARS));
    }
    text
}

/// `finished_at - started_at` as `<n>ms`, or `-` when either is unknown.
pub fn duration(task: &Task) -> String {
    match (task.started_at, task.finished_at) {
        (Some(started), Some(finished)) => format!("{}ms", (finished - started).num_milliseconds()),
        _ => "-".to_owned(),
    }
}

/// The first non-empty line of `text`, control characters as spaces, cut to `max` characters with a
/// final `…` when it was longer or more lines followed.
pub fn one_line(text: &str, max: usize) -> String {
    let trimmed = text.trim();
    let first = trimmed.lines().next().unwrap_or_default().trim_end();
    let more_lines = first.len() < trimmed.len();
    let clean: String = first.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    if clean.chars().count() > max {
        let mut cut: String = clean.chars().take(max.saturating_sub(1)).collect();
        cut.push('…');
        cut
    } else if more_lines {
        format!("{clean} …")
    } else {
        clean
    }
}

#[cfg(test)]
mod tests;
