//! Long-lived sandboxes from the command line: `create`, `exec`, `ls`,
//! `inspect`, `stop`, `kill`, `pause`, `resume`, `set-timeout`, `cp`,
//! `stats`. Each invocation is a new process that opens the state dir
//! (`--state-dir`, default /run/sandlot) as a persistent runtime and takes
//! over the sandbox it names; the sandboxes live on between invocations.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use clap::Args;
use sandlot::{Cmd, Error, ListFilter, Metrics, RunOptions, Runtime, Sandbox, SandboxInfo, State};
use serde_json::{json, Value};

use crate::copy::{self, CopyIn, CopyOut};
use crate::forward::{exit_code, forward};
use crate::options::SandboxArgs;
use crate::parse::{parse_duration, parse_env};
use crate::tty;

/// `sandlot create`: prints the new sandbox's id and leaves it running.
#[derive(Args)]
pub struct CreateArgs {
    #[command(flatten)]
    pub sandbox: SandboxArgs,
    /// Destroy the sandbox after this long without activity (a command
    /// starting or ending, a file copied in or out, `exec`), e.g. 10m.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub idle_timeout: Option<Duration>,
    /// Metadata to find it by (`ls --metadata`), repeatable.
    #[arg(long = "metadata", value_name = "KEY=VALUE", value_parser = parse_env)]
    pub metadata: Vec<(String, String)>,
}

/// `sandlot exec`: runs a command in a sandbox; exits with its code.
#[derive(Args)]
pub struct ExecArgs {
    /// The sandbox (see `sandlot ls`).
    pub id: String,
    /// Environment variable for the command (repeatable).
    #[arg(long = "env", short, value_name = "KEY=VALUE", value_parser = parse_env)]
    pub env: Vec<(String, String)>,
    /// Working directory inside the sandbox.
    #[arg(long, short = 'w', value_name = "DIR")]
    pub workdir: Option<String>,
    /// User to run as: a name from the sandbox's /etc/passwd or uid[:gid].
    #[arg(long, short)]
    pub user: Option<String>,
    /// Give the command a terminal made inside the sandbox (stdin, stdout
    /// and stderr; this terminal in raw mode, its size forwarded).
    #[arg(long, short = 't')]
    pub tty: bool,
    /// Keep stdin open and forward it (without it the command reads
    /// /dev/null).
    #[arg(long, short = 'i')]
    pub interactive: bool,
    /// The command and its arguments (run as given, no shell).
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

/// `sandlot ls`.
#[derive(Args)]
pub struct LsArgs {
    /// One JSON array of the objects `inspect` prints.
    #[arg(long)]
    pub json: bool,
    /// Ended sandboxes too (kept for a while, with the reason they ended).
    #[arg(long)]
    pub all: bool,
    /// Only sandboxes in this state (repeatable: any of them).
    #[arg(long = "state", value_name = "STATE", value_parser = parse_state)]
    pub states: Vec<State>,
    /// Only sandboxes with this metadata (repeatable: all of them).
    #[arg(long = "metadata", value_name = "KEY=VALUE", value_parser = parse_env)]
    pub metadata: Vec<(String, String)>,
}

fn parse_state(text: &str) -> Result<State, String> {
    text.parse()
}

/// The persistent runtime every one of these commands works through;
/// every command but `create` takes sandboxes over and makes none, and
/// needs no spawner, templates or seccomp (`attach_only`: a few ms less).
pub fn runtime(data_dir: &Path, state_dir: &Path, creates: bool) -> Result<Runtime, Error> {
    let builder = Runtime::builder().data_dir(data_dir).persistent(state_dir);
    match creates {
        true => builder.build(),
        false => builder.attach_only().build(),
    }
}

pub fn create(rt: &Runtime, args: &CreateArgs) -> Result<ExitCode, Error> {
    let mut options = args.sandbox.options();
    if let Some(idle) = args.idle_timeout {
        options = options.idle_timeout(idle);
    }
    for (key, value) in &args.metadata {
        options = options.metadata(key, value);
    }
    let sandbox = rt.create(options)?;
    println!("{}", sandbox.id());
    Ok(ExitCode::SUCCESS)
}

pub fn exec(rt: &Runtime, args: &ExecArgs) -> Result<ExitCode, Error> {
    let sandbox = rt.connect(&args.id)?;
    let mut options = RunOptions {
        cwd: args.workdir.clone(),
        user: args.user.clone(),
        env: args.env.clone(),
        ..RunOptions::default()
    };
    let cmd = Cmd::Argv(args.command.clone());
    let commands = sandbox.commands();
    let hint = |e: &Error| {
        if let Error::SandboxNotRunning {
            state: State::Paused,
            ..
        } = e
        {
            eprintln!("sandlot: resume it first: sandlot resume {}", args.id);
        }
    };
    let exit = if args.tty {
        // The terminal is the command's stdin, stdout and stderr.
        let pty = commands
            .spawn_pty(cmd, tty::host_size(), options)
            .inspect_err(hint)?;
        tty::attach(pty)?
    } else {
        if args.interactive {
            options = options.stdin_piped();
        }
        let process = commands.spawn(cmd, options).inspect_err(hint)?;
        forward(&sandbox, process)?
    };
    Ok(exit_code(&sandbox, &exit))
}

pub fn ls(rt: &Runtime, args: &LsArgs) -> Result<ExitCode, Error> {
    let mut filter = ListFilter::all();
    for state in &args.states {
        filter = filter.state(*state);
    }
    for (key, value) in &args.metadata {
        filter = filter.metadata(key, value);
    }
    if args.all {
        filter = filter.ended();
    }
    let infos = rt.list(&filter);
    if args.json {
        let all: Vec<Value> = infos.iter().map(info_json).collect();
        println!("{}", Value::Array(all));
        return Ok(ExitCode::SUCCESS);
    }
    let now = SystemTime::now();
    println!(
        "{:<16}  {:<9}  {:<12}  {:>8}  {:>8}  {}",
        "ID",
        "STATE",
        "TEMPLATE",
        "AGE",
        "ENDS IN",
        if args.all {
            "METADATA / END"
        } else {
            "METADATA"
        }
    );
    for info in &infos {
        let age = now.duration_since(info.created_at).unwrap_or_default();
        let ends = match info.state {
            State::Destroyed => "-".to_string(),
            _ => short(info.end_at.duration_since(now).unwrap_or_default()),
        };
        let mut extra: Vec<String> = info
            .metadata
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        if let Some(reason) = &info.end_reason {
            extra.push(format!("({reason})"));
        }
        println!(
            "{:<16}  {:<9}  {:<12}  {:>8}  {:>8}  {}",
            info.id,
            info.state.as_str(),
            info.template,
            short(age),
            ends,
            extra.join(" ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// A duration for a table: `42s`, `17m`, `3h`, `2d`.
fn short(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        7200..=172_799 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

pub fn inspect(rt: &Runtime, id: &str) -> Result<ExitCode, Error> {
    let info = rt.inspect(id)?;
    println!(
        "{}",
        serde_json::to_string_pretty(&info_json(&info)).unwrap_or_default()
    );
    Ok(ExitCode::SUCCESS)
}

fn rfc3339(time: SystemTime) -> Value {
    time::OffsetDateTime::from(time)
        .format(&time::format_description::well_known::Rfc3339)
        .map_or(Value::Null, Value::String)
}

/// The one JSON shape of a sandbox (`inspect`, `ls --json`).
fn info_json(info: &SandboxInfo) -> Value {
    let limits = &info.limits;
    json!({
        "id": info.id,
        "state": info.state.as_str(),
        "template": info.template,
        "metadata": info.metadata,
        "limits": {
            "cpus": limits.cpus,
            "memory_bytes": limits.memory,
            "pids": limits.pids,
            "disk_bytes": limits.disk,
            "open_files": limits.open_files,
        },
        "created_at": rfc3339(info.created_at),
        "end_at": rfc3339(info.end_at),
        "idle_timeout": info.idle_timeout.map(|d| d.as_secs_f64()),
        "end_reason": info.end_reason.as_ref().map(|r| r.as_str()),
        "end_detail": info.end_reason.as_ref().map(|r| r.detail()).filter(|d| !d.is_empty()),
        "ended_at": info.ended_at.map(rfc3339),
        "hostname": info.hostname,
        "init_pid": info.init_pid,
    })
}

pub fn stop(rt: &Runtime, id: &str, grace: Duration) -> Result<ExitCode, Error> {
    rt.connect(id)?.stop(grace)?;
    Ok(ExitCode::SUCCESS)
}

pub fn kill(rt: &Runtime, id: &str) -> Result<ExitCode, Error> {
    rt.connect(id)?.kill()?;
    Ok(ExitCode::SUCCESS)
}

pub fn pause(rt: &Runtime, id: &str) -> Result<ExitCode, Error> {
    rt.connect(id)?.pause()?;
    Ok(ExitCode::SUCCESS)
}

pub fn resume(rt: &Runtime, id: &str) -> Result<ExitCode, Error> {
    rt.connect(id)?.resume()?;
    Ok(ExitCode::SUCCESS)
}

pub fn set_timeout(rt: &Runtime, id: &str, timeout: Duration) -> Result<ExitCode, Error> {
    rt.connect(id)?.set_timeout(timeout)?;
    Ok(ExitCode::SUCCESS)
}

/// Which way `sandlot cp SRC DST` copies.
enum Copy {
    In(String, CopyIn),
    Out(String, CopyOut),
}

/// `ID:/path` (an absolute sandbox path after the first `:`).
fn sandbox_path(arg: &str) -> Option<(&str, &str)> {
    arg.split_once(':')
        .filter(|(id, path)| !id.is_empty() && !id.contains('/') && path.starts_with('/'))
}

fn copy_direction(src: &str, dst: &str) -> Result<Copy, Error> {
    let invalid = |reason: &str| Error::InvalidOptions {
        option: "cp",
        reason: reason.to_string(),
    };
    match (sandbox_path(src), sandbox_path(dst)) {
        (Some((id, path)), None) => Ok(Copy::Out(
            id.to_string(),
            CopyOut {
                sandbox: path.to_string(),
                host: PathBuf::from(dst),
            },
        )),
        (None, Some((id, path))) => Ok(Copy::In(
            id.to_string(),
            CopyIn {
                host: PathBuf::from(src),
                sandbox: path.to_string(),
            },
        )),
        (Some(_), Some(_)) => Err(invalid("copies between two sandboxes go through the host")),
        (None, None) => Err(invalid(
            "one of SRC and DST must be ID:/PATH (a path in the sandbox)",
        )),
    }
}

pub fn cp(rt: &Runtime, src: &str, dst: &str) -> Result<ExitCode, Error> {
    match copy_direction(src, dst)? {
        Copy::In(id, copy) => copy::copy_in(&rt.connect(&id)?, &copy)?,
        Copy::Out(id, copy) => copy::copy_out(&rt.connect(&id)?, &copy)?,
    }
    Ok(ExitCode::SUCCESS)
}

pub fn stats(rt: &Runtime, id: &str, as_json: bool) -> Result<ExitCode, Error> {
    let sandbox: Sandbox = rt.connect(id)?;
    // CPU percent needs two samples.
    let _ = sandbox.metrics()?;
    std::thread::sleep(Duration::from_millis(200));
    let m: Metrics = sandbox.metrics()?;
    if as_json {
        println!(
            "{}",
            json!({
                "id": sandbox.id(),
                "cpu_percent": m.cpu_percent,
                "cpu_usage_ns": m.cpu_usage_ns,
                "memory_bytes": m.memory_used,
                "memory_peak_bytes": m.memory_peak,
                "memory_limit_bytes": m.memory_limit,
                "disk_used_bytes": m.disk_used,
                "disk_limit_bytes": m.disk_total,
                "processes": m.processes,
                "oom_kills": m.oom_kills,
            })
        );
    } else {
        println!("cpu        {:.1}%", m.cpu_percent);
        println!(
            "memory     {} / {} bytes (peak {})",
            m.memory_used, m.memory_limit, m.memory_peak
        );
        println!("disk       {} / {} bytes", m.disk_used, m.disk_total);
        println!("processes  {}", m.processes);
        println!("oom kills  {}", m.oom_kills);
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cp_finds_the_sandbox_side() {
        assert!(
            matches!(copy_direction("ab12:/etc/hosts", "./hosts"), Ok(Copy::Out(id, c)) if id == "ab12" && c.sandbox == "/etc/hosts")
        );
        assert!(
            matches!(copy_direction("./data:v2", "ab12:/in"), Ok(Copy::In(id, c)) if id == "ab12" && c.host == Path::new("./data:v2"))
        );
        assert!(copy_direction("a:/x", "b:/y").is_err());
        assert!(copy_direction("./a", "./b").is_err());
        assert!(copy_direction("ab12:relative", "./b").is_err());
    }

    #[test]
    fn durations_for_people() {
        assert_eq!(short(Duration::from_secs(42)), "42s");
        assert_eq!(short(Duration::from_secs(600)), "10m");
        assert_eq!(short(Duration::from_secs(3 * 3600)), "3h");
        assert_eq!(short(Duration::from_secs(3 * 86_400)), "3d");
    }
}
