//! Extensions compiled into the executor: the [`Function`] trait every function implements, the
//! [`Registry`] of loaded functions keyed by `extension.runner.function`, and the manifest sent with
//! `RegisterNode`.
//!
//! Built-in extensions, one module each: `core` (`core.util.{echo,sleep,fail,noop}`), `file`
//! (`file.fs.{read,write}`), `http` (`http.request.{get,post,put,delete}`) and `log` (`log.entry.write`).
//! Which ones load is decided by `executor.extensions` (names; empty means every built-in one) filtered
//! by the role profile `executor.profile`, an entry of `executor.profiles` listing the extensions it
//! allows (`"*"`: every built-in one; defaults `all` = `["*"]`, `core` = `["core", "log"]`), see
//! [`select`]. No code is ever loaded at run time.
//!
//! With the cargo feature `fault-injection`, the module `fault` holds the test-only `fault`
//! extension; only the `legion-executor-faults` binary adds it ([`Registry::with_extensions`]).

pub mod args;
pub mod core;
#[cfg(feature = "fault-injection")]
pub mod fault;
pub mod file;
pub mod http;
pub mod log;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use legion_common::Settings;
use legion_proto::v1;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Every built-in extension, in load order.
pub const BUILTIN: &[&str] = &["core", "file", "http", "log"];

/// The entry of a profile that allows every built-in extension.
pub const ALL_EXTENSIONS: &str = "*";

/// [`BUILTIN`] as text for error messages: `core, file, http, log`.
fn builtin_list() -> String {
    BUILTIN.join(", ")
}

/// Version reported for the built-in extensions: the executor's own.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Why the extensions could not be loaded; each is a settings error (exit 64) naming the key.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `executor.extensions` names an extension that is not compiled in.
    #[error("executor.extensions: unknown extension {name:?} (built-in: {})", builtin_list())]
    UnknownExtension {
        /// The unknown name.
        name: String,
    },
    /// `executor.profile` names no entry of `executor.profiles` (normally caught by
    /// `Settings::validate` already).
    #[error("executor.profile: unknown profile {profile:?} (executor.profiles defines {defined})")]
    UnknownProfile {
        /// The profile.
        profile: String,
        /// The defined profiles, comma-separated.
        defined: String,
    },
    /// The selected profile lists a name that is neither a built-in extension nor `"*"`.
    #[error(
        "executor.profiles.{profile}: unknown extension {name:?} (built-in: {}; \"*\" allows every one)",
        builtin_list()
    )]
    UnknownProfileEntry {
        /// The profile.
        profile: String,
        /// The unknown name.
        name: String,
    },
    /// The profile filtered out every requested extension.
    #[error("executor.extensions: profile {profile:?} allows none of the requested extensions")]
    NothingToLoad {
        /// The profile.
        profile: String,
    },
    /// An entry of `executor.deny_paths` is neither absolute nor `~/…`.
    #[error("executor.deny_paths: {} must be an absolute path or start with ~/", path.display())]
    DenyPath {
        /// The entry.
        path: PathBuf,
    },
    /// An extension could not be built (e.g. the HTTP client).
    #[error("extension {name}: {reason}")]
    Build {
        /// The extension.
        name: &'static str,
        /// What failed.
        reason: String,
    },
}

/// What a running function knows about its attempt. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Context {
    /// The task.
    pub task_id: Uuid,
    /// The attempt (fencing token) returned by `StartTask`.
    pub attempt: u32,
    /// Cancelled when the attempt is aborted (timeout, cancel from the control plane, shutdown).
    /// Long-running functions select on it to stop early.
    pub cancel: CancellationToken,
    /// When the attempt's `timeout_ms` runs out; the pool ends the attempt as a timeout then.
    pub deadline: tokio::time::Instant,
}

impl Context {
    /// A context for `task_id`/`attempt` with `timeout` from now and a fresh cancellation token.
    pub fn new(task_id: Uuid, attempt: u32, timeout: Duration) -> Self {
        Self { task_id, attempt, cancel: CancellationToken::new(), deadline: tokio::time::Instant::now() + timeout }
    }

    /// Time left until [`Context::deadline`]; zero once it passed.
    pub fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(tokio::time::Instant::now())
    }
}

/// How a function call failed. The message is what the task's `error` shows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FunctionError {
    /// The args are invalid; the message names the arg, e.g. `args.url: required string`. Reported as
    /// `FAILURE_KIND_PERMANENT`: invalid args never become valid, so the task is not retried.
    #[error("{0}")]
    InvalidArgs(String),
    /// The function ran and failed. Reported as `FAILURE_KIND_ERROR`: the task is retried while its
    /// retry policy allows.
    #[error("{0}")]
    Failed(String),
    /// The function failed in a way no other attempt can fix (the target refused the request for
    /// good). Reported as `FAILURE_KIND_PERMANENT`: the task ends `failed` at once, whatever attempts
    /// remain.
    #[error("{0}")]
    Permanent(String),
}

/// One function of an extension, e.g. `http.request.get`.
#[async_trait]
pub trait Function: Send + Sync + 'static {
    /// Runs the function with the task's `args` (any JSON; usually an object) and returns its result
    /// as JSON.
    ///
    /// # Errors
    /// [`FunctionError::InvalidArgs`] naming the arg, [`FunctionError::Failed`] (retried), or
    /// [`FunctionError::Permanent`] (not retried).
    async fn call(&self, args: serde_json::Value, ctx: Context) -> Result<serde_json::Value, FunctionError>;
}

/// A function with its name and one-line description, as listed in the manifest.
#[derive(Clone)]
pub struct FunctionSpec {
    /// The function's name within its runner, e.g. `get`.
    pub name: &'static str,
    /// One line for the catalog.
    pub description: &'static str,
    /// The implementation.
    pub function: Arc<dyn Function>,
}

/// A runner and its functions.
#[derive(Clone)]
pub struct RunnerSpec {
    /// The runner's name within its extension, e.g. `request`.
    pub name: &'static str,
    /// Its functions.
    pub functions: Vec<FunctionSpec>,
}

/// An extension: a name, a version and runners.
#[derive(Clone)]
pub struct Extension {
    /// The extension's name, e.g. `http`; also its queue `legion.ext.<name>`.
    pub name: &'static str,
    /// Its version.
    pub version: &'static str,
    /// Its runners.
    pub runners: Vec<RunnerSpec>,
}

impl Extension {
    /// The manifest sent with `RegisterNode`.
    pub fn manifest(&self) -> v1::ExtensionManifest {
        v1::ExtensionManifest {
            name: self.name.to_owned(),
            version: self.version.to_owned(),
            runners: self
                .runners
                .iter()
                .map(|r| v1::Runner {
                    name: r.name.to_owned(),
                    functions: r
                        .functions
                        .iter()
                        .map(|f| v1::Function { name: f.name.to_owned(), description: f.description.to_owned() })
                        .collect(),
                })
                .collect(),
        }
    }
}

/// Whether a profile whose entry in `executor.profiles` is `allowed` allows the built-in extension
/// `name`: it lists `name` or `"*"` ([`ALL_EXTENSIONS`]).
pub fn profile_allows(allowed: &[String], name: &str) -> bool {
    allowed.iter().any(|a| a == ALL_EXTENSIONS || a == name)
}

/// The built-in extensions to load: `requested` (`executor.extensions`; every built-in one when empty)
/// filtered by the profile `profile`, looked up in `profiles` (`executor.profiles`), in [`BUILTIN`]
/// order, without duplicates. Requested extensions the profile does not allow are left out (logged by
/// the caller). Only the selected profile is checked; other profiles may name extensions this build
/// does not have.
///
/// # Errors
/// [`Error::UnknownProfile`], [`Error::UnknownProfileEntry`] (naming `executor.profiles.<profile>`),
/// [`Error::UnknownExtension`], or [`Error::NothingToLoad`] when the result would be empty (also for a
/// profile that lists nothing).
pub fn select(
    requested: &[String],
    profile: &str,
    profiles: &BTreeMap<String, Vec<String>>,
) -> Result<Vec<&'static str>, Error> {
    let Some(allowed) = profiles.get(profile) else {
        let defined: Vec<&str> = profiles.keys().map(String::as_str).collect();
        return Err(Error::UnknownProfile { profile: profile.to_owned(), defined: defined.join(", ") });
    };
    if let Some(unknown) = allowed.iter().find(|a| *a != ALL_EXTENSIONS && !BUILTIN.contains(&a.as_str())) {
        return Err(Error::UnknownProfileEntry { profile: profile.to_owned(), name: unknown.clone() });
    }
    if let Some(unknown) = requested.iter().find(|r| !BUILTIN.contains(&r.as_str())) {
        return Err(Error::UnknownExtension { name: unknown.clone() });
    }
    let selected: Vec<&'static str> = BUILTIN
        .iter()
        .copied()
        .filter(|b| requested.is_empty() || requested.iter().any(|r| r == b))
        .filter(|b| profile_allows(allowed, b))
        .collect();
    if selected.is_empty() {
        return Err(Error::NothingToLoad { profile: profile.to_owned() });
    }
    Ok(selected)
}

/// The loaded extensions and their functions by `extension.runner.function`. Shared as `Arc`.
pub struct Registry {
    extensions: Vec<Extension>,
    functions: HashMap<String, Arc<dyn Function>>,
}

impl Registry {
    /// Loads the built-in extensions chosen by `executor.extensions`, `executor.profile` and
    /// `executor.profiles` (see [`select`]). `limits.max_result_bytes` caps what `http.request.*` reads
    /// of a response body; `logging.format` tells `log.entry.write` whether to escape control
    /// characters (console logs); `file.fs.*` refuses the built-in deny list and `executor.deny_paths`,
    /// with `~` standing for this process's home directory ([`std::env::home_dir`]). Needs the rustls
    /// crypto provider installed (for the HTTP client).
    ///
    /// # Errors
    /// [`Error`]; every variant is a settings error.
    pub fn load(settings: &Settings) -> Result<Self, Error> {
        let (executor, limits) = (&settings.executor, &settings.limits);
        let names = select(&executor.extensions, &executor.profile, &executor.profiles)?;
        for skipped in executor.extensions.iter().filter(|r| !names.contains(&r.as_str())) {
            tracing::warn!(extension = %skipped, profile = %executor.profile, "extension not allowed by profile, not loaded");
        }
        let mut extensions = Vec::with_capacity(names.len());
        for name in names {
            extensions.push(match name {
                "core" => core::extension(),
                "file" => {
                    let home = std::env::home_dir().filter(|h| h.is_absolute()).ok_or_else(|| Error::Build {
                        name: "file",
                        reason: "cannot determine the home directory (set HOME to an absolute path)".into(),
                    })?;
                    let deny =
                        file::DenyList::new(home, &executor.deny_paths).map_err(|path| Error::DenyPath { path })?;
                    file::extension(deny)
                }
                "http" => http::extension(limits.max_result_bytes)
                    .map_err(|e| Error::Build { name: "http", reason: e.to_string() })?,
                _ => log::extension(log::Escaping::for_format(&settings.logging.format)),
            });
        }
        Ok(Self::from_extensions(extensions))
    }

    /// This registry with `extra` extensions loaded after the built-in ones, whatever
    /// `executor.extensions` and the profile say (the `fault` extension of `legion-executor-faults`).
    /// An extra extension named like a loaded one replaces its functions of the same address.
    #[must_use]
    pub fn with_extensions(self, extra: Vec<Extension>) -> Self {
        let mut extensions = self.extensions;
        extensions.extend(extra);
        Self::from_extensions(extensions)
    }

    /// A registry of the given extensions (tests register their own functions this way).
    pub fn from_extensions(extensions: Vec<Extension>) -> Self {
        let mut functions = HashMap::new();
        for ext in &extensions {
            for runner in &ext.runners {
                for f in &runner.functions {
                    functions.insert(format!("{}.{}.{}", ext.name, runner.name, f.name), f.function.clone());
                }
            }
        }
        Self { extensions, functions }
    }

    /// The function addressed `extension.runner.function`, if loaded.
    pub fn get(&self, function: &str) -> Option<Arc<dyn Function>> {
        self.functions.get(function).cloned()
    }

    /// Names of the loaded extensions, in load order.
    pub fn extension_names(&self) -> Vec<String> {
        self.extensions.iter().map(|e| e.name.to_owned()).collect()
    }

    /// Every loaded function's address, sorted.
    pub fn function_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.functions.keys().cloned().collect();
        names.sort();
        names
    }

    /// The manifests sent with `RegisterNode`.
    pub fn manifests(&self) -> Vec<v1::ExtensionManifest> {
        self.extensions.iter().map(Extension::manifest).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    fn profiles(extra: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
        let mut profiles = legion_common::settings::default_profiles();
        for (name, allowed) in extra {
            profiles.insert((*name).to_owned(), names(allowed));
        }
        profiles
    }

    #[test]
    fn profiles_filter_the_builtins() {
        let p = profiles(&[("web", &["http", "log"]), ("files", &["file"]), ("mixed", &["core", "*"])]);
        assert_eq!(select(&[], "all", &p).expect("all"), vec!["core", "file", "http", "log"]);
        assert_eq!(select(&[], "core", &p).expect("core"), vec!["core", "log"]);
        assert_eq!(select(&[], "web", &p).expect("web"), vec!["http", "log"]);
        assert_eq!(select(&[], "files", &p).expect("files"), vec!["file"]);
        assert_eq!(select(&[], "mixed", &p).expect("* wins"), vec!["core", "file", "http", "log"]);
        assert_eq!(select(&names(&["http", "core"]), "all", &p).expect("subset"), vec!["core", "http"]);
        assert_eq!(select(&names(&["http", "log"]), "core", &p).expect("filtered"), vec!["log"]);
        assert_eq!(select(&names(&["file", "core"]), "core", &p).expect("file is not core"), vec!["core"]);
        assert_eq!(select(&names(&["log", "log"]), "all", &p).expect("dedup"), vec!["log"]);
    }

    #[test]
    fn profiles_from_settings_replace_the_defaults_by_name() {
        let p = profiles(&[("core", &["core"])]);
        assert_eq!(select(&[], "core", &p).expect("replaced"), vec!["core"]);
        assert!(profile_allows(&names(&["*"]), "file"));
        assert!(!profile_allows(&names(&["core", "log"]), "file"));
        assert!(!profile_allows(&[], "core"));
    }

    #[test]
    fn unknown_names_and_empty_selections_are_refused() {
        let p = profiles(&[("typo", &["core", "htp"]), ("empty", &[]), ("other", &["gpu"])]);
        let err = select(&names(&["core", "ftp"]), "all", &p).expect_err("unknown");
        assert_eq!(err.to_string(), "executor.extensions: unknown extension \"ftp\" (built-in: core, file, http, log)");
        let err = select(&[], "typo", &p).expect_err("unknown profile entry");
        assert!(matches!(&err, Error::UnknownProfileEntry { profile, name } if profile == "typo" && name == "htp"));
        assert_eq!(
            err.to_string(),
            "executor.profiles.typo: unknown extension \"htp\" (built-in: core, file, http, log; \"*\" allows every one)"
        );
        // Only the selected profile is checked.
        assert_eq!(select(&[], "core", &p).expect("other profiles are not checked"), vec!["core", "log"]);
        assert!(matches!(select(&names(&["http"]), "core", &p), Err(Error::NothingToLoad { .. })));
        assert!(matches!(select(&[], "empty", &p), Err(Error::NothingToLoad { .. })));
        let err = select(&[], "gpu", &p).expect_err("unknown profile");
        assert_eq!(
            err.to_string(),
            "executor.profile: unknown profile \"gpu\" (executor.profiles defines all, core, empty, other, typo)"
        );
    }

    #[test]
    fn loading_follows_the_profile_and_checks_deny_paths() {
        legion_common::install_crypto_provider();
        let mut settings = Settings::default();
        settings.executor.profile = "core".into();
        assert_eq!(Registry::load(&settings).expect("core").extension_names(), vec!["core", "log"]);
        settings.executor.profiles.insert("ops".into(), names(&["file", "bogus"]));
        settings.executor.profile = "ops".into();
        let err = Registry::load(&settings).err().expect("bogus entry");
        assert!(err.to_string().starts_with("executor.profiles.ops: unknown extension \"bogus\""), "{err}");
        settings.executor.profiles.insert("ops".into(), names(&["file"]));
        settings.executor.deny_paths = vec![PathBuf::from("relative/secrets")];
        let err = Registry::load(&settings).err().expect("relative deny path");
        assert_eq!(err.to_string(), "executor.deny_paths: relative/secrets must be an absolute path or start with ~/");
        settings.executor.deny_paths = vec![PathBuf::from("/srv/secrets"), PathBuf::from("~/.kube")];
        let registry = Registry::load(&settings).expect("file only");
        assert_eq!(registry.function_names(), vec!["file.fs.read", "file.fs.write"]);
    }

    #[test]
    fn registry_keys_functions_by_address_and_lists_manifests() {
        legion_common::install_crypto_provider();
        let registry = Registry::load(&Settings::default()).expect("load");
        assert_eq!(registry.extension_names(), vec!["core", "file", "http", "log"]);
        assert_eq!(
            registry.function_names(),
            vec![
                "core.util.echo",
                "core.util.fail",
                "core.util.noop",
                "core.util.sleep",
                "file.fs.read",
                "file.fs.write",
                "http.request.delete",
                "http.request.get",
                "http.request.post",
                "http.request.put",
                "log.entry.write",
            ]
        );
        assert!(registry.get("http.request.get").is_some());
        assert!(registry.get("http.request.patch").is_none());
        let manifests = registry.manifests();
        let http = manifests.iter().find(|m| m.name == "http").expect("http manifest");
        assert_eq!(http.version, VERSION);
        assert_eq!(http.runners.len(), 1);
        assert_eq!(http.runners[0].name, "request");
        assert_eq!(http.runners[0].functions.len(), 4);
        assert!(http.runners[0].functions.iter().all(|f| !f.description.is_empty()));
    }

    #[test]
    fn context_reports_the_time_left() {
        let ctx = Context::new(Uuid::now_v7(), 1, Duration::from_secs(60));
        assert!(ctx.remaining() > Duration::from_secs(59));
        let spent = Context::new(Uuid::now_v7(), 1, Duration::ZERO);
        assert_eq!(spent.remaining(), Duration::ZERO);
    }
}
