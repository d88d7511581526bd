//! `legion-bench`: Legion's end-to-end benchmark (see `bench/README.md`).
//!
//! ```text
//! legion-bench --control-plane https://localhost:54051 --ca certs/ca.pem \
//!     --database-url postgres://postgres@127.0.0.1/legion_bench --executors 1 --tasks 10000
//! legion-bench chain --control-plane https://localhost:54051 --ca certs/ca.pem --depth 20 --runs 20
//! legion-bench schedule --control-plane https://localhost:54051 --ca certs/ca.pem --schedules 10000
//! ```
//!
//! Without a subcommand it runs the throughput benchmark; `chain` measures the overhead of one chain
//! step instead ([`legion_bench::chain`]), `schedule` how late many schedules due in the same second
//! fire ([`legion_bench::schedule`]). The connection, database, wait and output flags are global:
//! they may come before or after `chain`.
//!
//! Exit codes: 0 when every task succeeded, 1 when the run completed but some task did not succeed
//! (or a submit failed), 2 when the run could not be carried out, 64 for bad usage.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use legion_bench::chain::{self, Variant};
use legion_bench::client::ClientOptions;
use legion_bench::run::{self, Options};
use legion_bench::schedule;
use legion_bench::submit::Plan;
use legion_common::EXIT_USAGE;
use legion_common::settings::LoggingSettings;

#[derive(Debug, Parser)]
#[command(name = "legion-bench", version, about = "Legion end-to-end benchmark")]
struct Cli {
    #[command(flatten)]
    run: RunArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Overhead of one chain step: looping `core.util.noop` chains, per transformation variant.
    Chain(ChainArgs),
    /// Many schedules due in the same second: how late the last one fires, and when its task ends.
    Schedule(ScheduleArgs),
}

#[derive(Debug, Args)]
struct ScheduleArgs {
    /// Schedules to create, all due at the same slot (1 to 1000000).
    #[arg(long, default_value_t = 10_000)]
    schedules: usize,
    /// `CreateSchedule` (and `DeleteSchedule`) calls in flight at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Seconds from now (PostgreSQL's clock) to the slot: long enough to create every schedule
    /// (2 to 3600).
    #[arg(long, default_value_t = 60)]
    lead_s: u64,
    /// Keep the schedules after the measurement (by default they are deleted).
    #[arg(long)]
    keep: bool,
}

#[derive(Debug, Args)]
struct ChainArgs {
    /// `max_depth` of the looping chain: each run has depth + 1 tasks that run (1 to 32).
    #[arg(long, default_value_t = 20)]
    depth: u32,
    /// Measured runs per variant.
    #[arg(long, default_value_t = 20)]
    runs: usize,
    /// Runs in flight at once (1: one after the other).
    #[arg(long, default_value_t = 1)]
    parallel: usize,
    /// Unmeasured runs per variant before the measured ones.
    #[arg(long, default_value_t = 1)]
    warmup_runs: usize,
    /// Transformation variants, comma-separated: none, static, jq, jinja.
    #[arg(long, value_delimiter = ',', default_value = "none,static,jq,jinja")]
    variants: Vec<String>,
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Control plane gRPC URL (TLS).
    #[arg(long, default_value = "https://localhost:50051", global = true)]
    control_plane: String,
    /// CA that signed the control plane's certificate (PEM). Required for a run.
    #[arg(long, global = true)]
    ca: Option<PathBuf>,
    /// Client certificate (PEM), optional.
    #[arg(long, requires = "key", global = true)]
    cert: Option<PathBuf>,
    /// Client key (PEM), with --cert.
    #[arg(long, requires = "cert", global = true)]
    key: Option<PathBuf>,
    /// API key, sent as `x-api-key`.
    #[arg(long, env = "LEGION_BENCH_API_KEY", hide_env_values = true, global = true)]
    api_key: Option<String>,
    /// Bearer token (JWT), sent as `authorization: Bearer …` when no API key is given.
    #[arg(long, env = "LEGION_BENCH_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    /// The control plane's PostgreSQL database, read for task timestamps.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/legion_bench", global = true)]
    database_url: String,
    /// Tasks to submit.
    #[arg(long, default_value_t = 10_000)]
    tasks: usize,
    /// SubmitTask calls in flight at once.
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    /// HTTP/2 connections (channels) the calls are spread over.
    #[arg(long, default_value_t = 1)]
    connections: usize,
    /// Active executors to wait for before submitting.
    #[arg(long, default_value_t = 1, global = true)]
    executors: usize,
    /// Function to run.
    #[arg(long, default_value = "core.util.noop")]
    function: String,
    /// Args of every task (a JSON object).
    #[arg(long, default_value = "{}")]
    args: String,
    /// Tasks submitted and awaited before the measured round (not measured).
    #[arg(long, default_value_t = 0)]
    warmup: usize,
    /// Name of the run in the report.
    #[arg(long, default_value = "legion", global = true)]
    label: String,
    /// Longest wait for the executors, in seconds.
    #[arg(long, default_value_t = 120, global = true)]
    wait_nodes_s: u64,
    /// Longest wait for the tasks to finish after the last submit, in seconds.
    #[arg(long, default_value_t = 600, global = true)]
    timeout_s: u64,
    /// PostgreSQL poll interval while waiting for the tasks, in milliseconds.
    #[arg(long, default_value_t = 200, global = true)]
    poll_ms: u64,
    /// Also append the report's JSON line to this file.
    #[arg(long, global = true)]
    json_out: Option<PathBuf>,
    /// Seconds to wait after the round before reading PostgreSQL's commit counter (idle backends
    /// report within 10 s); 0 skips the commits-per-task figure.
    #[arg(long, default_value_t = 11)]
    stats_settle_s: u64,
    /// Report the CPU time of a process during the round: NAME=PID, or NAME=comm:COMM for every
    /// process of that executable name (summed). Repeatable.
    #[arg(long = "cpu", value_parser = legion_bench::cpu::parse_target)]
    cpu: Vec<(String, legion_bench::cpu::Target)>,
}

fn usage_error(message: &str) -> ExitCode {
    eprintln!("legion-bench: {message}");
    ExitCode::from(u8::try_from(EXIT_USAGE).unwrap_or(64))
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(u8::try_from(EXIT_USAGE).unwrap_or(64));
        }
    };
    if let Err(e) = legion_common::telemetry::init(&LoggingSettings::default()) {
        eprintln!("legion-bench: cannot set up logging: {e}");
    }
    legion_common::install_crypto_provider();
    match cli.command {
        Some(Command::Chain(args)) => chain_bench(cli.run, args),
        Some(Command::Schedule(args)) => schedule_bench(cli.run, args),
        None => bench(cli.run),
    }
}

fn options(args: RunArgs) -> Result<Options, String> {
    let ca = args.ca.ok_or("--ca: required (the CA that signed the control plane's certificate)")?;
    let task_args: serde_json::Value =
        serde_json::from_str(&args.args).map_err(|e| format!("--args: not JSON: {e}"))?;
    Ok(Options {
        client: ClientOptions {
            url: args.control_plane,
            ca,
            cert: args.cert,
            key: args.key,
            api_key: args.api_key,
            token: args.token,
        },
        database_url: args.database_url,
        connections: args.connections,
        plan: Plan { tasks: args.tasks, concurrency: args.concurrency, function: args.function, args: task_args },
        warmup: args.warmup,
        executors: args.executors,
        wait_nodes: Duration::from_secs(args.wait_nodes_s),
        timeout: Duration::from_secs(args.timeout_s),
        poll: Duration::from_millis(args.poll_ms),
        label: args.label,
        json_out: args.json_out,
        stats_settle: Duration::from_secs(args.stats_settle_s),
        cpu_targets: args.cpu,
    })
}

fn chain_options(run: RunArgs, args: ChainArgs) -> Result<chain::Options, String> {
    let ca = run.ca.ok_or("--ca: required (the CA that signed the control plane's certificate)")?;
    let variants = args
        .variants
        .iter()
        .map(|name| Variant::parse(name.trim()).map_err(|e| format!("--variants: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(chain::Options {
        client: ClientOptions {
            url: run.control_plane,
            ca,
            cert: run.cert,
            key: run.key,
            api_key: run.api_key,
            token: run.token,
        },
        database_url: run.database_url,
        executors: run.executors,
        wait_nodes: Duration::from_secs(run.wait_nodes_s),
        depth: args.depth,
        runs: args.runs,
        parallel: args.parallel,
        warmup_runs: args.warmup_runs,
        variants,
        timeout: Duration::from_secs(run.timeout_s),
        poll: Duration::from_millis(run.poll_ms),
        label: run.label,
        json_out: run.json_out,
    })
}

fn schedule_options(run: RunArgs, args: ScheduleArgs) -> Result<schedule::Options, String> {
    let ca = run.ca.ok_or("--ca: required (the CA that signed the control plane's certificate)")?;
    Ok(schedule::Options {
        client: ClientOptions {
            url: run.control_plane,
            ca,
            cert: run.cert,
            key: run.key,
            api_key: run.api_key,
            token: run.token,
        },
        database_url: run.database_url,
        executors: run.executors,
        wait_nodes: Duration::from_secs(run.wait_nodes_s),
        schedules: args.schedules,
        concurrency: args.concurrency,
        lead: Duration::from_secs(args.lead_s),
        timeout: Duration::from_secs(run.timeout_s),
        poll: Duration::from_millis(run.poll_ms),
        keep: args.keep,
        label: run.label,
        json_out: run.json_out,
    })
}

fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| {
        eprintln!("legion-bench: cannot start the runtime: {e}");
        ExitCode::from(2)
    })
}

fn append_lines(path: &std::path::Path, lines: &[String]) -> Result<(), ExitCode> {
    let appended = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut file| lines.iter().try_for_each(|line| writeln!(file, "{line}")));
    appended.map_err(|e| {
        eprintln!("legion-bench: --json-out {}: {e}", path.display());
        ExitCode::from(2)
    })
}

/// What the runner prints of a scenario's report.
trait Printed {
    /// The human table.
    fn table(&self) -> String;
    /// One JSON line (also appended to `--json-out`).
    fn json_line(&self) -> String;
    /// Whether the run met its checks.
    fn ok(&self) -> bool;
}

macro_rules! printed {
    ($($report:ty),*) => {$(
        impl Printed for $report {
            fn table(&self) -> String {
                <$report>::table(self)
            }
            fn json_line(&self) -> String {
                <$report>::json_line(self)
            }
            fn ok(&self) -> bool {
                self.ok
            }
        }
    )*};
}

printed!(legion_bench::report::Report, chain::report::ChainReport, schedule::report::ScheduleReport);

/// Runs a scenario whose options are `options` (checked), prints its reports and appends their JSON lines
/// to `json_out`. Exit 0 when every report is ok, 1 when one is not, 2 when the run failed, 64 for bad
/// options.
fn scenario<O, R, E, F, Fut>(options: Result<O, String>, json_out: impl Fn(&O) -> Option<PathBuf>, run: F) -> ExitCode
where
    R: Printed,
    E: std::fmt::Display,
    F: FnOnce(O) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<R>, E>>,
{
    let options = match options {
        Ok(options) => options,
        Err(message) => return usage_error(&message),
    };
    let json_out = json_out(&options);
    let runtime = match runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    let reports = match runtime.block_on(run(options)) {
        Ok(reports) => reports,
        Err(e) => {
            eprintln!("legion-bench: {e}");
            return ExitCode::from(2);
        }
    };
    let lines: Vec<String> = reports.iter().map(Printed::json_line).collect();
    for (report, line) in reports.iter().zip(&lines) {
        println!("{}", report.table());
        println!("{line}");
    }
    if let Some(path) = &json_out
        && let Err(code) = append_lines(path, &lines)
    {
        return code;
    }
    if reports.iter().all(Printed::ok) { ExitCode::SUCCESS } else { ExitCode::from(1) }
}

fn chain_bench(run: RunArgs, args: ChainArgs) -> ExitCode {
    let options = chain_options(run, args).and_then(|o| o.validate().map(|()| o).map_err(|e| e.to_string()));
    scenario(options, |o| o.json_out.clone(), |o| async move { chain::run(&o).await })
}

fn schedule_bench(run: RunArgs, args: ScheduleArgs) -> ExitCode {
    let options = schedule_options(run, args).and_then(|o| o.validate().map(|()| o).map_err(|e| e.to_string()));
    scenario(options, |o| o.json_out.clone(), |o| async move { schedule::run(&o).await.map(|r| vec![r]) })
}

fn bench(args: RunArgs) -> ExitCode {
    let options = options(args).and_then(|o| o.validate().map(|()| o).map_err(|e| e.to_string()));
    scenario(options, |o| o.json_out.clone(), |o| async move { run::run(&o).await.map(|r| vec![r]) })
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn run_flags_and_subcommands_parse() {
        let cli = Cli::try_parse_from([
            "legion-bench",
            "--ca",
            "ca.pem",
            "--tasks",
            "5",
            "--connections",
            "2",
            "--cpu",
            "cp=7",
            "--cpu",
            "pg=comm:postgres",
        ])
        .expect("run flags");
        assert_eq!(cli.run.cpu.len(), 2);
        assert!(Cli::try_parse_from(["legion-bench", "--cpu", "cp"]).is_err(), "--cpu needs NAME=…");
        let o = options(cli.run).expect("options");
        assert_eq!((o.plan.tasks, o.plan.concurrency, o.connections), (5, 256, 2));
        assert_eq!(o.plan.function, "core.util.noop");

        let cli = Cli::try_parse_from(["legion-bench"]).expect("no flags");
        assert!(options(cli.run).expect_err("no ca").starts_with("--ca"));
        let cli = Cli::try_parse_from(["legion-bench", "--ca", "x", "--args", "{"]).expect("flags");
        assert!(options(cli.run).expect_err("bad json").starts_with("--args"));
        assert!(Cli::try_parse_from(["legion-bench", "--cert", "c.pem"]).is_err(), "--cert needs --key");
    }

    #[test]
    fn the_schedule_subcommand_parses_its_flags() {
        let cli = Cli::try_parse_from([
            "legion-bench",
            "--ca",
            "ca.pem",
            "schedule",
            "--schedules",
            "500",
            "--concurrency",
            "16",
            "--lead-s",
            "30",
            "--keep",
            "--poll-ms",
            "50",
        ])
        .expect("schedule flags");
        let Some(Command::Schedule(args)) = cli.command else { panic!("the schedule subcommand") };
        let o = schedule_options(cli.run, args).expect("options");
        assert_eq!((o.schedules, o.concurrency, o.lead, o.keep), (500, 16, Duration::from_secs(30), true));
        assert_eq!(o.poll, Duration::from_millis(50));

        let cli = Cli::try_parse_from(["legion-bench", "schedule", "--ca", "x"]).expect("defaults");
        let Some(Command::Schedule(args)) = cli.command else { panic!("the schedule subcommand") };
        let o = schedule_options(cli.run, args).expect("options");
        assert_eq!((o.schedules, o.concurrency, o.lead, o.keep), (10_000, 64, Duration::from_secs(60), false));
        let cli = Cli::try_parse_from(["legion-bench", "schedule"]).expect("flags");
        let Some(Command::Schedule(args)) = cli.command else { panic!("the schedule subcommand") };
        assert!(schedule_options(cli.run, args).expect_err("no ca").starts_with("--ca"));
    }

    #[test]
    fn the_chain_subcommand_takes_the_global_flags_on_either_side() {
        let cli = Cli::try_parse_from([
            "legion-bench",
            "--ca",
            "ca.pem",
            "chain",
            "--depth",
            "7",
            "--runs",
            "3",
            "--variants",
            "jq,jinja",
            "--poll-ms",
            "20",
        ])
        .expect("chain flags");
        let Some(Command::Chain(args)) = cli.command else { panic!("the chain subcommand") };
        let o = chain_options(cli.run, args).expect("options");
        assert_eq!((o.depth, o.runs, o.parallel, o.warmup_runs), (7, 3, 1, 1));
        assert_eq!(o.variants, vec![Variant::Jq, Variant::Jinja]);
        assert_eq!(o.poll, Duration::from_millis(20));
        assert_eq!(o.client.ca, PathBuf::from("ca.pem"));

        let cli = Cli::try_parse_from(["legion-bench", "chain", "--ca", "x"]).expect("defaults");
        let Some(Command::Chain(args)) = cli.command else { panic!("the chain subcommand") };
        let o = chain_options(cli.run, args).expect("options");
        assert_eq!((o.depth, o.runs, o.variants.len()), (20, 20, 4));

        let cli = Cli::try_parse_from(["legion-bench", "chain", "--ca", "x", "--variants", "lua"]).expect("flags");
        let Some(Command::Chain(args)) = cli.command else { panic!("the chain subcommand") };
        assert!(chain_options(cli.run, args).expect_err("bad variant").starts_with("--variants"));
        let cli = Cli::try_parse_from(["legion-bench", "chain"]).expect("flags");
        let Some(Command::Chain(args)) = cli.command else { panic!("the chain subcommand") };
        assert!(chain_options(cli.run, args).expect_err("no ca").starts_with("--ca"));
    }
}
