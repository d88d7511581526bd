//! The command line of `legion`: commands, flags and the parsers of their values.
//!
//! Values that the contract fixes are checked here, so a mistake exits 64 before any call is made:
//! task and API key ids are UUIDs, `--priority` is 0 to 9, `--limit` 1 to 1000, `--status` one of the
//! ten statuses, `--decision` one of `allow`, `deny`, `error`, `--since`/`--until` RFC 3339 times,
//! `--args` JSON (inline or `@FILE`). Credentials (`--api-key`, `--token`) are never echoed: not in
//! errors, not in `Debug` output, not in `--help` (which names their environment variables only).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use legion_common::TaskStatus;

/// Legion's operator CLI.
#[derive(Debug, Parser)]
#[command(name = "legion", version, about, propagate_version = true)]
pub struct Cli {
    /// Where and how to reach the control plane.
    #[command(flatten)]
    pub connection: Connection,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// How to reach the control plane; every flag defaults to the settings (`control_plane.url`, `tls.*`),
/// except the credentials, which default to their environment variables.
#[derive(Debug, Clone, Default, Args)]
pub struct Connection {
    /// API key to authenticate with, sent as `x-api-key` on every call (it wins over `--token`). Prefer
    /// the environment variable: a command line is visible to other users of the machine.
    #[arg(long = "api-key", value_name = "KEY", env = "LEGION_API_KEY", hide_env_values = true, global = true, value_parser = parse_secret)]
    pub api_key: Option<Secret>,
    /// JWT to authenticate with (from `legion auth token`), sent as `authorization: Bearer <JWT>` on
    /// every call.
    #[arg(long, value_name = "JWT", env = "LEGION_TOKEN", hide_env_values = true, global = true, value_parser = parse_secret)]
    pub token: Option<Secret>,
    /// The control plane's gRPC URL (https://host:port); default `control_plane.url`.
    #[arg(long = "control-plane", value_name = "URL", global = true)]
    pub control_plane: Option<String>,
    /// PEM file of the CA that signed the control plane's certificate; default `tls.ca`.
    #[arg(long, value_name = "FILE", global = true)]
    pub ca: Option<PathBuf>,
    /// PEM client certificate to present; default `tls.cert` (optional).
    #[arg(long, value_name = "FILE", global = true, requires = "key")]
    pub cert: Option<PathBuf>,
    /// PEM private key of `--cert`; default `tls.key`.
    #[arg(long, value_name = "FILE", global = true, requires = "cert")]
    pub key: Option<PathBuf>,
    /// A directory of `*.json` settings files (merged in name order); repeatable.
    #[arg(long = "settings-dir", value_name = "DIR", global = true)]
    pub settings_dirs: Vec<PathBuf>,
    /// A settings file, merged after the directories; repeatable.
    #[arg(long = "settings", value_name = "FILE", global = true)]
    pub settings_files: Vec<PathBuf>,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Development certificates.
    Certs {
        /// The certificates command.
        #[command(subcommand)]
        command: CertsCommand,
    },
    /// Submit, inspect, list, follow and cancel tasks (gRPC to the control plane).
    Task {
        /// The task command.
        #[command(subcommand)]
        command: TaskCommand,
    },
    /// List dead-lettered tasks and replay them.
    DeadLetter {
        /// The dead-letter command.
        #[command(subcommand)]
        command: DeadLetterCommand,
    },
    /// Create or replace, list, show and delete chains (named sets of relationships between functions).
    Chain {
        /// The chain command.
        #[command(subcommand)]
        command: ChainCommand,
    },
    /// Create, list, show, pause, resume and delete schedules; list their fires; preview a cadence's
    /// slots.
    Schedule {
        /// The schedule command.
        #[command(subcommand)]
        command: ScheduleCommand,
    },
    /// Create, list, show, delete and check Vault-style ACL policies.
    Policy {
        /// The policy command.
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Create, list and revoke API keys.
    ApiKey {
        /// The API key command.
        #[command(subcommand)]
        command: ApiKeyCommand,
    },
    /// Exchange an API key for a token; show who the control plane takes you for.
    Auth {
        /// The auth command.
        #[command(subcommand)]
        command: AuthCommand,
    },
    /// Read and verify the audit trail.
    Audit {
        /// The audit command.
        #[command(subcommand)]
        command: AuditCommand,
    },
}

/// `legion certs …`.
#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Writes a development CA and certificates for the control plane (localhost, 127.0.0.1, ::1), an
    /// executor and a gateway into DIR, and prints the files written.
    Init {
        /// Directory to write into (created if missing; existing files are replaced).
        dir: PathBuf,
        /// Node name in the executor certificate (`spiffe://legion/node/<NAME>`).
        #[arg(long, value_name = "NAME", default_value = "executor", value_parser = parse_node_name)]
        executor_name: String,
    },
    /// Signs a certificate for one more executor node with the CA of `certs init` in DIR (`ca.pem`,
    /// `ca-key.pem`) and writes `DIR/node-<NAME>.pem` and `DIR/node-<NAME>-key.pem`; run that executor
    /// with `executor.name` = NAME.
    Node {
        /// Directory holding the CA written by `legion certs init`; the new files are written there.
        dir: PathBuf,
        /// Node name in the certificate (`spiffe://legion/node/<NAME>`).
        #[arg(long, value_name = "NAME", value_parser = parse_node_name)]
        name: String,
    },
}

/// `legion task …`.
#[derive(Debug, Subcommand)]
pub enum TaskCommand {
    /// Submits a task and prints it; with --wait, follows it to its end instead.
    Submit(Submit),
    /// Prints a task.
    Get {
        /// Task id (UUID).
        #[arg(value_parser = parse_task_id)]
        id: String,
    },
    /// Prints one page of tasks, newest first.
    List(List),
    /// Prints each status change of a task as one JSON line until it ends; exits 0 if it succeeded,
    /// 2 otherwise.
    Watch {
        /// Task id (UUID).
        #[arg(value_parser = parse_task_id)]
        id: String,
    },
    /// Cancels a task that has not finished and prints it.
    Cancel {
        /// Task id (UUID).
        #[arg(value_parser = parse_task_id)]
        id: String,
    },
    /// Prints the tree of a chain run under a task, one indented line per task: id, function, status,
    /// duration (finished_at - started_at, or -) and, for a task that did not succeed, its error or
    /// skip reason.
    Tree {
        /// Task id (UUID): the run's root, or a task of the run to show only the subtree under it.
        #[arg(value_parser = parse_task_id)]
        id: String,
        /// Print the tree as nested JSON `{"task":{…},"children":[…]}` (tasks in their REST shape).
        #[arg(long)]
        json: bool,
    },
}

/// `legion task submit`.
#[derive(Debug, Clone, Args)]
pub struct Submit {
    /// `extension.runner.function`, e.g. `core.util.echo`.
    pub function: String,
    /// JSON arguments, inline (`'{"url":"http://x"}'`) or from a file (`@args.json`); default `{}`.
    #[arg(long, value_name = "JSON", value_parser = parse_json_arg)]
    pub args: Option<serde_json::Value>,
    /// Priority, 0 (lowest, default) to 9 (highest).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(0..=9))]
    pub priority: Option<u32>,
    /// Most attempts (default 1).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_attempts: Option<u32>,
    /// Limit for one attempt, in milliseconds (default `limits.default_timeout_ms`).
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u32).range(1..))]
    pub timeout_ms: Option<u32>,
    /// Delay before the first start, in milliseconds (default 0).
    #[arg(long, value_name = "MS")]
    pub delay_ms: Option<u64>,
    /// A second submit with the same key returns the first task.
    #[arg(long, value_name = "KEY")]
    pub idempotency_key: Option<String>,
    /// Run the task as the root of a run of this chain.
    #[arg(long, value_name = "NAME")]
    pub chain: Option<String>,
    /// Region whose executors run the task (executors with executor.region = REGION)
    #[arg(long, value_name = "REGION")]
    pub region: Option<String>,
    /// Retry policy: wait after the first failed attempt, in ms (default `retry.initial_backoff_ms`).
    #[arg(long, value_name = "MS", allow_negative_numbers = true)]
    pub retry_initial_backoff_ms: Option<u64>,
    /// Retry policy: growth factor of the wait, 1.0 to 10.0 (default `retry.multiplier`).
    #[arg(long, value_name = "FACTOR", allow_negative_numbers = true)]
    pub retry_multiplier: Option<f64>,
    /// Retry policy: longest wait, in ms (default `retry.max_backoff_ms`).
    #[arg(long, value_name = "MS", allow_negative_numbers = true)]
    pub retry_max_backoff_ms: Option<u64>,
    /// Retry policy: random fraction of each wait, 0.0 to 1.0 (default `retry.jitter`).
    #[arg(long, value_name = "FRACTION", allow_negative_numbers = true)]
    pub retry_jitter: Option<f64>,
    /// Follow the task: print each status change as one JSON line; exit 0 if it succeeded, 2 otherwise.
    #[arg(long)]
    pub wait: bool,
}

/// `legion task list`.
#[derive(Debug, Clone, Args)]
pub struct List {
    /// Only tasks with this status.
    #[arg(long, value_name = "STATUS")]
    pub status: Option<TaskStatus>,
    /// Only tasks of this function.
    #[arg(long, value_name = "FUNCTION")]
    pub function: Option<String>,
    /// Only tasks of runs of this chain.
    #[arg(long, value_name = "NAME")]
    pub chain: Option<String>,
    /// Only tasks of the chain run rooted at this task.
    #[arg(long, value_name = "ID", value_parser = parse_task_id)]
    pub root_id: Option<String>,
    /// Tasks per page, 1 to 1000 (default 100).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub limit: Option<u32>,
    /// `next_page_token` of the previous page.
    #[arg(long, value_name = "TOKEN")]
    pub page_token: Option<String>,
}

/// `legion chain …`.
#[derive(Debug, Subcommand)]
pub enum ChainCommand {
    /// Creates or replaces a chain from a JSON or YAML file shaped as the body of `POST /api/v1/chains`
    /// (`{"name","description","max_depth","relationships":[{"trigger","action","conditions",…}]}`) and
    /// prints whether it was created, changed (a new version) or unchanged, with its version. A
    /// `.yaml`/`.yml` file is read as YAML; any other as JSON, else YAML.
    Apply {
        /// The chain file; `-` reads standard input.
        file: PathBuf,
    },
    /// Prints every chain as a table: name, version, relationships, updated_at, updated_by.
    List,
    /// Prints a chain (its REST shape, as pretty JSON).
    Show {
        /// The chain's name.
        name: String,
    },
    /// Deletes a chain; runs in flight create no further tasks. Prints nothing.
    Delete {
        /// The chain's name.
        name: String,
    },
}

/// `legion policy …`.
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Creates or replaces a policy from a JSON file `{"name","rules":[{"path","capabilities"}]}` and
    /// prints it.
    Apply {
        /// The policy file; `-` reads standard input.
        file: PathBuf,
        /// The policy's name; overrides the file's `name`.
        #[arg(long, value_name = "NAME")]
        name: Option<String>,
    },
    /// Prints every policy.
    List,
    /// Prints a policy.
    Show {
        /// The policy's name.
        name: String,
    },
    /// Deletes a policy; prints nothing.
    Delete {
        /// The policy's name.
        name: String,
    },
    /// Prints the capabilities you (or the given policies) have on each path, one `PATH<TAB>cap,cap`
    /// line per path in the order given.
    Check {
        /// Resource paths, e.g. `tasks/core/util/echo`.
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<String>,
        /// Evaluate this policy instead of your own; repeatable (needs `sudo` on `policies/*`).
        #[arg(long = "policy", value_name = "NAME")]
        policies: Vec<String>,
        /// Print `{"capabilities":{PATH:[…]}}` (the REST shape) instead of lines.
        #[arg(long)]
        json: bool,
    },
}

/// `legion api-key …`.
#[derive(Debug, Subcommand)]
pub enum ApiKeyCommand {
    /// Creates an API key and prints it with its secret, which is shown this once.
    Create {
        /// The key's name.
        #[arg(long, value_name = "NAME")]
        name: String,
        /// A policy the key is bound to; repeatable.
        #[arg(long = "policy", value_name = "NAME")]
        policies: Vec<String>,
        /// Lifetime in seconds (default: the key does not expire).
        #[arg(long = "ttl-s", value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
        ttl_s: Option<u64>,
    },
    /// Prints the API keys (never their secrets).
    List {
        /// Include revoked keys.
        #[arg(long)]
        include_revoked: bool,
    },
    /// Revokes an API key and prints it.
    Revoke {
        /// The key's id (UUID).
        #[arg(value_parser = parse_api_key_id)]
        id: String,
    },
}

/// `legion auth …`.
#[derive(Debug, Subcommand)]
pub enum AuthCommand {
    /// Exchanges the API key (`--api-key` or `LEGION_API_KEY`) for a short-lived JWT and prints
    /// `{"token","expires_at"}`; use it as `--token` or `LEGION_TOKEN`.
    Token,
    /// Prints your principal and policies, as the control plane authenticates you.
    Whoami,
}

/// `legion audit …`.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Prints one page of audit records, newest first.
    List(AuditList),
    /// Checks the audit trail's hash chain and prints `{"valid","checked","first_broken","reason"}`;
    /// exits 1 when it does not verify.
    Verify,
}

/// `legion audit list`.
#[derive(Debug, Clone, Default, Args)]
pub struct AuditList {
    /// Only records of this principal (`api-key/<id>`, `jwt/<sub>`, `node/<name>`, `anonymous`).
    #[arg(long, value_name = "PRINCIPAL")]
    pub principal: Option<String>,
    /// Only records of this action (`authorize`, `policy.put`, `api_key.create`, …).
    #[arg(long, value_name = "ACTION")]
    pub action: Option<String>,
    /// Only records with this decision.
    #[arg(long, value_name = "DECISION", value_parser = clap::builder::PossibleValuesParser::new(legion_gateway::input::AUDIT_DECISIONS))]
    pub decision: Option<String>,
    /// Only records whose resource path starts with this prefix (`tasks/`).
    #[arg(long, value_name = "PREFIX")]
    pub resource_prefix: Option<String>,
    /// Only records at or after this time (RFC 3339, e.g. 2026-01-01T00:00:00Z).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub since: Option<prost_types::Timestamp>,
    /// Only records before this time (RFC 3339).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub until: Option<prost_types::Timestamp>,
    /// Records per page, 1 to 1000 (default 100).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub limit: Option<u32>,
    /// `next_page_token` of the previous page.
    #[arg(long, value_name = "TOKEN")]
    pub page_token: Option<String>,
}

/// A credential (API key or JWT). Its `Debug` form hides the value; [`Secret::expose`] gives it to the
/// code that sends it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a credential.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The credential itself, to send; never print or log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret([REDACTED])")
    }
}

/// Takes a credential as given. It is checked when the connection is set up
/// ([`crate::connect::credential`]), because clap repeats a refused value in its error message.
pub fn parse_secret(value: &str) -> Result<Secret, String> {
    Ok(Secret::new(value))
}

/// An API key id: a hyphenated UUID, returned in canonical lowercase.
pub fn parse_api_key_id(value: &str) -> Result<String, String> {
    legion_gateway::input::parse_uuid("id", value).map_err(|p| p.detail)
}

/// An RFC 3339 time (`2026-01-01T00:00:00Z`, any offset).
pub fn parse_time(value: &str) -> Result<prost_types::Timestamp, String> {
    legion_gateway::input::parse_time("time", value).map_err(|p| p.detail)
}

/// A task id: a hyphenated UUID, returned in canonical lowercase.
pub fn parse_task_id(value: &str) -> Result<String, String> {
    legion_gateway::input::parse_uuid("id", value).map_err(|p| p.detail)
}

/// JSON given inline, or `@FILE` to read it from a file.
pub fn parse_json_arg(value: &str) -> Result<serde_json::Value, String> {
    let (text, origin) = match value.strip_prefix('@') {
        Some(path) => (std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?, path),
        None => (value.to_owned(), "the value"),
    };
    serde_json::from_str(&text).map_err(|e| format!("{origin} is not valid JSON: {e}"))
}

/// A node name as `executor.name` accepts it: 1 to 64 bytes of a-z, 0-9, `_` and `-`, starting with a letter.
pub fn parse_node_name(value: &str) -> Result<String, String> {
    legion_common::function::validate_segment(&value.replace('-', "_"))
        .map(|()| value.to_owned())
        .map_err(|_| "must be 1 to 64 bytes of a-z, 0-9, _ and -, starting with a letter".to_owned())
}

mod dead_letter;
mod schedule;

pub use dead_letter::{DeadLetterCommand, DeadLetterList};
pub use schedule::{
    MISFIRE_POLICIES, ScheduleAdd, ScheduleCommand, ScheduleFires, SchedulePreview, parse_every, parse_instant,
    parse_interval_ms,
};

#[cfg(test)]
mod tests;
