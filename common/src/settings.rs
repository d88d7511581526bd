//! Settings: JSON layers merged in a fixed order, then references resolved, then validated.
//!
//! Order (later wins), as in DESIGN.md section 3: built-in defaults; every `*.json` (sorted by name) in
//! `/etc/legionio/`, `~/.legionio/settings/` and `./settings/`; the directories given with
//! `--settings-dir` and the files given with `--settings`, in that order; then environment variables
//! `LEGION_<SECTION>__<KEY>` (double underscore for nesting, e.g. `LEGION_DATA__URL`). Objects are
//! merged deeply; any other value replaces the one before it.
//!
//! After merging, string values of the form `env://VAR` are replaced by that variable's value, and an
//! array whose first element is such a reference is a fallback chain: the first reference that
//! resolves wins, and a plain string ends the chain. `vault://path#key` references are refused with a
//! clear error until a Vault cluster is configured (`crypt.vault`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Format, Json, Serialized};
use serde::{Deserialize, Serialize};

/// Why settings could not be loaded. Every variant names the file or key at fault.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A settings file or directory could not be read.
    #[error("cannot read settings from {path}: {source}")]
    Read {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A layer is not valid JSON or does not fit the settings' shape.
    #[error("invalid settings: {0}")]
    Parse(String),
    /// A reference could not be resolved.
    #[error("settings key {key}: {reason}")]
    Reference {
        /// Dotted path of the key.
        key: String,
        /// Why it did not resolve.
        reason: String,
    },
    /// A value is out of range or malformed.
    #[error("settings key {key}: {reason}")]
    Invalid {
        /// Dotted path of the key.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// Where settings come from besides the built-in defaults and the three standard directories.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// Directories given with `--settings-dir`, in order.
    pub dirs: Vec<PathBuf>,
    /// Files given with `--settings`, in order.
    pub files: Vec<PathBuf>,
    /// Skip `/etc/legionio/`, `~/.legionio/settings/` and `./settings/` (tests use this).
    pub skip_standard_dirs: bool,
    /// Environment variables to read; `None` reads the process environment.
    pub env: Option<BTreeMap<String, String>>,
}

/// All of Legion's settings. Every section has defaults, so an empty layer is valid for local use.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// PostgreSQL.
    pub data: DataSettings,
    /// RabbitMQ.
    pub transport: TransportSettings,
    /// The control plane's listeners and loops.
    pub control_plane: ControlPlaneSettings,
    /// mTLS material (PEM paths).
    pub tls: TlsSettings,
    /// The REST gateway.
    pub api: ApiSettings,
    /// The executor.
    pub executor: ExecutorSettings,
    /// Logging.
    pub logging: LoggingSettings,
    /// Limits on what callers may submit.
    pub limits: Limits,
    /// The retry policy a task gets when its submit (or relationship, or schedule) does not set one.
    pub retry: RetrySettings,
    /// Secrets backends: JWT keys (`crypt.jwt`), Vault clusters (`crypt.vault`, read by a later feature).
    pub crypt: CryptSettings,
    /// Authentication: the bootstrap admin key and credential caching.
    pub auth: AuthSettings,
    /// RBAC settings; read by later features.
    pub rbac: serde_json::Value,
    /// DNS bootstrap settings; read by later features.
    pub bootstrap: serde_json::Value,
}

/// PostgreSQL settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataSettings {
    /// `postgres://user:password@host:port/db`. Default `postgres://postgres@127.0.0.1:5432/legion`.
    pub url: String,
    /// Pool size. Default 16.
    pub max_connections: u32,
    /// How long to wait for a pooled connection, in ms. Default 5000.
    pub acquire_timeout_ms: u64,
}

impl Default for DataSettings {
    fn default() -> Self {
        Self { url: "postgres://postgres@127.0.0.1:5432/legion".into(), max_connections: 16, acquire_timeout_ms: 5000 }
    }
}

/// RabbitMQ settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TransportSettings {
    /// `amqp://user:password@host:port/vhost` or `amqps://…`. Default `amqp://guest:guest@127.0.0.1:5672/%2f`.
    pub url: String,
    /// TLS for `amqps://`.
    pub tls: TransportTlsSettings,
    /// Deliveries of one task message (first delivery plus redeliveries after a consumer vanished)
    /// before the task is dead-lettered. Default 5.
    pub delivery_limit: u32,
    /// Outbox rows published per round, each round pipelined with publisher confirms. Default 500.
    pub publish_batch: u32,
    /// How often the outbox is polled when nothing signals new rows, in ms. Default 500.
    pub outbox_poll_ms: u64,
}

impl Default for TransportSettings {
    fn default() -> Self {
        Self {
            url: "amqp://guest:guest@127.0.0.1:5672/%2f".into(),
            tls: TransportTlsSettings::default(),
            delivery_limit: 5,
            publish_batch: 500,
            outbox_poll_ms: 500,
        }
    }
}

/// TLS settings for `amqps://`.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct TransportTlsSettings {
    /// PEM file of the CA that signed the broker's certificate; system roots when unset.
    pub ca: Option<PathBuf>,
}

/// Control-plane settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ControlPlaneSettings {
    /// gRPC listen address (TLS). Default `127.0.0.1:50051`.
    pub listen: SocketAddr,
    /// Admin HTTP listen address (/healthz, /readyz, /metrics). Default `127.0.0.1:9464`.
    pub admin_listen: SocketAddr,
    /// Where executors, the gateway and the CLI reach the control plane. Default `https://localhost:50051`.
    pub url: String,
    /// Other control-plane replicas (`https://host:port` each) that executors and the gateway call,
    /// in order after `url`, when the current one cannot be connected to (see
    /// [`crate::failover`]). Empty by default; not needed behind one load-balanced `url`.
    pub failover_urls: Vec<String>,
    /// A node silent for this long is `lost`, in ms. Default 30000.
    pub node_lease_ms: u64,
    /// Lease of the leader among control-plane replicas, in ms: the leader renews it every third of
    /// this, and another replica takes over at most this long after the leader stopped renewing.
    /// 1000 to 300000. Default 10000.
    pub leader_lease_ms: u64,
    /// Most starts or completions committed in one transaction. Default 512.
    pub commit_batch: usize,
    /// Submits coalesced into one transaction, at most. Default 256.
    pub submit_batch: usize,
    /// Sandbox processes per pool that evaluate `jinja` and `jq` transformations (each evaluates one at
    /// a time). Chains and schedules each have their own pool of this size, so one cannot starve the
    /// other. 1 to 64. Default 2.
    pub transform_workers: usize,
    /// Longest evaluation of one transformation, in ms; past it the sandbox process is killed and
    /// replaced, and the child task fails with the reason. 1 to 60000. Default 1000.
    pub transform_timeout_ms: u64,
    /// Longest time all the transformations fired by one completion batch may take together, in ms:
    /// evaluations still unfinished then fail their child tasks with the reason, so a chain with many
    /// slow transformations can neither hold a completion past the executor's call deadline (30 s) nor
    /// keep the sandbox from other runs for long. 1 to 20000. Default 2000.
    pub transform_budget_ms: u64,
    /// Address-space limit of each sandbox process (`RLIMIT_AS`), in bytes. At least 64 MiB. Default
    /// 512 MiB (536870912).
    pub transform_memory_bytes: u64,
    /// Largest output of one transformation (serialized JSON), in bytes. At least 1 KiB. Default 16 MiB
    /// (16777216).
    pub transform_max_output_bytes: usize,
    /// How often the leader looks for schedules created, paused or resumed through another replica, in
    /// ms (changes made through the leader itself wake it at once; due slots wake it on time).
    /// 100 to 60000. Default 1000.
    pub schedule_poll_ms: u64,
    /// Most schedules decided and written in one transaction by the scheduler. 1 to 10000. Default 500.
    pub schedule_batch: u32,
    /// How late a slot may be dealt with and still count as on time, in ms. An older slot was missed
    /// while no leader ticked: a `skip` schedule passes over it, a `fire_once` schedule fires its newest
    /// missed slot once. 100 to 3600000. Default 10000 (one default `leader_lease_ms`).
    pub misfire_grace_ms: u64,
    /// Fire rows kept per schedule: the leader deletes a schedule's older rows (oldest slots first) in
    /// the background, a bounded amount of work per pass. 100 to 1000000. Default 10000.
    pub schedule_history: u32,
    /// How long an `idempotency_key` keeps returning its task, in s, counted from the task's creation:
    /// a later submit with the same key (by the same caller) creates a new task. 60 to 2592000 (30
    /// days). Default 86400 (24 h).
    pub idempotency_retention_s: u64,
}

impl ControlPlaneSettings {
    /// `url`, then `failover_urls`: every replica a client may call, in order.
    pub fn urls(&self) -> Vec<String> {
        std::iter::once(&self.url).chain(&self.failover_urls).cloned().collect()
    }
}

impl Default for ControlPlaneSettings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 9464)),
            url: "https://localhost:50051".into(),
            failover_urls: Vec::new(),
            node_lease_ms: 30_000,
            leader_lease_ms: 10_000,
            commit_batch: 512,
            submit_batch: 256,
            transform_workers: 2,
            transform_timeout_ms: 1000,
            transform_budget_ms: 2000,
            transform_memory_bytes: 512 * 1024 * 1024,
            transform_max_output_bytes: 16 * 1024 * 1024,
            schedule_poll_ms: 1000,
            schedule_batch: 500,
            misfire_grace_ms: 10_000,
            schedule_history: 10_000,
            idempotency_retention_s: 86_400,
        }
    }
}

/// mTLS material, PEM file paths.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct TlsSettings {
    /// CA that signs every Legion certificate; the control plane verifies client certificates with it.
    pub ca: Option<PathBuf>,
    /// This process's certificate chain.
    pub cert: Option<PathBuf>,
    /// This process's private key (PKCS#8 or SEC1 PEM).
    pub key: Option<PathBuf>,
}

/// REST gateway settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiSettings {
    /// HTTP listen address. Default `127.0.0.1:4567`.
    pub listen: SocketAddr,
    /// Accepted `Host` header values (and request-target hosts); empty accepts any. `/healthz`, `/readyz`
    /// and `/metrics` are exempt (probes and scrapes address the pod IP). Default empty.
    pub allowed_hosts: Vec<String>,
    /// Largest request body, in bytes. Default 2 MiB (2097152), above `limits.max_payload_bytes`
    /// so that an oversize `args` is reported by name.
    pub max_body_bytes: usize,
    /// Per-request timeout, in ms (WatchTask streams excepted). Default 30000.
    pub request_timeout_ms: u64,
}

impl Default for ApiSettings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 4567)),
            allowed_hosts: Vec::new(),
            max_body_bytes: 2 * 1024 * 1024,
            request_timeout_ms: 30_000,
        }
    }
}

/// Executor settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExecutorSettings {
    /// Node name; must match the node name in the executor's certificate. Default `executor`.
    pub name: String,
    /// Extensions to load; empty loads every built-in one allowed by `profile`. Default empty.
    pub extensions: Vec<String>,
    /// Role profile: the name of an entry of `executor.profiles`, which lists the extensions an executor
    /// of that role may load. Default `all`.
    pub profile: String,
    /// Role profiles: name → extensions allowed (`"*"` allows every built-in one). Defaults: `all`
    /// (`["*"]`) and `core` (`["core", "log"]`); entries given in settings are added to these or replace
    /// them by name.
    pub profiles: BTreeMap<String, Vec<String>>,
    /// Task slots: tasks run at once; also the broker prefetch. Default 16.
    pub concurrency: u32,
    /// Region label. Default `default`.
    pub region: String,
    /// Heartbeat interval, in ms. Default 5000.
    pub heartbeat_ms: u64,
    /// On SIGTERM, how long in-flight tasks may finish before they are requeued, in ms. Default 30000.
    pub shutdown_grace_ms: u64,
    /// Admin HTTP listen address. Default `127.0.0.1:9465`.
    pub admin_listen: SocketAddr,
    /// Longest wait before a batch of starts or completions is sent, in ms. Default 2.
    pub report_linger_ms: u64,
    /// Paths `file.fs.*` refuses besides the built-in deny list.
    pub deny_paths: Vec<PathBuf>,
    /// Directory of the completion spool (DESIGN.md section 5, item 7): completions the control plane
    /// could not take are appended here, one AES-256-GCM encrypted JSON line each, and replayed in
    /// order when it answers again. Unset: `~/.legionio/spool/<executor.name>`. Must be on a disk that
    /// outlives the process (a persistent volume in Kubernetes), or spooled completions are lost with it.
    pub spool_dir: Option<PathBuf>,
    /// The spool's AES-256 key: 32 bytes, base64 (standard alphabet), usually a `vault://` reference.
    /// Unset: the executor creates a random key in `<spool_dir>/spool.key` (mode 0600) and warns that
    /// the key sits beside the data it protects. Default unset.
    pub spool_key: Option<String>,
    /// Size at which the spool starts a new file, in bytes. 65536 to 1073741824. Default 16 MiB
    /// (16777216).
    pub spool_file_bytes: u64,
    /// Most bytes the spool may hold; a completion that does not fit waits for the control plane
    /// instead (its message stays unacked). At least `spool_file_bytes`. Default 1 GiB (1073741824).
    pub spool_max_bytes: u64,
    /// How long a spooled completion is kept, in s: older lines are dropped (and counted in
    /// `legion_executor_spool_expired_total`) instead of replayed. 60 to 2592000. Default 259200 (72 h).
    pub spool_retention_s: u64,
    /// How long a completion waits for an unreachable control plane before it goes to the spool, in
    /// ms. 0 spools at the first failed call. 0 to 600000. Default 5000.
    pub spool_after_ms: u64,
}

impl Default for ExecutorSettings {
    fn default() -> Self {
        Self {
            name: "executor".into(),
            extensions: Vec::new(),
            profile: "all".into(),
            profiles: default_profiles(),
            concurrency: 16,
            region: "default".into(),
            heartbeat_ms: 5000,
            shutdown_grace_ms: 30_000,
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 9465)),
            report_linger_ms: 2,
            deny_paths: Vec::new(),
            spool_dir: None,
            spool_key: None,
            spool_file_bytes: 16 * 1024 * 1024,
            spool_max_bytes: 1024 * 1024 * 1024,
            spool_retention_s: 259_200,
            spool_after_ms: 5000,
        }
    }
}

/// The built-in role profiles: `all` allows every built-in extension, `core` only `core` and `log`.
pub fn default_profiles() -> BTreeMap<String, Vec<String>> {
    BTreeMap::from([
        ("all".to_owned(), vec!["*".to_owned()]),
        ("core".to_owned(), vec!["core".to_owned(), "log".to_owned()]),
    ])
}

/// Secrets backends.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct CryptSettings {
    /// JSON Web Tokens: how the control plane signs the tokens it issues and verifies bearer tokens.
    pub jwt: JwtSettings,
    /// Vault clusters (`vault://` references, dynamic credentials); read by a later feature.
    pub vault: serde_json::Value,
}

/// JWT signing and verification (RFC 7519, signatures RFC 7515 with the algorithms of RFC 7518).
///
/// The control plane signs with RS256 when `rs_private_key` is set, else with HS256 when `hs_secret` is
/// set; with neither, `POST /api/v1/auth/token` is unavailable and only API keys authenticate. A bearer
/// token is accepted only if its header's `alg` is in `algorithms` and a key of that family is
/// configured, so an RS256 public key can never be used as an HS256 secret, and `none` never verifies.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JwtSettings {
    /// Accepted `alg` values: `HS256`, `RS256`. Empty (the default) accepts the algorithm of each key
    /// that is configured.
    pub algorithms: Vec<String>,
    /// `iss` of issued tokens, required in verified ones. Default `legion`.
    pub issuer: String,
    /// `aud` of issued tokens, required in verified ones. Default `legion`.
    pub audience: String,
    /// HS256 shared secret, at least 32 bytes (RFC 7518 section 3.2). Default unset.
    pub hs_secret: Option<String>,
    /// PEM file of the RS256 private key (PKCS#1 or PKCS#8, at least 2048 bits). Default unset.
    pub rs_private_key: Option<PathBuf>,
    /// PEM file of the RS256 public key that verifies tokens, published as a JWKS. Default unset; with
    /// only `rs_private_key` set, tokens signed here cannot be verified, so both go together.
    pub rs_public_key: Option<PathBuf>,
    /// Lifetime of issued tokens, in s. Default 900 (15 min).
    pub ttl_s: u64,
    /// Clock skew tolerated when checking `exp` and `nbf`, in s. Default 30.
    pub leeway_s: u64,
}

impl Default for JwtSettings {
    fn default() -> Self {
        Self {
            algorithms: Vec::new(),
            issuer: "legion".into(),
            audience: "legion".into(),
            hs_secret: None,
            rs_private_key: None,
            rs_public_key: None,
            ttl_s: 900,
            leeway_s: 30,
        }
    }
}

/// Authentication settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// If set and no unrevoked API key is bound to the `admin` policy, the control plane creates one with
    /// this value at start (and the `admin` policy, if missing). At least 32 characters. Default unset.
    pub bootstrap_admin_key: Option<String>,
    /// How long a replica may reuse a verified API key or a loaded policy, in ms; a key revoked or a
    /// policy changed on another replica takes effect here within this time (at once on the replica that
    /// made the change). Default 1000.
    pub cache_ttl_ms: u64,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self { bootstrap_admin_key: None, cache_ttl_ms: 1000 }
    }
}

/// Logging settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoggingSettings {
    /// `console` or `json`. Default `console`.
    pub format: String,
    /// Default level: `trace`, `debug`, `info`, `warn`, `error`. Default `info`.
    pub level: String,
    /// Levels per component (tracing target), e.g. `{"legion_executor": "debug"}`.
    pub levels: BTreeMap<String, String>,
}

impl Default for LoggingSettings {
    fn default() -> Self {
        Self { format: "console".into(), level: "info".into(), levels: BTreeMap::new() }
    }
}

/// The default retry policy of tasks (DESIGN.md section 5, item 5). A submit, a relationship or a
/// schedule may set any of these fields for its tasks; unset fields take these values, and the task
/// stores the policy it was given, so a later change of settings does not alter it.
///
/// After failed attempt `n` (1-based) the task waits `min(max_backoff_ms, initial_backoff_ms ·
/// multiplier^(n−1)) · (1 − jitter · u)` ms, `u` uniform in [0, 1), as `scheduled` with `not_before`
/// in PostgreSQL (exponential backoff with jitter; `jitter = 1` is the "full jitter" of the AWS
/// Architecture Blog's "Exponential Backoff And Jitter"). Only runner errors and timeouts wait; an
/// attempt lost with its executor runs again at once, and a permanent error is never retried.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetrySettings {
    /// Wait after the first failed attempt, in ms; 0 retries at once. 0 to `max_backoff_ms`. Default
    /// 1000.
    pub initial_backoff_ms: u64,
    /// Factor by which each wait grows. 1.0 to 10.0. Default 2.0.
    pub multiplier: f64,
    /// Longest wait, in ms. At most 86400000 (24 h). Default 300000 (5 min).
    pub max_backoff_ms: u64,
    /// Fraction of each wait drawn at random (see above). 0.0 to 1.0. Default 0.2.
    pub jitter: f64,
}

impl Default for RetrySettings {
    fn default() -> Self {
        Self { initial_backoff_ms: 1000, multiplier: 2.0, max_backoff_ms: 300_000, jitter: 0.2 }
    }
}

/// Longest `retry.max_backoff_ms` (and `max_backoff_ms` of a task's policy), in ms: 24 h.
pub const MAX_BACKOFF_CEILING_MS: u64 = 86_400_000;

/// Limits on submitted tasks. Each is enforced by the control plane and named in its errors.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest `args` (serialized JSON), in bytes. Default 1 MiB (1048576).
    pub max_payload_bytes: usize,
    /// Largest result a function may return (serialized JSON), in bytes. Default 4 MiB (4194304).
    pub max_result_bytes: usize,
    /// Largest `max_attempts`. Default 25.
    pub max_attempts: u32,
    /// `timeout_ms` when none is given. Default 30000.
    pub default_timeout_ms: u32,
    /// Largest `timeout_ms`. Default 86400000 (24 h).
    pub max_timeout_ms: u32,
    /// Largest `delay_ms`. Default 2592000000 (30 days).
    pub max_delay_ms: u64,
    /// Longest `idempotency_key`, in bytes. Default 255.
    pub max_idempotency_key_bytes: usize,
    /// Deepest nesting of arrays and objects in `args` and in a function's result; `{"a":1}` has depth
    /// one. Default 32, which keeps every task decodable by protobuf clients: their recursion limit is
    /// 100 messages, and one JSON level is three protobuf messages.
    pub max_json_depth: usize,
    /// Most bytes of task data (args, results, errors) in one page of a task list; a page ends early
    /// (with a `next_page_token`) rather than pass it, and holds at least one task. Default 16 MiB
    /// (16777216).
    pub max_list_bytes: usize,
    /// Deepest task of a chain run (the root has depth 0); a chain's own `max_depth` may only lower it.
    /// A child deeper than the cap is created `skipped` with the reason. 1 to 1000. Default 32.
    pub max_chain_depth: u32,
    /// Most tasks one relationship creates from one parent (an array transformation output). A larger
    /// output fails that child with the reason. 1 to 10000. Default 1000.
    pub max_fanout: u32,
    /// Most relationships in one chain. 1 to 1000. Default 100.
    pub max_relationships: u32,
    /// Most tasks in one chain run, its root included: fan-out and depth multiply, so this bounds
    /// what one submit can create. A relationship whose children would pass it creates one `failed`
    /// child naming the limit instead. 1 to 1000000. Default 10000.
    pub max_run_tasks: u32,
    /// Largest transformation (a `jinja` template, a `jq` expression or a serialized `static` value)
    /// and largest `conditions` document (serialized), in bytes. Default 64 KiB (65536).
    pub max_transformation_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_payload_bytes: 1024 * 1024,
            max_result_bytes: 4 * 1024 * 1024,
            max_attempts: 25,
            default_timeout_ms: 30_000,
            max_timeout_ms: 86_400_000,
            max_delay_ms: 2_592_000_000,
            max_idempotency_key_bytes: 255,
            max_json_depth: 32,
            max_list_bytes: 16 * 1024 * 1024,
            max_chain_depth: 32,
            max_fanout: 1000,
            max_relationships: 100,
            max_run_tasks: 10_000,
            max_transformation_bytes: 64 * 1024,
        }
    }
}

impl Settings {
    /// Loads, resolves and validates the settings from `sources` (see the module docs for the order).
    ///
    /// # Errors
    /// [`Error`] naming the file or key at fault.
    pub fn load(sources: &Sources) -> Result<Self, Error> {
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        if !sources.skip_standard_dirs {
            let mut standard = vec![PathBuf::from("/etc/legionio")];
            if let Some(home) = std::env::var_os("HOME") {
                standard.push(Path::new(&home).join(".legionio/settings"));
            }
            standard.push(PathBuf::from("settings"));
            for dir in standard.iter().filter(|d| d.is_dir()) {
                figment = merge_dir(figment, dir)?;
            }
        }
        for dir in &sources.dirs {
            if !dir.is_dir() {
                return Err(Error::Read {
                    path: dir.clone(),
                    source: std::io::Error::new(std::io::ErrorKind::NotFound, "not a directory"),
                });
            }
            figment = merge_dir(figment, dir)?;
        }
        for file in &sources.files {
            figment = merge_file(figment, file)?;
        }
        let mut raw: serde_json::Value = figment.extract().map_err(|e| Error::Parse(e.to_string()))?;
        let vars: BTreeMap<String, String> = match &sources.env {
            Some(vars) => vars.clone(),
            None => std::env::vars().collect(),
        };
        apply_env(&mut raw, &vars);
        let lookup = |name: &str| match &sources.env {
            Some(vars) => vars.get(name).cloned(),
            None => std::env::var(name).ok(),
        };
        resolve_references(&mut raw, "", &lookup)?;
        let settings: Settings = serde_path_to_error::deserialize(raw).map_err(|e| {
            let key = e.path().to_string();
            if key == "." || key.is_empty() {
                Error::Parse(e.inner().to_string())
            } else {
                Error::Invalid { key, reason: e.inner().to_string() }
            }
        })?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks values that the types alone do not.
    ///
    /// # Errors
    /// [`Error::Invalid`] naming the key.
    pub fn validate(&self) -> Result<(), Error> {
        let invalid = |key: &str, reason: &str| Err(Error::Invalid { key: key.into(), reason: reason.into() });
        if !(self.data.url.starts_with("postgres://") || self.data.url.starts_with("postgresql://")) {
            return invalid("data.url", "must start with postgres:// or postgresql://");
        }
        if self.data.max_connections == 0 {
            return invalid("data.max_connections", "must be at least 1");
        }
        if !(self.transport.url.starts_with("amqp://") || self.transport.url.starts_with("amqps://")) {
            return invalid("transport.url", "must start with amqp:// or amqps://");
        }
        if self.transport.publish_batch == 0 {
            return invalid("transport.publish_batch", "must be at least 1");
        }
        if self.transport.delivery_limit == 0 {
            return invalid("transport.delivery_limit", "must be at least 1");
        }
        if !self.control_plane.url.starts_with("https://") {
            return invalid("control_plane.url", "must start with https:// (the control plane serves TLS only)");
        }
        for (i, url) in self.control_plane.failover_urls.iter().enumerate() {
            if !url.starts_with("https://") {
                return invalid(
                    &format!("control_plane.failover_urls[{i}]"),
                    "must start with https:// (the control plane serves TLS only)",
                );
            }
        }
        if self.control_plane.commit_batch == 0 || self.control_plane.submit_batch == 0 {
            return invalid("control_plane.commit_batch", "batch sizes must be at least 1");
        }
        if self.executor.concurrency == 0 || self.executor.concurrency > u32::from(u16::MAX) {
            return invalid("executor.concurrency", "must be 1 to 65535");
        }
        if self.executor.heartbeat_ms == 0 {
            return invalid("executor.heartbeat_ms", "must be at least 1");
        }
        if !(1000..=300_000).contains(&self.control_plane.leader_lease_ms) {
            return invalid("control_plane.leader_lease_ms", "must be 1000 to 300000");
        }
        if self.control_plane.node_lease_ms <= self.executor.heartbeat_ms {
            return invalid("control_plane.node_lease_ms", "must be longer than executor.heartbeat_ms");
        }
        if crate::function::validate_segment(&self.executor.name.replace('-', "_")).is_err() {
            return invalid("executor.name", "must be 1 to 64 bytes of a-z, 0-9, _ and -, starting with a letter");
        }
        if let Err(reason) = crate::broker::validate_region(&self.executor.region) {
            return invalid("executor.region", &reason);
        }
        if !self.executor.profiles.contains_key(&self.executor.profile) {
            let names: Vec<&str> = self.executor.profiles.keys().map(String::as_str).collect();
            return invalid(
                "executor.profile",
                &format!("unknown profile; executor.profiles defines {}", names.join(", ")),
            );
        }
        self.crypt.jwt.validate()?;
        if self.auth.cache_ttl_ms > 60_000 {
            return invalid("auth.cache_ttl_ms", "must be 0 to 60000 (how late a revocation may reach a replica)");
        }
        if let Some(key) = &self.auth.bootstrap_admin_key
            && key.chars().count() < 32
        {
            return invalid("auth.bootstrap_admin_key", "must be at least 32 characters");
        }
        if !matches!(self.logging.format.as_str(), "console" | "json") {
            return invalid("logging.format", "must be console or json");
        }
        for (key, level) in std::iter::once(("logging.level".to_owned(), &self.logging.level))
            .chain(self.logging.levels.iter().map(|(k, v)| (format!("logging.levels.{k}"), v)))
        {
            if level.parse::<tracing::Level>().is_err() && level != "off" {
                return invalid(&key, "must be trace, debug, info, warn, error or off");
            }
        }
        let l = &self.limits;
        for (key, value) in [
            ("limits.max_payload_bytes", l.max_payload_bytes),
            ("limits.max_result_bytes", l.max_result_bytes),
            ("limits.max_attempts", l.max_attempts as usize),
            ("limits.max_timeout_ms", l.max_timeout_ms as usize),
            ("limits.max_idempotency_key_bytes", l.max_idempotency_key_bytes),
            ("limits.max_list_bytes", l.max_list_bytes),
        ] {
            if value == 0 {
                return invalid(key, "must be at least 1");
            }
        }
        if l.max_json_depth == 0 || l.max_json_depth > MAX_JSON_DEPTH_CEILING {
            return invalid("limits.max_json_depth", "must be 1 to 32 (protobuf decoders refuse deeper values)");
        }
        if l.default_timeout_ms == 0 || l.default_timeout_ms > l.max_timeout_ms {
            return invalid("limits.default_timeout_ms", "must be 1 to limits.max_timeout_ms");
        }
        for (key, value, max) in [
            ("limits.max_chain_depth", l.max_chain_depth, MAX_CHAIN_DEPTH_CEILING),
            ("limits.max_fanout", l.max_fanout, MAX_FANOUT_CEILING),
            ("limits.max_relationships", l.max_relationships, MAX_RELATIONSHIPS_CEILING),
            ("limits.max_run_tasks", l.max_run_tasks, MAX_RUN_TASKS_CEILING),
        ] {
            if value == 0 || value > max {
                return invalid(key, &format!("must be 1 to {max}"));
            }
        }
        if l.max_transformation_bytes == 0 {
            return invalid("limits.max_transformation_bytes", "must be at least 1");
        }
        let cp = &self.control_plane;
        if cp.transform_workers == 0 || cp.transform_workers > 64 {
            return invalid("control_plane.transform_workers", "must be 1 to 64");
        }
        if cp.transform_timeout_ms == 0 || cp.transform_timeout_ms > 60_000 {
            return invalid("control_plane.transform_timeout_ms", "must be 1 to 60000");
        }
        if !(100..=60_000).contains(&cp.schedule_poll_ms) {
            return invalid("control_plane.schedule_poll_ms", "must be 100 to 60000");
        }
        if !(1..=10_000).contains(&cp.schedule_batch) {
            return invalid("control_plane.schedule_batch", "must be 1 to 10000");
        }
        if !(100..=3_600_000).contains(&cp.misfire_grace_ms) {
            return invalid("control_plane.misfire_grace_ms", "must be 100 to 3600000");
        }
        if !(100..=1_000_000).contains(&cp.schedule_history) {
            return invalid("control_plane.schedule_history", "must be 100 to 1000000");
        }
        if cp.transform_budget_ms == 0 || cp.transform_budget_ms > 20_000 {
            return invalid("control_plane.transform_budget_ms", "must be 1 to 20000");
        }
        if cp.transform_memory_bytes < 64 * 1024 * 1024 {
            return invalid("control_plane.transform_memory_bytes", "must be at least 67108864 (64 MiB)");
        }
        if cp.transform_max_output_bytes < 1024 {
            return invalid("control_plane.transform_max_output_bytes", "must be at least 1024");
        }
        if !(60..=2_592_000).contains(&cp.idempotency_retention_s) {
            return invalid("control_plane.idempotency_retention_s", "must be 60 to 2592000");
        }
        let r = &self.retry;
        if r.max_backoff_ms > MAX_BACKOFF_CEILING_MS {
            return invalid("retry.max_backoff_ms", "must be at most 86400000 (24 h)");
        }
        if r.initial_backoff_ms > r.max_backoff_ms {
            return invalid("retry.initial_backoff_ms", "must be at most retry.max_backoff_ms");
        }
        if !(1.0..=10.0).contains(&r.multiplier) {
            return invalid("retry.multiplier", "must be 1.0 to 10.0");
        }
        if !(0.0..=1.0).contains(&r.jitter) {
            return invalid("retry.jitter", "must be 0.0 to 1.0");
        }
        let ex = &self.executor;
        if !(65_536..=1_073_741_824).contains(&ex.spool_file_bytes) {
            return invalid("executor.spool_file_bytes", "must be 65536 to 1073741824");
        }
        if ex.spool_max_bytes < ex.spool_file_bytes {
            return invalid("executor.spool_max_bytes", "must be at least executor.spool_file_bytes");
        }
        if !(60..=2_592_000).contains(&ex.spool_retention_s) {
            return invalid("executor.spool_retention_s", "must be 60 to 2592000");
        }
        if ex.spool_after_ms > 600_000 {
            return invalid("executor.spool_after_ms", "must be 0 to 600000");
        }
        if self.api.max_body_bytes < l.max_payload_bytes {
            return invalid("api.max_body_bytes", "must be at least limits.max_payload_bytes");
        }
        Ok(())
    }

    /// The settings as JSON with every secret-bearing value replaced by `"[REDACTED]"` (see [`redact`]).
    /// Beyond the key names, every string under `crypt` is redacted (Vault role ids, secret ids and
    /// whatever a backend needs), except the public `crypt.jwt` values listed in [`PUBLIC_JWT_KEYS`].
    pub fn redacted(&self) -> serde_json::Value {
        let mut value = serde_json::to_value(self).unwrap_or(serde_json::Value::Null);
        redact(&mut value);
        if let Some(serde_json::Value::Object(crypt)) = value.get_mut("crypt") {
            for (section, inner) in crypt.iter_mut() {
                match (section.as_str(), inner) {
                    ("jwt", serde_json::Value::Object(jwt)) => {
                        for (_, v) in jwt.iter_mut().filter(|(k, _)| !PUBLIC_JWT_KEYS.contains(&k.as_str())) {
                            redact_strings(v);
                        }
                    }
                    (_, other) => redact_strings(other),
                }
            }
        }
        value
    }
}

impl JwtSettings {
    /// The accepted algorithms: `algorithms`, or when empty the algorithm of each configured key.
    pub fn accepted_algorithms(&self) -> Vec<String> {
        if !self.algorithms.is_empty() {
            return self.algorithms.clone();
        }
        let mut accepted = Vec::new();
        if self.hs_secret.is_some() {
            accepted.push("HS256".to_owned());
        }
        if self.rs_public_key.is_some() {
            accepted.push("RS256".to_owned());
        }
        accepted
    }

    /// Checks the values the types alone do not.
    ///
    /// # Errors
    /// [`Error::Invalid`] naming the `crypt.jwt` key.
    pub fn validate(&self) -> Result<(), Error> {
        let invalid = |key: &str, reason: &str| Err(Error::Invalid { key: key.into(), reason: reason.into() });
        for alg in &self.algorithms {
            match alg.as_str() {
                "HS256" if self.hs_secret.is_none() => {
                    return invalid("crypt.jwt.algorithms", "HS256 is listed but crypt.jwt.hs_secret is not set");
                }
                "RS256" if self.rs_public_key.is_none() => {
                    return invalid("crypt.jwt.algorithms", "RS256 is listed but crypt.jwt.rs_public_key is not set");
                }
                "HS256" | "RS256" => {}
                _ => return invalid("crypt.jwt.algorithms", "each must be HS256 or RS256"),
            }
        }
        if self.hs_secret.as_ref().is_some_and(|s| s.len() < 32) {
            return invalid("crypt.jwt.hs_secret", "must be at least 32 bytes (RFC 7518 section 3.2)");
        }
        if self.rs_private_key.is_some() != self.rs_public_key.is_some() {
            return invalid("crypt.jwt.rs_public_key", "rs_private_key and rs_public_key are set together");
        }
        if self.issuer.is_empty() {
            return invalid("crypt.jwt.issuer", "must not be empty");
        }
        if self.audience.is_empty() {
            return invalid("crypt.jwt.audience", "must not be empty");
        }
        if self.ttl_s == 0 || self.ttl_s > 86_400 {
            return invalid("crypt.jwt.ttl_s", "must be 1 to 86400");
        }
        if self.leeway_s > 300 {
            return invalid("crypt.jwt.leeway_s", "must be 0 to 300 (clock skew, not a lifetime)");
        }
        Ok(())
    }
}

/// Applies `LEGION_<SECTION>__<KEY>` variables onto the merged settings (variables without a `__` are
/// not settings and are left alone). A value is read as JSON where
/// the key it replaces holds a number, a boolean, an array or an object, and as a plain string where it
/// holds a string or nothing, so that a numeric-looking password stays a string.
fn apply_env(raw: &mut serde_json::Value, vars: &BTreeMap<String, String>) {
    for (name, value) in vars {
        let Some(path) = name.strip_prefix("LEGION_") else { continue };
        let segments: Vec<String> = path.split("__").map(str::to_ascii_lowercase).collect();
        // Every setting lives in a section, so a setting variable has at least two segments; others
        // (`LEGION_API_KEY`, `LEGION_TOKEN`: the CLI's credentials) are not settings.
        if segments.len() < 2 || segments.iter().any(String::is_empty) {
            continue;
        }
        let mut node = &mut *raw;
        for segment in &segments {
            if !node.is_object() {
                *node = serde_json::Value::Object(serde_json::Map::new());
            }
            let Some(map) = node.as_object_mut() else { return };
            node = map.entry(segment.clone()).or_insert(serde_json::Value::Null);
        }
        let typed = !matches!(node, serde_json::Value::String(_) | serde_json::Value::Null);
        *node = if typed {
            serde_json::from_str(value).unwrap_or_else(|_| serde_json::Value::String(value.clone()))
        } else {
            serde_json::Value::String(value.clone())
        };
    }
}

fn merge_dir(mut figment: Figment, dir: &Path) -> Result<Figment, Error> {
    let read_err = |source| Error::Read { path: dir.to_path_buf(), source };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(read_err)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json") && p.is_file())
        .collect();
    files.sort();
    for file in files {
        figment = merge_file(figment, &file)?;
    }
    Ok(figment)
}

fn merge_file(figment: Figment, file: &Path) -> Result<Figment, Error> {
    let text = std::fs::read_to_string(file).map_err(|source| Error::Read { path: file.to_path_buf(), source })?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| Error::Parse(format!("{}: {e}", file.display())))?;
    if !value.is_object() {
        return Err(Error::Parse(format!("{}: must hold a JSON object", file.display())));
    }
    Ok(figment.merge(Json::string(&text)))
}

fn is_reference(s: &str) -> bool {
    s.starts_with("env://") || s.starts_with("vault://")
}

/// Resolves `env://VAR` references and fallback chains in place (see the module docs).
fn resolve_references(
    value: &mut serde_json::Value,
    key: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<(), Error> {
    let child = |k: &str| if key.is_empty() { k.to_owned() } else { format!("{key}.{k}") };
    match value {
        serde_json::Value::String(s) if is_reference(s) => {
            *value = serde_json::Value::String(
                resolve_one(s, key, lookup)?
                    .ok_or_else(|| Error::Reference { key: key.into(), reason: format!("{s} is not set") })?,
            );
        }
        serde_json::Value::Array(items)
            if items.first().and_then(serde_json::Value::as_str).is_some_and(is_reference) =>
        {
            let mut resolved = None;
            for item in items.iter() {
                let Some(s) = item.as_str() else {
                    return Err(Error::Reference {
                        key: key.into(),
                        reason: "a fallback chain holds only strings".into(),
                    });
                };
                if !is_reference(s) {
                    resolved = Some(s.to_owned());
                    break;
                }
                if let Some(v) = resolve_one(s, key, lookup)? {
                    resolved = Some(v);
                    break;
                }
            }
            *value = serde_json::Value::String(resolved.ok_or_else(|| Error::Reference {
                key: key.into(),
                reason: "no reference of the fallback chain resolved".into(),
            })?);
        }
        serde_json::Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                resolve_references(item, &child(&i.to_string()), lookup)?;
            }
        }
        serde_json::Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                resolve_references(v, &child(k), lookup)?;
            }
        }
        _ => {}
    }
    Ok(())
}

fn resolve_one(reference: &str, key: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<Option<String>, Error> {
    if let Some(var) = reference.strip_prefix("env://") {
        if var.is_empty() {
            return Err(Error::Reference { key: key.into(), reason: "env:// needs a variable name".into() });
        }
        return Ok(lookup(var));
    }
    Err(Error::Reference {
        key: key.into(),
        reason: format!(
            "{reference}: vault:// references need a Vault cluster in crypt.vault, which this build does not read yet"
        ),
    })
}

/// The `crypt.jwt` keys shown as they are by [`Settings::redacted`]; every other string under `crypt`
/// is redacted.
pub const PUBLIC_JWT_KEYS: &[&str] = &["algorithms", "issuer", "audience", "ttl_s", "leeway_s"];

/// Replaces every string in `value`, at any depth, with `"[REDACTED]"`.
pub fn redact_strings(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::String(s) => *s = "[REDACTED]".into(),
        serde_json::Value::Array(items) => items.iter_mut().for_each(redact_strings),
        serde_json::Value::Object(map) => map.values_mut().for_each(redact_strings),
        _ => {}
    }
}

/// Words that mark a key as secret-bearing, matched case-insensitively anywhere in the key.
pub const SECRET_KEY_WORDS: &[&str] = &["password", "token", "secret", "key", "credential", "private"];

/// Replaces, at any depth (arrays included), the value of every key that contains one of
/// [`SECRET_KEY_WORDS`] with `"[REDACTED]"`. Credentials inside URLs (`scheme://user:pass@host`) are
/// redacted too.
pub fn redact(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                let lower = k.to_ascii_lowercase();
                if SECRET_KEY_WORDS.iter().any(|w| lower.contains(w)) {
                    *v = serde_json::Value::String("[REDACTED]".into());
                } else {
                    redact(v);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(redact),
        serde_json::Value::String(s) => {
            if let Some(clean) = redact_url(s) {
                *s = clean;
            }
        }
        _ => {}
    }
}

/// Redacts the secrets of a URL: the password of `scheme://user:password@host/…`, and the value of
/// every query parameter whose name holds one of [`SECRET_KEY_WORDS`] (`?password=…`,
/// `?sslkey=…`). `None` when there is nothing to redact.
pub fn redact_url(s: &str) -> Option<String> {
    let (scheme, rest) = s.split_once("://")?;
    let mut changed = false;
    let mut out = match rest.split_once('@') {
        Some((userinfo, host)) if !host.contains('@') && !userinfo.contains('/') => match userinfo.split_once(':') {
            Some((user, _password)) => {
                changed = true;
                format!("{scheme}://{user}:[REDACTED]@{host}")
            }
            None => s.to_owned(),
        },
        _ => s.to_owned(),
    };
    if let Some((base, query)) = out.clone().split_once('?') {
        let (query, fragment) = match query.split_once('#') {
            Some((q, f)) => (q, Some(f)),
            None => (query, None),
        };
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((name, _)) if SECRET_KEY_WORDS.iter().any(|w| name.to_ascii_lowercase().contains(w)) => {
                    changed = true;
                    format!("{name}=[REDACTED]")
                }
                _ => pair.to_owned(),
            })
            .collect();
        out = format!("{base}?{}", pairs.join("&"));
        if let Some(fragment) = fragment {
            out = format!("{out}#{fragment}");
        }
    }
    changed.then_some(out)
}

/// The deepest JSON nesting any Legion API carries: protobuf decoders stop at 100 nested messages, and
/// one JSON level is three (`Value`, `Struct` or `ListValue`, map entry). `limits.max_json_depth` is at
/// most this.
pub const MAX_JSON_DEPTH_CEILING: usize = 32;

/// Largest accepted `limits.max_chain_depth`.
pub const MAX_CHAIN_DEPTH_CEILING: u32 = 1000;

/// Largest accepted `limits.max_fanout`.
pub const MAX_FANOUT_CEILING: u32 = 10_000;

/// Largest accepted `limits.max_relationships`.
pub const MAX_RELATIONSHIPS_CEILING: u32 = 1000;

/// Largest accepted `limits.max_run_tasks`.
pub const MAX_RUN_TASKS_CEILING: u32 = 1_000_000;

/// The nesting depth of a JSON value: 0 for a scalar, 1 for `{"a":1}` or `[1]`, and so on.
pub fn json_depth(value: &serde_json::Value) -> usize {
    match value {
        serde_json::Value::Array(items) => 1 + items.iter().map(json_depth).max().unwrap_or(0),
        serde_json::Value::Object(map) => 1 + map.values().map(json_depth).max().unwrap_or(0),
        _ => 0,
    }
}

#[cfg(test)]
mod tests;
