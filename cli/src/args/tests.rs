use clap::{CommandFactory, Parser};

use super::*;

fn parse(line: &[&str]) -> Result<Cli, clap::Error> {
    Cli::try_parse_from(std::iter::once("legion").chain(line.iter().copied()))
}

fn task(line: &[&str]) -> TaskCommand {
    match parse(line).expect("parses").command {
        Command::Task { command } => command,
        other => panic!("not a task command: {other:?}"),
    }
}

const ID: &str = "0190f5c8-7e4a-7b3c-9d2e-1f0a2b3c4d5e";

#[test]
fn submit_takes_every_flag() {
    let command = task(&[
        "task",
        "submit",
        "http.request.get",
        "--args",
        r#"{"url":"http://x"}"#,
        "--priority",
        "9",
        "--max-attempts",
        "3",
        "--timeout-ms",
        "5000",
        "--delay-ms",
        "100",
        "--idempotency-key",
        "k1",
        "--chain",
        "nightly",
        "--region",
        "eu",
        "--wait",
    ]);
    let TaskCommand::Submit(s) = command else { panic!("not submit") };
    assert_eq!(s.function, "http.request.get");
    assert_eq!(s.args, Some(serde_json::json!({"url": "http://x"})));
    assert_eq!((s.priority, s.max_attempts, s.timeout_ms, s.delay_ms), (Some(9), Some(3), Some(5000), Some(100)));
    assert_eq!(s.idempotency_key.as_deref(), Some("k1"));
    assert_eq!(s.chain.as_deref(), Some("nightly"));
    assert_eq!(s.region.as_deref(), Some("eu"));
    assert!(s.wait);
}

#[test]
fn submit_args_can_come_from_a_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("args.json");
    std::fs::write(&file, r#"{"n": [1, 2]}"#).expect("write");
    let arg = format!("@{}", file.display());
    let TaskCommand::Submit(s) = task(&["task", "submit", "core.util.echo", "--args", &arg]) else { panic!() };
    assert_eq!(s.args, Some(serde_json::json!({"n": [1, 2]})));
}

#[test]
fn bad_values_are_usage_errors() {
    for line in [
        &["task", "submit", "core.util.echo", "--args", "{not json"][..],
        &["task", "submit", "core.util.echo", "--args", "@/nonexistent/args.json"],
        &["task", "submit", "core.util.echo", "--priority", "10"],
        &["task", "submit", "core.util.echo", "--priority", "high"],
        &["task", "submit", "core.util.echo", "--max-attempts", "0"],
        &["task", "submit"],
        &["task", "get", "42"],
        &["task", "cancel", "not-a-uuid"],
        &["task", "watch"],
        &["task", "list", "--status", "done"],
        &["task", "list", "--limit", "0"],
        &["task", "list", "--limit", "1001"],
        &["task", "frobnicate"],
        &["certs", "init", "/tmp/x", "--executor-name", "Bad Name"],
        &["task", "get", ID, "--cert", "/c.pem"],
    ] {
        let err = parse(line).expect_err(&format!("{line:?} must be refused"));
        assert!(err.use_stderr(), "{line:?}");
        assert_ne!(err.kind(), clap::error::ErrorKind::DisplayHelp);
    }
}

#[test]
fn ids_are_canonicalized_and_statuses_parsed() {
    let TaskCommand::Get { id } = task(&["task", "get", &ID.to_uppercase()]) else { panic!() };
    assert_eq!(id, ID);
    let TaskCommand::List(list) =
        task(&["task", "list", "--status", "dead_lettered", "--function", "core.util.fail", "--limit", "5"])
    else {
        panic!()
    };
    assert_eq!(list.status, Some(TaskStatus::DeadLettered));
    assert_eq!((list.function.as_deref(), list.limit), (Some("core.util.fail"), Some(5)));
}

#[test]
fn connection_flags_are_accepted_anywhere() {
    let cli = parse(&["task", "get", ID, "--control-plane", "https://cp:50051", "--ca", "/ca.pem"]).expect("parses");
    assert_eq!(cli.connection.control_plane.as_deref(), Some("https://cp:50051"));
    let cli = parse(&["--settings-dir", "/a", "--settings-dir", "/b", "task", "watch", ID, "--settings", "/c.json"])
        .expect("parses");
    assert_eq!(cli.connection.settings_dirs, [PathBuf::from("/a"), PathBuf::from("/b")]);
    assert_eq!(cli.connection.settings_files, [PathBuf::from("/c.json")]);
}

#[test]
fn certs_init_defaults_the_executor_name() {
    let Command::Certs { command: CertsCommand::Init { dir, executor_name } } =
        parse(&["certs", "init", "/tmp/certs"]).expect("parses").command
    else {
        panic!()
    };
    assert_eq!((dir, executor_name.as_str()), (PathBuf::from("/tmp/certs"), "executor"));
    let Command::Certs { command: CertsCommand::Init { executor_name, .. } } =
        parse(&["certs", "init", "/tmp/certs", "--executor-name", "exec-2"]).expect("parses").command
    else {
        panic!()
    };
    assert_eq!(executor_name, "exec-2");
}

#[test]
fn submit_and_list_requests_carry_the_flags() {
    let TaskCommand::Submit(s) = task(&["task", "submit", "core.util.noop"]) else { panic!() };
    let request = crate::task::submit_request(s);
    assert_eq!(request.args.as_ref().map(legion_proto::value_to_json), Some(serde_json::json!({})));
    assert_eq!((request.priority, request.delay_ms, request.max_attempts), (0, 0, None));

    let TaskCommand::List(list) = task(&["task", "list", "--status", "failed", "--root-id", ID, "--page-token", "t"])
    else {
        panic!()
    };
    let request = crate::task::list_request(list);
    assert_eq!(request.status, Some(legion_proto::v1::TaskStatus::Failed as i32));
    assert_eq!(request.root_id.as_deref(), Some(ID));
    assert_eq!((request.page_size, request.page_token.as_str()), (0, "t"));
}

#[test]
fn region_help_says_which_executors_run_the_task() {
    let mut cli = Cli::command();
    let submit = cli
        .find_subcommand_mut("task")
        .and_then(|task| task.find_subcommand_mut("submit"))
        .expect("task submit")
        .clone();
    let region = submit.get_arguments().find(|a| a.get_id() == "region").expect("--region");
    assert_eq!(
        region.get_help().map(ToString::to_string).as_deref(),
        Some("Region whose executors run the task (executors with executor.region = REGION)")
    );
}

#[test]
fn policy_commands_parse() {
    let policy = |line: &[&str]| match parse(line).expect("parses").command {
        Command::Policy { command } => command,
        other => panic!("not a policy command: {other:?}"),
    };
    let PolicyCommand::Apply { file, name } = policy(&["policy", "apply", "ops.json"]) else { panic!("apply") };
    assert_eq!((file, name), (PathBuf::from("ops.json"), None));
    let PolicyCommand::Apply { file, name } = policy(&["policy", "apply", "-", "--name", "ops"]) else {
        panic!("apply")
    };
    assert_eq!((file, name.as_deref()), (PathBuf::from("-"), Some("ops")));
    assert!(matches!(policy(&["policy", "list"]), PolicyCommand::List));
    let PolicyCommand::Show { name } = policy(&["policy", "show", "ops"]) else { panic!("show") };
    assert_eq!(name, "ops");
    let PolicyCommand::Delete { name } = policy(&["policy", "delete", "ops"]) else { panic!("delete") };
    assert_eq!(name, "ops");
    let PolicyCommand::Check { paths, policies, json } =
        policy(&["policy", "check", "tasks/a/b/c", "audit", "--policy", "ops", "--policy", "dev"])
    else {
        panic!("check")
    };
    assert_eq!(
        (paths, policies, json),
        (vec!["tasks/a/b/c".to_owned(), "audit".to_owned()], vec!["ops".to_owned(), "dev".to_owned()], false)
    );
    let PolicyCommand::Check { json, .. } = policy(&["policy", "check", "audit", "--json"]) else { panic!("check") };
    assert!(json);
}

#[test]
fn api_key_auth_and_audit_commands_parse() {
    let Command::ApiKey { command: ApiKeyCommand::Create { name, policies, ttl_s } } =
        parse(&["api-key", "create", "--name", "ci", "--policy", "ops", "--policy", "dev", "--ttl-s", "3600"])
            .expect("parses")
            .command
    else {
        panic!("api-key create")
    };
    assert_eq!((name.as_str(), policies, ttl_s), ("ci", vec!["ops".to_owned(), "dev".to_owned()], Some(3600)));
    let Command::ApiKey { command: ApiKeyCommand::List { include_revoked } } =
        parse(&["api-key", "list", "--include-revoked"]).expect("parses").command
    else {
        panic!("api-key list")
    };
    assert!(include_revoked);
    let Command::ApiKey { command: ApiKeyCommand::Revoke { id } } =
        parse(&["api-key", "revoke", &ID.to_uppercase()]).expect("parses").command
    else {
        panic!("api-key revoke")
    };
    assert_eq!(id, ID);
    assert!(matches!(
        parse(&["auth", "token"]).expect("parses").command,
        Command::Auth { command: AuthCommand::Token }
    ));
    assert!(matches!(
        parse(&["auth", "whoami"]).expect("parses").command,
        Command::Auth { command: AuthCommand::Whoami }
    ));
    assert!(matches!(
        parse(&["audit", "verify"]).expect("parses").command,
        Command::Audit { command: AuditCommand::Verify }
    ));
    let Command::Audit { command: AuditCommand::List(list) } =
        parse(&["audit", "list", "--decision", "error", "--limit", "1000"]).expect("parses").command
    else {
        panic!("audit list")
    };
    assert_eq!((list.decision.as_deref(), list.limit, list.principal), (Some("error"), Some(1000), None));
}

#[test]
fn bad_security_values_are_usage_errors() {
    for line in [
        &["policy", "apply"][..],
        &["policy", "show"],
        &["policy", "check"],
        &["policy", "check", "audit", "--policy"],
        &["api-key", "create", "--policy", "ops"],
        &["api-key", "create", "--name", "ci", "--ttl-s", "0"],
        &["api-key", "create", "--name", "ci", "--ttl-s", "soon"],
        &["api-key", "revoke", "42"],
        &["auth", "login"],
        &["audit", "list", "--decision", "denied"],
        &["audit", "list", "--since", "yesterday"],
        &["audit", "list", "--limit", "0"],
        &["audit", "list", "--limit", "1001"],
        &["audit", "verify", "--all"],
    ] {
        let err = parse(line).expect_err(&format!("{line:?} must be refused"));
        assert!(err.use_stderr(), "{line:?}");
    }
}

#[test]
fn credentials_are_global_and_never_shown() {
    let cli = parse(&["policy", "list", "--api-key", "lgn_topsecret", "--token", "jwt-topsecret"]).expect("parses");
    assert_eq!(cli.connection.api_key.as_ref().map(Secret::expose), Some("lgn_topsecret"));
    assert_eq!(cli.connection.token.as_ref().map(Secret::expose), Some("jwt-topsecret"));
    let debug = format!("{cli:?}");
    assert!(!debug.contains("topsecret"), "{debug}");
    let cli = parse(&["--api-key", "k", "task", "get", ID]).expect("parses");
    assert!(cli.connection.api_key.is_some());

    let mut command = Cli::command();
    let help = command.render_long_help().to_string();
    assert!(help.contains("[env: LEGION_API_KEY]") && help.contains("[env: LEGION_TOKEN]"), "{help}");
    let api_key = command.get_arguments().find(|a| a.get_id() == "api_key").expect("--api-key");
    assert!(api_key.is_hide_env_values_set(), "the environment's value is never printed in help");
}

#[test]
fn chain_commands_parse() {
    let chain = |line: &[&str]| match parse(line).expect("parses").command {
        Command::Chain { command } => command,
        other => panic!("not a chain command: {other:?}"),
    };
    let ChainCommand::Apply { file } = chain(&["chain", "apply", "nightly.yaml"]) else { panic!("apply") };
    assert_eq!(file, PathBuf::from("nightly.yaml"));
    let ChainCommand::Apply { file } = chain(&["chain", "apply", "-"]) else { panic!("apply") };
    assert_eq!(file, PathBuf::from("-"));
    assert!(matches!(chain(&["chain", "list"]), ChainCommand::List));
    let ChainCommand::Show { name } = chain(&["chain", "show", "nightly"]) else { panic!("show") };
    assert_eq!(name, "nightly");
    let ChainCommand::Delete { name } = chain(&["chain", "delete", "nightly"]) else { panic!("delete") };
    assert_eq!(name, "nightly");
    let cli = parse(&["chain", "list", "--api-key", "k", "--ca", "/ca.pem"]).expect("connection flags anywhere");
    assert_eq!(cli.connection.ca, Some(PathBuf::from("/ca.pem")));
}

#[test]
fn task_tree_takes_an_id_and_json() {
    let TaskCommand::Tree { id, json } = task(&["task", "tree", &ID.to_uppercase()]) else { panic!("tree") };
    assert_eq!((id.as_str(), json), (ID, false));
    let TaskCommand::Tree { json, .. } = task(&["task", "tree", ID, "--json"]) else { panic!("tree") };
    assert!(json);
}

#[test]
fn bad_chain_and_tree_lines_are_usage_errors() {
    for line in [
        &["chain"][..],
        &["chain", "apply"],
        &["chain", "apply", "a.yaml", "b.yaml"],
        &["chain", "show"],
        &["chain", "delete"],
        &["chain", "list", "extra"],
        &["chain", "apply", "a.yaml", "--name", "x"],
        &["task", "tree"],
        &["task", "tree", "42"],
        &["task", "tree", ID, "--yaml"],
    ] {
        let err = parse(line).expect_err(&format!("{line:?} must be refused"));
        assert!(err.use_stderr(), "{line:?}");
    }
}

#[test]
fn submit_retry_flags_make_the_retry_policy() {
    let line = [
        "task",
        "submit",
        "core.util.fail",
        "--retry-initial-backoff-ms",
        "250",
        "--retry-multiplier",
        "1.5",
        "--retry-max-backoff-ms",
        "10000",
        "--retry-jitter",
        "0.25",
    ];
    let TaskCommand::Submit(s) = task(&line) else { panic!() };
    let request = crate::task::submit_request(s);
    assert_eq!(
        request.retry,
        Some(legion_proto::v1::RetryPolicy {
            initial_backoff_ms: Some(250),
            multiplier: Some(1.5),
            max_backoff_ms: Some(10_000),
            jitter: Some(0.25),
        })
    );
    // A negative value is a value, not a flag: the control plane refuses it naming `retry.jitter`, and
    // clap names the flag of an unsigned one.
    let TaskCommand::Submit(s) = task(&["task", "submit", "core.util.fail", "--retry-jitter", "-0.1"]) else {
        panic!()
    };
    assert_eq!(s.retry_jitter, Some(-0.1));
    let err = parse(&["task", "submit", "core.util.fail", "--retry-initial-backoff-ms", "-1"]).expect_err("unsigned");
    assert!(err.to_string().contains("--retry-initial-backoff-ms"), "{err}");
    let TaskCommand::Submit(s) = task(&["task", "submit", "core.util.fail", "--retry-jitter", "0"]) else { panic!() };
    let only_jitter = legion_proto::v1::RetryPolicy { jitter: Some(0.0), ..Default::default() };
    assert_eq!(crate::task::submit_request(s).retry, Some(only_jitter));
    let TaskCommand::Submit(s) = task(&["task", "submit", "core.util.fail"]) else { panic!() };
    assert_eq!(crate::task::submit_request(s).retry, None, "no flag: the retry.* settings apply");
    assert!(parse(&["task", "submit", "a.b.c", "--retry-initial-backoff-ms", "-1"]).is_err());
    assert!(parse(&["task", "submit", "a.b.c", "--retry-multiplier", "x"]).is_err());
}

#[test]
fn dead_letter_commands_parse() {
    let dead_letter = |line: &[&str]| match parse(line).expect("parses").command {
        Command::DeadLetter { command } => command,
        other => panic!("not a dead-letter command: {other:?}"),
    };
    let DeadLetterCommand::List(list) =
        dead_letter(&["dead-letter", "list", "--function", "core.util.echo", "--limit", "5", "--page-token", "t"])
    else {
        panic!()
    };
    let request = crate::dead_letter::list_request(list);
    assert_eq!(request.function.as_deref(), Some("core.util.echo"));
    assert_eq!((request.page_size, request.page_token.as_str()), (5, "t"));
    let DeadLetterCommand::Replay { task_id } = dead_letter(&["dead-letter", "replay", ID]) else { panic!() };
    assert_eq!(task_id, ID);
    assert!(parse(&["dead-letter", "replay", "42"]).is_err(), "the id is checked before any call");
    assert!(parse(&["dead-letter", "list", "--limit", "0"]).is_err());
}
