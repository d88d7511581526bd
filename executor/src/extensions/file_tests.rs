//! Tests of `file.fs.*` on the real filesystem: each test makes a fake home directory (passed in,
//! never set in the environment) and a work directory in its own temporary directory.

use std::os::unix::fs::symlink;
use std::time::Duration;

use uuid::Uuid;

use super::*;

/// A fake home with `.ssh/id_rsa`, `.aws/credentials`, `.aws/config` and `.sshx/notes`, and a work
/// directory beside it.
struct Fixture {
    _dir: tempfile::TempDir,
    home: PathBuf,
    work: PathBuf,
    read: Read,
    write: Write,
}

impl Fixture {
    fn new(extra: &[PathBuf]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = std::fs::canonicalize(dir.path()).expect("canonical tempdir");
        let (home, work) = (root.join("home"), root.join("work"));
        for d in [home.join(".ssh"), home.join(".aws"), home.join(".sshx"), work.clone()] {
            std::fs::create_dir_all(d).expect("mkdir");
        }
        std::fs::write(home.join(".ssh/id_rsa"), "PRIVATE KEY").expect("key");
        std::fs::write(home.join(".aws/credentials"), "aws_secret_access_key=x").expect("credentials");
        std::fs::write(home.join(".aws/config"), "[default]").expect("config");
        std::fs::write(home.join(".sshx/notes"), "not a secret").expect("notes");
        let deny = Arc::new(DenyList::new(home.clone(), extra).expect("deny list"));
        Self { _dir: dir, home, work, read: Read { deny: deny.clone() }, write: Write { deny } }
    }

    fn deny(&self) -> &DenyList {
        &self.read.deny
    }

    async fn read(&self, args: Value) -> Result<Value, FunctionError> {
        self.read.call(args, ctx()).await
    }

    async fn write(&self, args: Value) -> Result<Value, FunctionError> {
        self.write.call(args, ctx()).await
    }

    async fn read_path(&self, path: &Path) -> Result<Value, FunctionError> {
        self.read(json!({"path": path})).await
    }

    async fn write_path(&self, path: &Path, content: &str) -> Result<Value, FunctionError> {
        self.write(json!({"path": path, "content": content, "create_dirs": true})).await
    }
}

fn ctx() -> Context {
    Context::new(Uuid::now_v7(), 1, Duration::from_secs(30))
}

/// The message of a refusal that names `under` as the deny entry.
#[track_caller]
fn assert_denied(outcome: Result<Value, FunctionError>, under: &str) {
    match outcome {
        Err(FunctionError::InvalidArgs(message)) => {
            assert!(message.starts_with("args.path: "), "{message}");
            assert!(message.ends_with(&format!(" is denied (under {under})")), "{message}");
        }
        other => panic!("expected a refusal under {under}, got {other:?}"),
    }
}

#[tokio::test]
async fn writes_and_reads_text() {
    let f = Fixture::new(&[]);
    let path = f.work.join("notes.txt");
    let out = f.write(json!({"path": path, "content": "hello\n"})).await.expect("write");
    assert_eq!(out, json!({"path": path, "bytes_written": 6}));
    let out = f.write(json!({"path": path, "content": "again\n", "append": true})).await.expect("append");
    assert_eq!(out["bytes_written"], 6);
    assert_eq!(f.read_path(&path).await.expect("read"), json!({"path": path, "size": 12, "content": "hello\nagain\n"}));
    f.write(json!({"path": path, "content": "short"})).await.expect("truncates");
    assert_eq!(f.read_path(&path).await.expect("read")["content"], "short");
    assert_eq!(f.read(json!({"path": f.home.join(".aws/config")})).await.expect("config")["content"], "[default]");
}

#[tokio::test]
async fn tilde_paths_are_expanded_and_relative_paths_refused() {
    let f = Fixture::new(&[]);
    let out = f.write(json!({"path": "~/docs/today.txt", "content": "x", "create_dirs": true})).await.expect("write");
    assert_eq!(out["path"], json!(f.home.join("docs/today.txt")));
    assert_eq!(std::fs::read_to_string(f.home.join("docs/today.txt")).expect("written"), "x");
    for raw in ["notes.txt", "./notes.txt", "~root/.bashrc", ""] {
        let err = f.read(json!({"path": raw})).await.expect_err(raw);
        let FunctionError::InvalidArgs(message) = err else { panic!("{raw}: expected a refusal") };
        assert!(message.starts_with("args.path: "), "{message}");
    }
    assert_eq!(
        f.read(json!({"path": "notes.txt"})).await,
        Err(FunctionError::InvalidArgs("args.path: notes.txt must be an absolute path or start with ~/".into()))
    );
}

#[tokio::test]
async fn the_literal_ssh_key_is_denied() {
    let f = Fixture::new(&[]);
    let expected = format!(
        "args.path: ~/.ssh/id_rsa (resolves to {}) is denied (under ~/.ssh)",
        f.home.join(".ssh/id_rsa").display()
    );
    assert_eq!(f.read(json!({"path": "~/.ssh/id_rsa"})).await, Err(FunctionError::InvalidArgs(expected)));
    assert_denied(f.read_path(&f.home.join(".ssh/id_rsa")).await, "~/.ssh");
    assert_denied(f.read_path(&f.home.join(".ssh")).await, "~/.ssh");
    assert_denied(f.write_path(&f.home.join(".ssh/id_rsa"), "overwritten").await, "~/.ssh");
    assert_eq!(std::fs::read_to_string(f.home.join(".ssh/id_rsa")).expect("key"), "PRIVATE KEY");
}

#[tokio::test]
async fn aws_credentials_are_denied_but_not_their_siblings() {
    let f = Fixture::new(&[]);
    assert_denied(f.read(json!({"path": "~/.aws/credentials"})).await, "~/.aws/credentials");
    assert_denied(f.read(json!({"path": "~/.aws/./credentials"})).await, "~/.aws/credentials");
    assert_denied(f.write_path(&f.home.join(".aws/credentials"), "x").await, "~/.aws/credentials");
    assert!(f.read(json!({"path": "~/.aws/config"})).await.is_ok());
    f.write_path(&f.home.join(".aws/credentials.bak"), "x").await.expect("a sibling file is allowed");
}

#[tokio::test]
async fn a_sibling_of_a_denied_directory_is_not_denied() {
    let f = Fixture::new(&[]);
    assert_eq!(f.read(json!({"path": "~/.sshx/notes"})).await.expect("read")["content"], "not a secret");
    f.write_path(&f.home.join(".sshx/more"), "fine").await.expect("write");
    f.write_path(&f.home.join(".ssh_old/key"), "fine").await.expect("write");
}

#[tokio::test]
async fn dot_dot_cannot_escape_into_a_denied_directory() {
    let f = Fixture::new(&[]);
    std::fs::create_dir(f.work.join("sub")).expect("mkdir");
    let escape = format!("{}/sub/../../home/.ssh/id_rsa", f.work.display());
    assert_denied(f.read(json!({"path": escape})).await, "~/.ssh");
    assert_denied(f.read(json!({"path": "~/.sshx/../.ssh/id_rsa"})).await, "~/.ssh");
    assert_denied(f.write(json!({"path": "~/.sshx/../.ssh/authorized_keys", "content": "k"})).await, "~/.ssh");
    assert!(!f.home.join(".ssh/authorized_keys").exists());
    // `..` after a part that does not exist cannot be resolved and is refused.
    let err = f.write(json!({"path": "~/missing/../.ssh/x", "content": "k", "create_dirs": true})).await;
    assert!(matches!(&err, Err(FunctionError::InvalidArgs(m)) if m.contains("has .. after a part")), "{err:?}");
}

#[tokio::test]
async fn a_file_symlink_into_a_denied_directory_is_denied() {
    let f = Fixture::new(&[]);
    let link = f.work.join("innocent.txt");
    symlink(f.home.join(".ssh/id_rsa"), &link).expect("symlink");
    assert_denied(f.read_path(&link).await, "~/.ssh");
    assert_denied(f.write_path(&link, "overwritten").await, "~/.ssh");
    assert_eq!(std::fs::read_to_string(f.home.join(".ssh/id_rsa")).expect("key"), "PRIVATE KEY");
    // A link to a denied file that does not exist yet dangles: refused too.
    let dangling = f.work.join("dangling");
    symlink(f.home.join(".ssh/authorized_keys"), &dangling).expect("symlink");
    let err = f.write_path(&dangling, "ssh-ed25519 AAAA").await;
    assert!(matches!(&err, Err(FunctionError::InvalidArgs(m)) if m.contains("a symbolic link to nothing")), "{err:?}");
    assert!(!f.home.join(".ssh/authorized_keys").exists());
}

#[tokio::test]
async fn a_directory_symlink_into_a_denied_directory_is_denied() {
    let f = Fixture::new(&[]);
    let link = f.work.join("keys");
    symlink(f.home.join(".ssh"), &link).expect("symlink");
    assert_denied(f.read_path(&link.join("id_rsa")).await, "~/.ssh");
    assert_denied(f.write_path(&link.join("new_key"), "k").await, "~/.ssh");
    assert_denied(f.write_path(&link.join("deeper/new_key"), "k").await, "~/.ssh");
    assert!(!f.home.join(".ssh/new_key").exists() && !f.home.join(".ssh/deeper").exists());
    // The home itself reached through a link.
    let home_link = f.work.join("home");
    symlink(&f.home, &home_link).expect("symlink");
    assert_denied(f.read_path(&home_link.join(".aws/credentials")).await, "~/.aws/credentials");
}

#[tokio::test]
async fn new_files_under_denied_directories_are_denied() {
    let f = Fixture::new(&[]);
    assert_denied(f.write(json!({"path": "~/.ssh/authorized_keys", "content": "k"})).await, "~/.ssh");
    // `~/.gnupg` does not exist: create_dirs must not create it.
    assert_denied(f.write(json!({"path": "~/.gnupg/sub/key", "content": "k", "create_dirs": true})).await, "~/.gnupg");
    assert!(!f.home.join(".gnupg").exists());
    assert!(!f.home.join(".ssh/authorized_keys").exists());
}

#[tokio::test]
async fn deny_entries_from_settings_are_applied() {
    let dir = tempfile::tempdir().expect("tempdir");
    let secrets = std::fs::canonicalize(dir.path()).expect("canonical").join("secrets");
    std::fs::create_dir(&secrets).expect("mkdir");
    std::fs::write(secrets.join("db.txt"), "password").expect("secret");
    let f = Fixture::new(&[secrets.clone(), PathBuf::from("~/.kube"), PathBuf::from("/nonexistent/x/../deny")]);
    let shown = secrets.display().to_string();
    assert_denied(f.read_path(&secrets.join("db.txt")).await, &shown);
    assert_denied(f.write_path(&secrets.join("new.txt"), "x").await, &shown);
    assert!(!secrets.join("new.txt").exists());
    assert_denied(f.write(json!({"path": "~/.kube/config", "content": "x", "create_dirs": true})).await, "~/.kube");
    assert!(!f.home.join(".kube").exists());
    assert_denied(f.write_path(Path::new("/nonexistent/deny/file"), "x").await, "/nonexistent/x/../deny");
    // A deny entry that is a symbolic link is followed: its target is denied too.
    let link = f.work.join("secrets-link");
    symlink(&secrets, &link).expect("symlink");
    let g = Fixture::new(&[link]);
    assert_denied(g.read_path(&secrets.join("db.txt")).await, &f.work.join("secrets-link").display().to_string());
    assert!(DenyList::new(f.home.clone(), &[PathBuf::from("relative")]).is_err());
}

#[tokio::test]
async fn a_symlinked_deny_entry_created_later_is_followed() {
    let f = Fixture::new(&[]);
    let real = f.work.join("gnupg-real");
    std::fs::create_dir(&real).expect("mkdir");
    std::fs::write(real.join("secring.gpg"), "secret").expect("ring");
    f.read_path(&real.join("secring.gpg")).await.expect("allowed while ~/.gnupg does not exist");
    symlink(&real, f.home.join(".gnupg")).expect("symlink");
    assert_denied(f.read_path(&real.join("secring.gpg")).await, "~/.gnupg");
}

#[tokio::test]
async fn binary_content_round_trips_as_base64() {
    let f = Fixture::new(&[]);
    let bytes: Vec<u8> = (0..=255).collect();
    let path = f.work.join("blob.bin");
    let out = f.write(json!({"path": path, "content_base64": BASE64.encode(&bytes)})).await.expect("write");
    assert_eq!(out["bytes_written"], 256);
    assert_eq!(std::fs::read(&path).expect("bytes"), bytes);
    let out = f.read_path(&path).await.expect("read");
    assert_eq!(out, json!({"path": path, "size": 256, "content_base64": BASE64.encode(&bytes)}));
    // UTF-8 with a NUL character is returned as base64 too (JSONB cannot store it).
    std::fs::write(&path, "a\0b").expect("nul");
    assert_eq!(f.read_path(&path).await.expect("read")["content_base64"], BASE64.encode("a\0b"));
}

#[tokio::test]
async fn max_bytes_bounds_reads() {
    let f = Fixture::new(&[]);
    let path = f.work.join("ten.txt");
    std::fs::write(&path, "0123456789").expect("file");
    assert_eq!(f.read(json!({"path": path, "max_bytes": 10})).await.expect("fits")["size"], 10);
    let err = f.read(json!({"path": path, "max_bytes": 9})).await.expect_err("too large");
    let FunctionError::Failed(message) = err else { panic!("expected a failure") };
    assert!(message.starts_with("args.max_bytes: ") && message.contains("over args.max_bytes (9)"), "{message}");
    assert_eq!(
        f.read(json!({"path": path, "max_bytes": MAX_BYTES_CAP + 1})).await,
        Err(FunctionError::InvalidArgs("args.max_bytes: must be at most 16777216 (16 MiB)".into()))
    );
    let big = f.work.join("big.bin");
    std::fs::write(&big, vec![b'x'; usize::try_from(DEFAULT_MAX_BYTES).expect("fits") + 1]).expect("big");
    assert!(matches!(f.read_path(&big).await, Err(FunctionError::Failed(m)) if m.contains("(1048576)")));
}

#[tokio::test]
async fn write_args_are_validated() {
    let f = Fixture::new(&[]);
    let path = f.work.join("x");
    let cases = [
        (json!({"path": path}), "args.content: give exactly one of content and content_base64"),
        (
            json!({"path": path, "content": "a", "content_base64": "YQ=="}),
            "args.content: give exactly one of content and content_base64",
        ),
        (json!({"path": path, "content_base64": "not base64!"}), "args.content_base64: not valid standard base64"),
        (json!({"path": path, "content": "a", "mode": "0999"}), "args.mode: \"0999\" is not an octal string"),
        (json!({"path": path, "content": "a", "mode": "4755"}), "args.mode: \"4755\" is not an octal string"),
        (json!({"path": path, "content": "a", "mode": 644}), "args.mode: must be a string"),
        (json!({"path": path, "content": "a", "append": "yes"}), "args.append: must be a boolean"),
        (json!({"content": "a"}), "args.path: required string"),
    ];
    for (args, expected) in cases {
        match f.write(args.clone()).await {
            Err(FunctionError::InvalidArgs(m)) => assert!(m.starts_with(expected), "{args}: {m}"),
            other => panic!("{args}: expected a refusal, got {other:?}"),
        }
    }
    assert!(!path.exists());
}

#[tokio::test]
async fn mode_create_dirs_and_non_regular_files() {
    let f = Fixture::new(&[]);
    let path = f.work.join("a/b/secret.conf");
    let err = f.write(json!({"path": path, "content": "x"})).await.expect_err("no parent");
    assert!(matches!(&err, FunctionError::Failed(m) if m.contains("set args.create_dirs")), "{err:?}");
    f.write(json!({"path": path, "content": "x", "create_dirs": true, "mode": "0640"})).await.expect("write");
    let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode, 0o640);
    f.write(json!({"path": path, "content": "y", "mode": "600"})).await.expect("existing file");
    assert_eq!(std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777, 0o600);
    let err = f.read_path(&f.work).await.expect_err("a directory");
    assert!(matches!(&err, FunctionError::InvalidArgs(m) if m.ends_with("is not a regular file")), "{err:?}");
    let err = f.read_path(&f.work.join("missing")).await.expect_err("missing");
    assert!(matches!(&err, FunctionError::Failed(m) if m.starts_with("args.path: cannot open")), "{err:?}");
}

/// A symbolic link swapped in between the check and the open is not followed.
#[test]
fn a_link_swapped_in_after_the_check_is_not_followed() {
    let f = Fixture::new(&[]);
    let path = f.work.join("report.txt");
    std::fs::write(&path, "report").expect("file");
    let raw = path.to_string_lossy().into_owned();
    let canonical = f.deny().resolve(&raw).expect("allowed");
    std::fs::remove_file(&path).expect("rm");
    symlink(f.home.join(".ssh/id_rsa"), &path).expect("swap");
    let err = read_resolved(f.deny(), &raw, &canonical, DEFAULT_MAX_BYTES).expect_err("refused");
    assert!(matches!(&err, FunctionError::InvalidArgs(m) if m.contains("is a symbolic link")), "{err:?}");
    let args = WriteArgs { path: raw, content: b"x".to_vec(), append: false, create_dirs: false, mode: None };
    assert!(matches!(write_resolved(f.deny(), &canonical, &args), Err(FunctionError::InvalidArgs(_))));
    assert_eq!(std::fs::read_to_string(f.home.join(".ssh/id_rsa")).expect("key"), "PRIVATE KEY");
}

/// A directory of the path swapped for a link after the check is caught once the file is open.
#[test]
fn a_directory_swapped_after_the_check_is_caught_after_opening() {
    let f = Fixture::new(&[]);
    let dir = f.work.join("d");
    std::fs::create_dir(&dir).expect("mkdir");
    std::fs::write(dir.join("id_rsa"), "decoy").expect("decoy");
    let raw = dir.join("id_rsa").to_string_lossy().into_owned();
    let canonical = f.deny().resolve(&raw).expect("allowed");
    std::fs::remove_dir_all(&dir).expect("rm");
    symlink(f.home.join(".ssh"), &dir).expect("swap");
    assert_denied(read_resolved(f.deny(), &raw, &canonical, DEFAULT_MAX_BYTES), "~/.ssh");
    let args = WriteArgs { path: raw, content: b"x".to_vec(), append: false, create_dirs: false, mode: None };
    assert_denied(write_resolved(f.deny(), &canonical, &args), "~/.ssh");
    assert_eq!(std::fs::read_to_string(f.home.join(".ssh/id_rsa")).expect("key"), "PRIVATE KEY");
}

#[test]
fn normalize_is_lexical() {
    assert_eq!(normalize(Path::new("/a/./b/../c")), PathBuf::from("/a/c"));
    assert_eq!(normalize(Path::new("/../x")), PathBuf::from("/x"));
    assert_eq!(normalize(Path::new("/a/b/")), PathBuf::from("/a/b"));
}

#[test]
fn the_extension_lists_read_and_write() {
    let ext = extension(DenyList::new(PathBuf::from("/home/u"), &[]).expect("deny"));
    let manifest = ext.manifest();
    assert_eq!(manifest.name, "file");
    assert_eq!(manifest.runners[0].name, "fs");
    let names: Vec<&str> = manifest.runners[0].functions.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, vec!["read", "write"]);
}
