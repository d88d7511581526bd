//! The `file` extension, runner `fs`: `file.fs.read` and `file.fs.write` on the executor's own
//! filesystem, refusing paths under a deny list (DESIGN.md section 4). Loaded by the profile `all`,
//! not by `core`.
//!
//! # Paths
//! `args.path` must be absolute, or be `~` or start with `~/`, which stand for the home directory of
//! the executor process (`$HOME`, else the password database). Relative paths and `~user` are refused:
//! a task cannot know the executor's working directory. The path is then made canonical: its longest
//! existing prefix is resolved with [`std::fs::canonicalize`] (symbolic links and `..` followed as the
//! kernel does), and the rest, which does not exist yet and must not hold `..`, is appended. A prefix
//! that is a dangling symbolic link is refused. The functions operate on the canonical path, which
//! their results report.
//!
//! # Deny list
//! [`BUILTIN_DENY`] (`~/.ssh`, `~/.gnupg`, `~/.aws/credentials`) plus each entry of
//! `executor.deny_paths` (absolute or `~/…`). At every call each entry is made canonical like a path
//! (so an entry that is, or becomes, a symbolic link is followed) and is also kept lexically normalized;
//! a path is denied when its canonical form equals or is under either form of an entry. Matching is by
//! whole components: `~/.sshx` is not under `~/.ssh`.
//!
//! # Races
//! The last component is opened with `O_NOFOLLOW` (and `O_NONBLOCK`, so that a FIFO cannot block the
//! call), so a symbolic link swapped in after the check is refused rather than followed. Once open, the
//! file's actual path (`/proc/self/fd/<fd>`, skipped where `/proc` is not mounted) is checked against
//! the deny list again before anything is read, truncated or written, which catches a directory of the
//! path swapped for a link in between; such a write may leave an empty file behind. Not covered: hard
//! links to a denied file (a hard link has no path that leads to the denied directory).
//!
//! # `file.fs.read`
//! Args: `path`, `max_bytes` (default 1 MiB, at most 16 MiB). Only regular files. Result
//! `{"path": canonical path, "size": bytes, "content": text}` when the bytes are UTF-8 without a NUL
//! character (PostgreSQL's JSONB cannot store `\u0000`), else `{"path", "size", "content_base64"}`
//! (standard base64 with padding, 4/3 of the size; the whole result must also fit
//! `limits.max_result_bytes`). A file larger than `max_bytes` fails, naming `args.max_bytes`.
//!
//! # `file.fs.write`
//! Args: `path`; exactly one of `content` (text) and `content_base64` (standard base64); `append`
//! (default false: the file is truncated); `create_dirs` (default false: the parent directory must
//! exist); `mode` (octal string `000` to `777`, e.g. `"0640"`, set on the file whether new or not;
//! default: new files get `0666` less the umask, existing ones keep theirs). Only regular files. Result
//! `{"path": canonical path, "bytes_written": n}`.
//!
//! # Errors
//! Bad args and refusals (relative or denied path, `..` after a missing part, a dangling link, a path
//! that is not a regular file) are [`FunctionError::InvalidArgs`] (`FAILURE_KIND_PERMANENT`): retrying
//! cannot help, so the task is not retried. I/O errors (missing file, permissions, a file over `max_bytes`) are
//! [`FunctionError::Failed`]. Both name the arg: `args.path: ~/.ssh/id_rsa (resolves to
//! /home/u/.ssh/id_rsa) is denied (under ~/.ssh)`.

use std::fs::{File, OpenOptions, Permissions};
use std::io::{self, Read as _, Write as _};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Value, json};

use super::args::Args;
use super::{Context, Extension, Function, FunctionError, FunctionSpec, RunnerSpec, VERSION};

/// The deny list every executor applies, `~` being its home directory.
pub const BUILTIN_DENY: &[&str] = &["~/.ssh", "~/.gnupg", "~/.aws/credentials"];

/// Default of `args.max_bytes` of `file.fs.read`: 1 MiB.
pub const DEFAULT_MAX_BYTES: u64 = 1024 * 1024;

/// Largest `args.max_bytes` of `file.fs.read`: 16 MiB.
pub const MAX_BYTES_CAP: u64 = 16 * 1024 * 1024;

/// The `file` extension, refusing the paths of `deny`.
pub fn extension(deny: DenyList) -> Extension {
    let deny = Arc::new(deny);
    Extension {
        name: "file",
        version: VERSION,
        runners: vec![RunnerSpec {
            name: "fs",
            functions: vec![
                FunctionSpec {
                    name: "read",
                    description: "reads the file args.path (at most args.max_bytes, default 1 MiB) as text or base64",
                    function: Arc::new(Read { deny: deny.clone() }),
                },
                FunctionSpec {
                    name: "write",
                    description: "writes args.content or args.content_base64 to the file args.path",
                    function: Arc::new(Write { deny }),
                },
            ],
        }],
    }
}

/// One entry of the deny list.
#[derive(Debug, Clone, PartialEq, Eq)]
struct DenyEntry {
    /// As configured, for messages: `~/.ssh`.
    shown: String,
    /// Absolute and lexically normalized.
    path: PathBuf,
}

/// The paths `file.fs.*` refuses, and the home directory `~` stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DenyList {
    home: PathBuf,
    entries: Vec<DenyEntry>,
}

/// Why a path could not be made canonical.
#[derive(Debug)]
enum Unresolved {
    /// `..` follows a component that does not exist.
    DotDotAfterMissing,
    /// This prefix is a symbolic link to nothing.
    DanglingLink(PathBuf),
    /// Resolving this prefix failed.
    Io(PathBuf, io::Error),
}

/// `path` with `.` dropped and `..` removing the component before it, without touching the filesystem
/// (`/..` stays `/`).
pub fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// The canonical form of the absolute `path`: its longest existing prefix through
/// [`std::fs::canonicalize`], then the missing components, which must be plain names.
fn canonicalize_lenient(path: &Path) -> Result<PathBuf, Unresolved> {
    let components: Vec<Component<'_>> = path.components().collect();
    for split in (1..=components.len()).rev() {
        let prefix: PathBuf = components[..split].iter().collect();
        match std::fs::canonicalize(&prefix) {
            Ok(mut canonical) => {
                for component in &components[split..] {
                    let Component::Normal(name) = component else { return Err(Unresolved::DotDotAfterMissing) };
                    canonical.push(name);
                }
                return Ok(canonical);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if std::fs::symlink_metadata(&prefix).is_ok() {
                    return Err(Unresolved::DanglingLink(prefix));
                }
            }
            Err(e) => return Err(Unresolved::Io(prefix, e)),
        }
    }
    Err(Unresolved::Io(path.to_owned(), io::ErrorKind::NotFound.into()))
}

fn rejected(message: String) -> FunctionError {
    FunctionError::InvalidArgs(message)
}

impl DenyList {
    /// The deny list [`BUILTIN_DENY`] plus `extra` (`executor.deny_paths`), with `~` standing for
    /// `home`, which must be absolute.
    ///
    /// # Errors
    /// The first entry of `extra` that is neither absolute nor `~`/`~/…`.
    pub fn new(home: PathBuf, extra: &[PathBuf]) -> Result<Self, PathBuf> {
        let mut list = Self { home, entries: Vec::new() };
        let builtin = BUILTIN_DENY.iter().map(PathBuf::from);
        for entry in builtin.chain(extra.iter().cloned()) {
            let path = list.expand(&entry).ok_or_else(|| entry.clone())?;
            list.entries.push(DenyEntry { shown: entry.display().to_string(), path: normalize(&path) });
        }
        Ok(list)
    }

    /// `path` with a leading `~` replaced by the home directory; `None` when the result is not
    /// absolute.
    fn expand(&self, path: &Path) -> Option<PathBuf> {
        let expanded = match path.strip_prefix("~") {
            Ok(rest) if rest.as_os_str().is_empty() => self.home.clone(),
            Ok(rest) => self.home.join(rest),
            Err(_) => path.to_owned(),
        };
        expanded.is_absolute().then_some(expanded)
    }

    /// The entry that denies the canonical path `canonical`, if any.
    fn denied_by(&self, canonical: &Path) -> Option<&DenyEntry> {
        self.entries.iter().find(|entry| {
            canonical.starts_with(&entry.path)
                || canonicalize_lenient(&entry.path).is_ok_and(|resolved| canonical.starts_with(resolved))
        })
    }

    /// Refuses `canonical` (what `raw`, the arg, resolved to) when it is denied.
    fn check(&self, raw: &str, canonical: &Path) -> Result<(), FunctionError> {
        let Some(entry) = self.denied_by(canonical) else { return Ok(()) };
        let resolved =
            if Path::new(raw) == canonical { String::new() } else { format!(" (resolves to {})", canonical.display()) };
        Err(rejected(format!("args.path: {raw}{resolved} is denied (under {})", entry.shown)))
    }

    /// The canonical form of the arg `raw` (see the module docs), refused when denied.
    ///
    /// # Errors
    /// [`FunctionError::InvalidArgs`] for a relative, malformed or denied path, `..` after a missing
    /// component, or a dangling symbolic link; [`FunctionError::Failed`] when resolving failed (e.g.
    /// permission denied, a symbolic link loop).
    pub fn resolve(&self, raw: &str) -> Result<PathBuf, FunctionError> {
        if raw.is_empty() || raw.contains('\0') {
            return Err(rejected("args.path: must be a non-empty path without NUL characters".into()));
        }
        let path = self
            .expand(Path::new(raw))
            .ok_or_else(|| rejected(format!("args.path: {raw} must be an absolute path or start with ~/")))?;
        let canonical = canonicalize_lenient(&path).map_err(|e| match e {
            Unresolved::DotDotAfterMissing => {
                rejected(format!("args.path: {raw} has .. after a part that does not exist"))
            }
            Unresolved::DanglingLink(link) => {
                rejected(format!("args.path: {raw} goes through {}, a symbolic link to nothing", link.display()))
            }
            Unresolved::Io(prefix, e) => {
                FunctionError::Failed(format!("args.path: cannot resolve {}: {e}", prefix.display()))
            }
        })?;
        self.check(raw, &canonical)?;
        Ok(canonical)
    }

    /// Checks the actual path of the open `file` (for `raw`) against the deny list, where `/proc` tells
    /// it.
    fn check_open(&self, raw: &str, file: &File) -> Result<(), FunctionError> {
        match std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())) {
            Ok(actual) => self.check(raw, &actual),
            Err(_) => Ok(()),
        }
    }
}

/// `file.fs.read`.
#[derive(Debug, Clone)]
pub struct Read {
    deny: Arc<DenyList>,
}

/// `file.fs.write`.
#[derive(Debug, Clone)]
pub struct Write {
    deny: Arc<DenyList>,
}

/// The validated args of `file.fs.write`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteArgs {
    /// `args.path` as given.
    pub path: String,
    /// The bytes to write.
    pub content: Vec<u8>,
    /// Append instead of truncating.
    pub append: bool,
    /// Create missing parent directories.
    pub create_dirs: bool,
    /// Permission bits to set, at most `0o777`.
    pub mode: Option<u32>,
}

/// Parses `args.mode`: 1 to 4 octal digits, at most `777`.
fn parse_mode(mode: &str) -> Result<u32, FunctionError> {
    let invalid = || rejected(format!("args.mode: {mode:?} is not an octal string from 000 to 777, e.g. \"0640\""));
    if mode.is_empty() || mode.len() > 4 || !mode.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return Err(invalid());
    }
    u32::from_str_radix(mode, 8).ok().filter(|m| *m <= 0o777).ok_or_else(invalid)
}

/// Validates the args of `file.fs.write` (see the module docs).
///
/// # Errors
/// [`FunctionError::InvalidArgs`] naming the arg.
pub fn parse_write_args(args: &Value) -> Result<WriteArgs, FunctionError> {
    let a = Args::new(args)?;
    let path = a.required_str("path")?.to_owned();
    let content = match (a.optional_str("content")?, a.optional_str("content_base64")?) {
        (Some(text), None) => text.as_bytes().to_vec(),
        (None, Some(encoded)) => BASE64
            .decode(encoded)
            .map_err(|e| rejected(format!("args.content_base64: not valid standard base64: {e}")))?,
        _ => return Err(rejected("args.content: give exactly one of content and content_base64".into())),
    };
    let mode = a.optional_str("mode")?.map(parse_mode).transpose()?;
    Ok(WriteArgs {
        path,
        content,
        append: a.optional_bool("append")?.unwrap_or(false),
        create_dirs: a.optional_bool("create_dirs")?.unwrap_or(false),
        mode,
    })
}

/// Opens `canonical` (resolved from the arg `raw`) without following a link in its last component,
/// then checks that it is a regular file whose actual path is not denied.
fn open_checked(deny: &DenyList, raw: &str, canonical: &Path, options: &OpenOptions) -> Result<File, FunctionError> {
    let file = options.open(canonical).map_err(|e| {
        if e.raw_os_error() == Some(libc::ELOOP) {
            rejected(format!(
                "args.path: {} is a symbolic link (it changed after it was resolved)",
                canonical.display()
            ))
        } else {
            FunctionError::Failed(format!("args.path: cannot open {}: {e}", canonical.display()))
        }
    })?;
    let metadata =
        file.metadata().map_err(|e| FunctionError::Failed(format!("args.path: {}: {e}", canonical.display())))?;
    if !metadata.is_file() {
        return Err(rejected(format!("args.path: {} is not a regular file", canonical.display())));
    }
    deny.check_open(raw, &file)?;
    Ok(file)
}

/// Reads the canonical path `canonical` (resolved from `raw`), at most `max_bytes` bytes.
fn read_resolved(deny: &DenyList, raw: &str, canonical: &Path, max_bytes: u64) -> Result<Value, FunctionError> {
    let mut options = OpenOptions::new();
    options.read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK);
    let file = open_checked(deny, raw, canonical, &options)?;
    let too_large = |size: u64| {
        FunctionError::Failed(format!(
            "args.max_bytes: {} is {size} bytes or more, over args.max_bytes ({max_bytes})",
            canonical.display()
        ))
    };
    let size = file.metadata().map(|m| m.len()).unwrap_or_default();
    if size > max_bytes {
        return Err(too_large(size));
    }
    let mut bytes = Vec::new();
    // One byte more than allowed tells a file that grew (or a /proc file reporting size 0) apart.
    file.take(max_bytes.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| FunctionError::Failed(format!("args.path: cannot read {}: {e}", canonical.display())))?;
    let size = bytes.len() as u64;
    if size > max_bytes {
        return Err(too_large(size));
    }
    let path = canonical.to_string_lossy();
    Ok(match String::from_utf8(bytes) {
        Ok(text) if !text.contains('\0') => json!({"path": path, "size": size, "content": text}),
        Ok(text) => json!({"path": path, "size": size, "content_base64": BASE64.encode(text.as_bytes())}),
        Err(e) => json!({"path": path, "size": size, "content_base64": BASE64.encode(e.as_bytes())}),
    })
}

/// Writes `args` to the canonical path `canonical` (resolved from `args.path`).
fn write_resolved(deny: &DenyList, canonical: &Path, args: &WriteArgs) -> Result<Value, FunctionError> {
    let raw = args.path.as_str();
    let failed =
        |what: &str, e: io::Error| FunctionError::Failed(format!("args.path: {what} {}: {e}", canonical.display()));
    let parent = canonical.parent().ok_or_else(|| rejected(format!("args.path: {raw} is not a file path")))?;
    if args.create_dirs {
        std::fs::create_dir_all(parent).map_err(|e| failed("cannot create the directories of", e))?;
    } else if !parent.is_dir() {
        return Err(FunctionError::Failed(format!(
            "args.path: the directory {} does not exist (set args.create_dirs to create it)",
            parent.display()
        )));
    }
    let mut options = OpenOptions::new();
    options
        .write(true)
        .create(true)
        .append(args.append)
        .mode(args.mode.unwrap_or(0o666))
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK);
    // Not truncated on open: only once the file is known to be allowed.
    let mut file = open_checked(deny, raw, canonical, &options)?;
    if let Some(mode) = args.mode {
        file.set_permissions(Permissions::from_mode(mode)).map_err(|e| failed("cannot set the mode of", e))?;
    }
    if !args.append {
        file.set_len(0).map_err(|e| failed("cannot truncate", e))?;
    }
    file.write_all(&args.content).map_err(|e| failed("cannot write", e))?;
    file.flush().map_err(|e| failed("cannot write", e))?;
    Ok(json!({"path": canonical.to_string_lossy(), "bytes_written": args.content.len()}))
}

/// Runs blocking filesystem work off the async threads; a panic in it is resumed, so that the pool
/// reports it as one.
async fn blocking<T, F>(work: F) -> Result<T, FunctionError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, FunctionError> + Send + 'static,
{
    match tokio::task::spawn_blocking(work).await {
        Ok(outcome) => outcome,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(FunctionError::Failed(format!("file operation did not finish: {e}"))),
    }
}

#[async_trait]
impl Function for Read {
    async fn call(&self, args: Value, _ctx: Context) -> Result<Value, FunctionError> {
        let a = Args::new(&args)?;
        let raw = a.required_str("path")?.to_owned();
        let max_bytes = a.optional_u64("max_bytes")?.unwrap_or(DEFAULT_MAX_BYTES);
        if max_bytes > MAX_BYTES_CAP {
            return Err(rejected(format!("args.max_bytes: must be at most {MAX_BYTES_CAP} (16 MiB)")));
        }
        let deny = self.deny.clone();
        blocking(move || {
            let canonical = deny.resolve(&raw)?;
            read_resolved(&deny, &raw, &canonical, max_bytes)
        })
        .await
    }
}

#[async_trait]
impl Function for Write {
    async fn call(&self, args: Value, _ctx: Context) -> Result<Value, FunctionError> {
        let args = parse_write_args(&args)?;
        let deny = self.deny.clone();
        blocking(move || {
            let canonical = deny.resolve(&args.path)?;
            write_resolved(&deny, &canonical, &args)
        })
        .await
    }
}

#[cfg(test)]
#[path = "file_tests.rs"]
mod tests;
