//! The `sandlot` command: run a command in a fresh sandbox, manage
//! templates. Thin: everything it does is library API.

mod code;
mod copy;
mod network;
mod parse;
mod repl;
mod serve;
mod tty;

use parse::{parse_duration, parse_env, parse_size};

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use sandlot::{
    Cmd, CommandExit, Error, ExecLimits, ExitReason, Metrics, ProcessEvent, Reason, RunOptions,
    Runtime, SandboxOptions,
};

/// Exit status when sandlot itself fails (as docker and crun use it).
const EXIT_SANDLOT_ERROR: u8 = 125;
/// Exit status when the program does not exist in the sandbox.
const EXIT_NOT_FOUND: u8 = 127;
/// Exit status when the sandbox's timeout ended the run (as timeout(1)).
const EXIT_TIMED_OUT: u8 = 124;

/// The flags of `sandlot run`, shown by `sandlot --help` as well.
const RUN_FLAGS: &str = "\
sandlot run [OPTIONS] [-- CMD ARGS...]   (no CMD: the template's own command)
  -t, --template T          template to start from (default base)
      --timeout D           lifetime of the sandbox (default: the template's,
                            or 5m; 30s, 500ms, 1h)
  -e, --env KEY=VALUE       environment variable for the command (repeatable)
  -w, --workdir DIR         working directory inside the sandbox
  -u, --user USER           user name or uid[:gid] to run as
      --shell               run CMD ARGS through the template's shell
      --copy-in HOST:SB     copy a host file or directory in first (repeatable)
      --copy-out SB:HOST    copy a sandbox file or directory out after
      --memory SIZE         memory limit (default: the template's, or 512M;
                            64K, 256M, 1G)
      --cpus N              CPU limit in CPUs, fractional (default 1)
      --pids N              processes and threads at once (default 128)
      --disk SIZE           writable layer: /tmp, /dev/shm, changes (default 1G)
      --max-output SIZE     forward at most SIZE of stdout and of stderr each
      --exec-timeout D      kill the command after D (exit code 124)
      --stats               print the command's accounting to stderr as JSON
      --tty | --no-tty      run CMD on a terminal made in the sandbox (default:
                            when stdin and stdout are terminals)
Network (default: none, loopback only):
      --internet            outbound TCP to public addresses, DNS via sandlot
      --allow-out RULE      allow only what rules name: CIDR, IP, domain,
                            *.domain (repeatable)
      --deny-out RULE       deny what RULE names, whatever allows it
      --upstream-dns ADDR   resolver sandlot forwards to (default: the host's)
      --bandwidth RATE      bytes/s each way: 500K, 1M, 2G
      --publish [HOST:]HOSTPORT:PORT   forward a host port to PORT inside
                            (HOST default 127.0.0.1; HOSTPORT 0: any)
Exit code: the command's; 128+N for signal N; 124 timed out; 127 no such
program; 125 sandlot failed. See `sandlot run --help` for details.

sandlot code [-t T] [-l python|javascript|bash] [--json] [--cell-timeout D]
             [-c CELL]...                  run code cells in one context (no -c:
                                           one cell from stdin); exit 1 if one raised
sandlot repl [-t T] [-l LANGUAGE]          an interactive prompt on a context

sandlot template import NAME PATH [--dir]   an OCI layout (dir or .tar), or
                                           with --dir a rootfs directory
sandlot template ls | rm NAME
sandlot doctor                             check the kernel features sandlot needs";

#[derive(Parser)]
#[command(
    name = "sandlot",
    version,
    about = "Isolated sandboxes for untrusted code",
    after_help = RUN_FLAGS
)]
struct Cli {
    /// Where templates live (an ext4, xfs or btrfs directory).
    #[arg(
        long,
        global = true,
        default_value = "/var/lib/sandlot",
        env = "SANDLOT_DATA_DIR"
    )]
    data_dir: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a sandbox, run one command in it with this terminal's stdin,
    /// stdout and stderr, destroy the sandbox, and exit with the command's
    /// exit code (128+N if signal N ended it, 124 if the sandbox or the
    /// command timed out, 127 if the program does not exist, 125 if sandlot
    /// failed).
    Run(Box<RunArgs>),
    /// Create a sandbox, run code cells in one stateful context (Python,
    /// JavaScript or Bash) and print what each produced: stdout and stderr
    /// as they come, then the value of the last expression (with --json,
    /// one JSON object per cell per line). Without -c, one cell is read
    /// from stdin. Stops at the first cell that raised and exits 1;
    /// exits 0 when none did.
    Code(code::CodeArgs),
    /// An interactive prompt on a code context in a new sandbox:
    /// multi-line input (a block continues until an empty line), history,
    /// Ctrl-C interrupts the running cell, Ctrl-D leaves.
    Repl(repl::ReplArgs),
    /// Manage the named templates under the data dir.
    #[command(subcommand)]
    Template(TemplateCommand),
    /// Check the kernel features sandlot relies on (user namespaces,
    /// cgroups, overlayfs, idmapped mounts on the data dir, seccomp,
    /// openat2, memfd exec) and say how to fix what is missing. Exits 1 if
    /// something required is missing.
    Doctor,
    /// Serve E2B's API (control plane, envd, code interpreter) on this
    /// machine, so that the unmodified E2B SDKs run against sandlot: point
    /// E2B_API_URL and E2B_SANDBOX_URL at it and set E2B_API_KEY.
    Serve(Box<serve::ServeArgs>),
}

#[derive(Args)]
struct RunArgs {
    /// Template to start from (see `sandlot template ls`).
    #[arg(long, short, default_value = "base")]
    template: String,
    /// Lifetime of the sandbox, e.g. 30s, 5m, 1h, 500ms (default: the
    /// template's, or 5m).
    #[arg(long, value_parser = parse_duration)]
    timeout: Option<Duration>,
    /// Environment variable for the command (repeatable).
    #[arg(long = "env", short, value_name = "KEY=VALUE", value_parser = parse_env)]
    env: Vec<(String, String)>,
    /// Working directory inside the sandbox.
    #[arg(long, short = 'w', value_name = "DIR")]
    workdir: Option<String>,
    /// User to run as: a name from the sandbox's /etc/passwd or uid[:gid].
    #[arg(long, short)]
    user: Option<String>,
    /// Run CMD through the template's shell (`sh -c "CMD ARGS…"`).
    #[arg(long)]
    shell: bool,
    /// Memory limit, swap included: bytes or 512K, 256M, 1G (binary units).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    memory: Option<u64>,
    /// CPU limit in CPUs, fractional (0.5 = half of one CPU's time).
    #[arg(long, value_name = "N")]
    cpus: Option<f64>,
    /// Most processes and threads alive at once, init included.
    #[arg(long, value_name = "N")]
    pids: Option<u64>,
    /// Size of the writable layer (/tmp, /dev/shm and every change to the
    /// template's files), e.g. 100M.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    disk: Option<u64>,
    /// Forward at most SIZE bytes of stdout and of stderr each; the rest is
    /// discarded (the command runs on).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    max_output: Option<u64>,
    /// Kill the command (its process group) after this long, e.g. 10s;
    /// exit code 124.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    exec_timeout: Option<Duration>,
    /// Run the command on a terminal made inside the sandbox, this
    /// terminal in raw mode and its size forwarded (the default when stdin
    /// and stdout are terminals).
    #[arg(long, conflicts_with = "no_tty")]
    tty: bool,
    /// Never use a terminal: stdin, stdout and stderr are pipes.
    #[arg(long)]
    no_tty: bool,
    /// At exit, print the command's accounting to stderr as one JSON
    /// object: exit code or signal, reason (exited, signaled, timed_out,
    /// oom_killed, output_limit, sandbox_destroyed), wall and CPU time,
    /// peak RSS, truncation, and the sandbox's cgroup counters.
    #[arg(long)]
    stats: bool,
    /// Copy a host file or directory into the sandbox before the command
    /// (repeatable; into SANDBOX if it is a directory or ends in /).
    #[arg(long = "copy-in", value_name = "HOST:SANDBOX", value_parser = copy::parse_copy_in)]
    copy_in: Vec<copy::CopyIn>,
    /// Copy a sandbox file or directory to the host after the command, even
    /// when it failed (repeatable; into HOST if it is a directory or ends
    /// in /).
    #[arg(long = "copy-out", value_name = "SANDBOX:HOST", value_parser = copy::parse_copy_out)]
    copy_out: Vec<copy::CopyOut>,
    #[command(flatten)]
    network: network::NetworkArgs,
    /// The command and its arguments (default: the template's Entrypoint
    /// and Cmd).
    #[arg(last = true, value_name = "CMD")]
    command: Vec<String>,
}

#[derive(Subcommand)]
enum TemplateCommand {
    /// Import an OCI image layout (directory or .tar) or a root filesystem
    /// directory as template NAME.
    Import {
        name: String,
        path: PathBuf,
        /// PATH is a root filesystem directory, used in place.
        #[arg(long)]
        dir: bool,
    },
    /// List templates.
    Ls,
    /// Remove template NAME and the layers nothing else uses.
    Rm { name: String },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run(&cli.data_dir, *args),
        Command::Code(args) => code::main(&cli.data_dir, args),
        Command::Repl(args) => repl::main(&cli.data_dir, args),
        Command::Template(command) => template(&cli.data_dir, command).map(|()| ExitCode::SUCCESS),
        Command::Doctor => Ok(doctor(&cli.data_dir)),
        Command::Serve(args) => Ok(serve::serve(&cli.data_dir, *args)),
    };
    result.unwrap_or_else(|e| {
        eprintln!("sandlot: {e}");
        ExitCode::from(match e {
            Error::CommandNotFound { .. } => EXIT_NOT_FOUND,
            _ => EXIT_SANDLOT_ERROR,
        })
    })
}

fn doctor(data_dir: &Path) -> ExitCode {
    let report = sandlot::doctor::check(data_dir);
    print!("{report}");
    if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn run(data_dir: &PathBuf, args: RunArgs) -> Result<ExitCode, Error> {
    let runtime = Runtime::builder().data_dir(data_dir).build()?;
    let mut options = SandboxOptions::template(&args.template);
    if let Some(timeout) = args.timeout {
        options = options.timeout(timeout);
    }
    // Only the limits given here: the template's settings fill in the rest.
    if let Some(memory) = args.memory {
        options.limits.memory = memory;
        options.explicit.memory = true;
    }
    if let Some(cpus) = args.cpus {
        options.limits.cpus = cpus;
        options.explicit.cpus = true;
    }
    if let Some(pids) = args.pids {
        options.limits.pids = pids;
        options.explicit.pids = true;
    }
    if let Some(disk) = args.disk {
        options = options.disk(disk);
    }
    options = options.exec_limits(ExecLimits {
        max_time: args.exec_timeout,
        max_output_bytes: args.max_output,
        max_concurrent: None,
    });
    for (key, value) in &args.env {
        options = options.env(key, value);
    }
    options = options.network(args.network.network());
    let sandbox = runtime.create(options)?;
    if let Err(e) = args.network.publish(&sandbox) {
        sandbox.kill()?;
        return Err(e);
    }
    let cmd = if args.command.is_empty() {
        match sandbox.default_command() {
            Some(argv) => Cmd::Argv(argv),
            None => {
                sandbox.kill()?;
                return Err(Error::InvalidOptions {
                    option: "command",
                    reason: format!(
                        "none given and template {:?} has no Entrypoint or Cmd",
                        args.template
                    ),
                });
            }
        }
    } else if args.shell {
        Cmd::Shell(args.command.join(" "))
    } else {
        Cmd::Argv(args.command)
    };
    for copy in &args.copy_in {
        if let Err(e) = copy::copy_in(&sandbox, copy) {
            sandbox.kill()?;
            return Err(e);
        }
    }
    let on_tty = tty::wanted(args.tty, args.no_tty);
    let run_options = RunOptions {
        cwd: args.workdir,
        user: args.user,
        ..RunOptions::default()
    };
    let result = if on_tty {
        sandbox
            .commands()
            .spawn_pty(cmd, tty::host_size(), run_options)
            .and_then(tty::attach)
    } else {
        run_piped(&sandbox, cmd, run_options.stdin_piped())
    };
    let timed_out = sandbox.end_reason() == Some(Reason::Timeout);
    // Read before the kill: the cgroup goes with the sandbox.
    let metrics = sandbox.metrics().ok();
    let lifetime = {
        let info = sandbox.info();
        info.end_at
            .duration_since(info.created_at)
            .unwrap_or_default()
    };
    let copied_out = if timed_out {
        Ok(())
    } else {
        args.copy_out
            .iter()
            .try_for_each(|copy| copy::copy_out(&sandbox, copy))
    };
    sandbox.kill()?;
    let exit = result?;
    if args.stats {
        eprintln!("{}", stats_json(&exit, metrics.as_ref()));
    }
    if timed_out && exit.reason == ExitReason::SandboxDestroyed {
        eprintln!("sandlot: the sandbox timed out after {lifetime:?}");
        return Ok(ExitCode::from(EXIT_TIMED_OUT));
    }
    copied_out?;
    if exit.reason == ExitReason::TimedOut {
        return Ok(ExitCode::from(EXIT_TIMED_OUT));
    }
    Ok(ExitCode::from(exit.shell_code().clamp(0, 255) as u8))
}

/// Runs the command with pipes: this process's stdin copied to it, its
/// stdout and stderr to ours.
fn run_piped(
    sandbox: &sandlot::Sandbox,
    cmd: Cmd,
    run_options: RunOptions,
) -> Result<CommandExit, Error> {
    let mut process = sandbox.commands().spawn(cmd, run_options)?;
    if let Some(mut stdin) = process.take_stdin() {
        // Detached: it may block on a terminal that never sends EOF.
        std::thread::spawn(move || {
            let mut buf = [0u8; 64 * 1024];
            let mut input = std::io::stdin().lock();
            while let Ok(n) = input.read(&mut buf) {
                if n == 0 || stdin.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        });
    }
    let mut stdout = std::io::stdout().lock();
    let mut stderr = std::io::stderr().lock();
    for event in process.events().iter() {
        match event {
            ProcessEvent::Stdout(chunk) => {
                let _ = stdout.write_all(&chunk).and_then(|()| stdout.flush());
            }
            ProcessEvent::Stderr(chunk) => {
                let _ = stderr.write_all(&chunk).and_then(|()| stderr.flush());
            }
            ProcessEvent::Exit(exit) => return Ok(exit),
        }
    }
    Err(Error::Protocol {
        id: sandbox.id().to_string(),
        reason: "the command ended without an exit report".into(),
    })
}

/// The accounting of `--stats`: one line of JSON.
fn stats_json(exit: &CommandExit, metrics: Option<&Metrics>) -> serde_json::Value {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let mut stats = serde_json::json!({
        "exit_code": exit.code,
        "signal": exit.signal.map(|s| s.as_raw()),
        "reason": exit.reason.as_str(),
        "wall_ms": ms(exit.duration),
        "cpu_user_ms": ms(exit.cpu_user),
        "cpu_system_ms": ms(exit.cpu_system),
        "peak_rss_bytes": exit.peak_rss_bytes,
        "stdout_truncated": exit.stdout_truncated,
        "stderr_truncated": exit.stderr_truncated,
    });
    if let Some(m) = metrics {
        stats["sandbox"] = serde_json::json!({
            "cpu_usage_ns": m.cpu_usage_ns,
            "memory_peak_bytes": m.memory_peak,
            "memory_limit_bytes": m.memory_limit,
            "oom_kills": m.oom_kills,
            "disk_used_bytes": m.disk_used,
            "processes": m.processes,
        });
    }
    stats
}

fn template(data_dir: &PathBuf, command: TemplateCommand) -> Result<(), Error> {
    let store = sandlot_rootfs::Store::open(data_dir).map_err(|source| Error::Template {
        name: String::new(),
        source,
    })?;
    let wrap = |name: &str| {
        let name = name.to_string();
        move |source| Error::Template { name, source }
    };
    match command {
        TemplateCommand::Import { name, path, dir } => {
            let template = if dir {
                store.import_dir(&name, &path)
            } else {
                store.import_oci(&name, &path)
            }
            .map_err(wrap(&name))?;
            println!(
                "imported {} ({} layers)",
                template.name,
                template.layers.len()
            );
        }
        TemplateCommand::Ls => {
            println!(
                "{:<24} {:<8} {:>7} {:>12}",
                "NAME", "KIND", "LAYERS", "SIZE"
            );
            for t in store.list().map_err(wrap(""))? {
                println!(
                    "{:<24} {:<8} {:>7} {:>12}",
                    t.name,
                    t.kind.label(),
                    t.layers,
                    t.size
                );
            }
        }
        TemplateCommand::Rm { name } => {
            store.remove(&name).map_err(wrap(&name))?;
            println!("removed {name}");
        }
    }
    Ok(())
}
