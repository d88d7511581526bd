//! Where the CPU went during a round: CPU time of named processes (read from Linux's `/proc`), and
//! how busy the whole machine was. On a 2-core host running PostgreSQL, RabbitMQ, the control plane,
//! the executors and the benchmark itself, this shows which of them saturates the cores.
//!
//! Processes are given as `NAME=PID` (one process) or `NAME=comm:COMM` (every process whose
//! `/proc/<pid>/comm` is COMM, e.g. `postgres=comm:postgres`, summed; a process that starts during the
//! round counts whole, one that ends during it is left out, since its last counts are gone). The
//! benchmark itself is always measured as `legion-bench`.

use std::collections::BTreeMap;
use std::time::Instant;

use serde::Serialize;

/// Clock ticks per second of `/proc/<pid>/stat` and `/proc/stat` (`USER_HZ`, 100 on Linux).
pub const USER_HZ: f64 = 100.0;

/// A process selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// One process id.
    Pid(u32),
    /// Every process with this `comm` (executable name, at most 15 bytes).
    Comm(String),
}

/// Parses `NAME=PID` or `NAME=comm:COMM`.
///
/// # Errors
/// A message naming what is wrong, for a usage error on `--cpu`.
pub fn parse_target(spec: &str) -> Result<(String, Target), String> {
    let (name, what) =
        spec.split_once('=').ok_or_else(|| format!("--cpu {spec:?}: expected NAME=PID or NAME=comm:COMM"))?;
    if name.is_empty() {
        return Err(format!("--cpu {spec:?}: empty name"));
    }
    let target = match what.strip_prefix("comm:") {
        Some(comm) if !comm.is_empty() => Target::Comm(comm.to_owned()),
        Some(_) => return Err(format!("--cpu {spec:?}: empty comm")),
        None => Target::Pid(what.parse().map_err(|_| format!("--cpu {spec:?}: {what:?} is not a process id"))?),
    };
    Ok((name.to_owned(), target))
}

/// User plus system ticks of a process from the text of `/proc/<pid>/stat`. The command name (field
/// 2) may hold spaces and parentheses, so fields are counted after its closing parenthesis.
pub fn process_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3, utime field 14, stime field 15 (1-based, proc(5)).
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// `(busy, total)` ticks of all CPUs from the text of `/proc/stat`, and the number of CPUs. Idle and
/// iowait count as not busy.
pub fn machine_ticks(stat: &str) -> Option<(u64, u64, usize)> {
    let mut lines = stat.lines();
    let fields: Vec<u64> =
        lines.next()?.strip_prefix("cpu ")?.split_whitespace().filter_map(|f| f.parse().ok()).collect();
    let total: u64 = fields.iter().take(8).sum();
    let idle = fields.get(3)? + fields.get(4).copied().unwrap_or(0);
    let cpus = lines.filter(|l| l.starts_with("cpu")).count();
    Some((total.saturating_sub(idle), total, cpus.max(1)))
}

/// Ticks by process id of the processes `target` selects now.
fn read_ticks(target: &Target) -> BTreeMap<u32, u64> {
    let ticks = |pid: u32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).ok().as_deref().and_then(process_ticks).map(|t| (pid, t))
    };
    match target {
        Target::Pid(pid) => ticks(*pid).into_iter().collect(),
        Target::Comm(comm) => std::fs::read_dir("/proc")
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .filter_map(|e| e.file_name().to_str().and_then(|name| name.parse::<u32>().ok()))
                    .filter(|pid| {
                        std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim_end() == comm)
                    })
                    .filter_map(ticks)
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// Ticks used between two readings of the same target: per process, its growth, or its whole count if
/// it started in between. A process that ended in between is left out (its last ticks are unknown).
fn ticks_between(before: Option<&BTreeMap<u32, u64>>, after: &BTreeMap<u32, u64>) -> u64 {
    after.iter().map(|(pid, ticks)| ticks.saturating_sub(before.and_then(|b| b.get(pid)).copied().unwrap_or(0))).sum()
}

/// CPU counters at one moment.
#[derive(Debug, Clone)]
pub struct Sample {
    at: Instant,
    processes: BTreeMap<String, BTreeMap<u32, u64>>,
    machine: Option<(u64, u64, usize)>,
}

/// Reads the counters of `targets` plus this process (`legion-bench`) and the machine.
pub fn sample(targets: &[(String, Target)]) -> Sample {
    let mut processes: BTreeMap<String, BTreeMap<u32, u64>> =
        targets.iter().map(|(name, target)| (name.clone(), read_ticks(target))).collect();
    processes.insert("legion-bench".into(), read_ticks(&Target::Pid(std::process::id())));
    let machine = std::fs::read_to_string("/proc/stat").ok().as_deref().and_then(machine_ticks);
    Sample { at: Instant::now(), processes, machine }
}

/// CPU used by one process (or group) during a round.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Usage {
    /// CPU seconds (user + system).
    pub seconds: f64,
    /// Share of the machine's capacity (all cores × wall time), 0 to 1.
    pub share: f64,
}

/// CPU use during a round.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// Wall time between the two samples, s.
    pub wall_seconds: f64,
    /// CPUs of the machine.
    pub cpus: usize,
    /// Share of the machine's capacity that was busy, 0 to 1 (all processes, not only the named ones).
    pub machine_busy: f64,
    /// Use by process name.
    pub processes: BTreeMap<String, Usage>,
}

/// The CPU used between `before` and `after`.
#[allow(clippy::cast_precision_loss)]
pub fn usage(before: &Sample, after: &Sample) -> Report {
    let wall_seconds = after.at.duration_since(before.at).as_secs_f64();
    let (machine_busy, cpus) = match (before.machine, after.machine) {
        (Some((b0, t0, cpus)), Some((b1, t1, _))) if t1 > t0 => ((b1 - b0.min(b1)) as f64 / (t1 - t0) as f64, cpus),
        (_, Some((_, _, cpus))) => (0.0, cpus),
        _ => (0.0, 1),
    };
    let capacity = wall_seconds * cpus as f64;
    let processes = after
        .processes
        .iter()
        .map(|(name, ticks)| {
            let used = ticks_between(before.processes.get(name), ticks);
            let seconds = used as f64 / USER_HZ;
            (name.clone(), Usage { seconds, share: if capacity > 0.0 { seconds / capacity } else { 0.0 } })
        })
        .collect();
    Report { wall_seconds, cpus, machine_busy, processes }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn targets_parse_or_name_the_problem() {
        assert_eq!(parse_target("cp=42"), Ok(("cp".into(), Target::Pid(42))));
        assert_eq!(parse_target("pg=comm:postgres"), Ok(("pg".into(), Target::Comm("postgres".into()))));
        for bad in ["cp", "=42", "cp=x", "cp=comm:", "cp=-1"] {
            assert!(parse_target(bad).expect_err(bad).starts_with("--cpu"), "{bad}");
        }
    }

    #[test]
    fn process_ticks_skip_names_with_spaces_and_parentheses() {
        let stat = "1234 (tokio (rt) x) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 8 0 99 0 0";
        assert_eq!(process_ticks(stat), Some(325));
        assert_eq!(process_ticks("1234 (x) S 1"), None);
        assert_eq!(process_ticks("garbage"), None);
    }

    #[test]
    fn machine_ticks_count_idle_and_iowait_as_not_busy() {
        let stat =
            "cpu  100 5 50 800 40 0 5 0 0 0\ncpu0 50 2 25 400 20 0 3 0 0 0\ncpu1 50 3 25 400 20 0 2 0 0 0\nintr 1";
        assert_eq!(machine_ticks(stat), Some((160, 1000, 2)));
        assert_eq!(machine_ticks("intr 1"), None);
    }

    #[test]
    fn usage_is_the_difference_of_two_samples() {
        let t0 = Instant::now();
        let one = |pid: u32, ticks: u64| BTreeMap::from([(pid, ticks)]);
        let before = Sample {
            at: t0,
            processes: BTreeMap::from([
                ("cp".to_owned(), one(1, 100)),
                ("legion-bench".to_owned(), one(2, 10)),
                // pid 11 ends during the round and pid 12 starts: the group must not go negative.
                ("pg".to_owned(), BTreeMap::from([(10, 500), (11, 9_000)])),
            ]),
            machine: Some((1000, 5000, 2)),
        };
        let after = Sample {
            at: t0 + Duration::from_secs(2),
            processes: BTreeMap::from([
                ("cp".to_owned(), one(1, 300)),
                ("legion-bench".to_owned(), one(2, 60)),
                ("new".to_owned(), one(3, 40)),
                ("pg".to_owned(), BTreeMap::from([(10, 600), (12, 50)])),
            ]),
            machine: Some((1300, 5400, 2)),
        };
        let report = usage(&before, &after);
        assert_eq!(report.cpus, 2);
        assert!((report.machine_busy - 0.75).abs() < 1e-9);
        assert_eq!(report.processes["cp"], Usage { seconds: 2.0, share: 0.5 });
        assert_eq!(report.processes["legion-bench"], Usage { seconds: 0.5, share: 0.125 });
        assert!((report.processes["new"].seconds - 0.4).abs() < 1e-9);
        assert!((report.processes["pg"].seconds - 1.5).abs() < 1e-9);
    }

    #[test]
    fn this_process_can_be_sampled() {
        let spin = Instant::now();
        let s0 = sample(&[("self".into(), Target::Pid(std::process::id()))]);
        let mut x = 0u64;
        while spin.elapsed() < Duration::from_millis(50) {
            x = x.wrapping_add(1);
        }
        assert!(x > 0);
        let s1 = sample(&[]);
        let me = std::process::id();
        assert!(s1.processes["legion-bench"][&me] >= s0.processes["legion-bench"][&me]);
        assert!(s0.processes["self"].contains_key(&me));
        assert!(s1.machine.is_some_and(|(_, total, cpus)| total > 0 && cpus >= 1));
    }
}
