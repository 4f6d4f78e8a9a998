//! The `sandlot` command: run a command in a fresh sandbox, keep
//! long-lived sandboxes (create, exec, ls, inspect, stop, kill, …), manage
//! templates. Thin: everything it does is library API.

mod code;
mod copy;
mod forward;
mod manage;
mod network;
mod options;
mod parse;
mod repl;
mod serve;
mod tty;

use forward::{EXIT_NOT_FOUND, EXIT_SANDLOT_ERROR};
use options::SandboxArgs;
use parse::parse_duration;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use sandlot::{Cmd, CommandExit, Error, ExitReason, Metrics, Reason, RunOptions, Runtime};

use forward::EXIT_TIMED_OUT;

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
Long-lived sandboxes (in the state dir, /run/sandlot or --state-dir):
sandlot create [run's sandbox flags] [--idle-timeout D] [--metadata K=V]...
sandlot exec ID [-e K=V] [-w DIR] [-u USER] [-i] -- CMD...
sandlot ls [--json] [--all] [--state S] [--metadata K=V]
sandlot inspect ID | stop ID [--grace D] | kill ID | pause ID | resume ID
sandlot set-timeout ID D | cp ID:PATH HOST | cp HOST ID:PATH | stats ID [--json]
An unknown ID exits 125 naming it.

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
    /// Where long-lived sandboxes are recorded (create, exec, ls, …).
    #[arg(
        long,
        global = true,
        default_value = "/run/sandlot",
        env = "SANDLOT_STATE_DIR"
    )]
    state_dir: PathBuf,
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
    /// Create a sandbox that outlives this command, print its id and exit.
    /// It lives until its timeout (or idle timeout), `stop` or `kill`.
    Create(Box<manage::CreateArgs>),
    /// Run a command in a sandbox made by `create`, with this terminal's
    /// stdout and stderr (stdin with -i); exit codes as `run`. A paused
    /// sandbox refuses at once: resume it first.
    Exec(manage::ExecArgs),
    /// List the live sandboxes (--all: and those ended recently, with why).
    Ls(manage::LsArgs),
    /// One sandbox as a JSON object: id, state, template, metadata, limits,
    /// created_at, end_at, idle_timeout, end_reason (also once ended).
    Inspect { id: String },
    /// End a sandbox gracefully: SIGTERM to its processes, up to the grace
    /// for them to end, then SIGKILL.
    Stop {
        id: String,
        /// How long its processes get after SIGTERM.
        #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "10s")]
        grace: Duration,
    },
    /// End a sandbox now.
    Kill { id: String },
    /// Freeze every process of a sandbox.
    Pause { id: String },
    /// Let a paused sandbox's processes run again.
    Resume { id: String },
    /// Set a sandbox's remaining lifetime, from now (longer or shorter).
    SetTimeout {
        id: String,
        #[arg(value_parser = parse_duration, value_name = "DURATION")]
        timeout: Duration,
    },
    /// Copy a file or directory into a sandbox (`cp HOST ID:PATH`) or out
    /// of one (`cp ID:PATH HOST`), as `cp -r` names copies.
    Cp { src: String, dst: String },
    /// What a sandbox uses now: CPU, memory, disk, processes, OOM kills.
    Stats {
        id: String,
        #[arg(long)]
        json: bool,
    },
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
    #[command(flatten)]
    sandbox: SandboxArgs,
    /// Working directory inside the sandbox.
    #[arg(long, short = 'w', value_name = "DIR")]
    workdir: Option<String>,
    /// User to run as: a name from the sandbox's /etc/passwd or uid[:gid].
    #[arg(long, short)]
    user: Option<String>,
    /// Run CMD through the template's shell (`sh -c "CMD ARGS…"`).
    #[arg(long)]
    shell: bool,
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
    let creates = matches!(cli.command, Command::Create(_));
    let managed = |f: &mut dyn FnMut(&Runtime) -> Result<ExitCode, Error>| {
        manage::runtime(&cli.data_dir, &cli.state_dir, creates).and_then(|rt| f(&rt))
    };
    let result = match cli.command {
        Command::Run(args) => run(&cli.data_dir, *args),
        Command::Code(args) => code::main(&cli.data_dir, args),
        Command::Repl(args) => repl::main(&cli.data_dir, args),
        Command::Create(ref args) => managed(&mut |rt| manage::create(rt, args)),
        Command::Exec(ref args) => managed(&mut |rt| manage::exec(rt, args)),
        Command::Ls(ref args) => managed(&mut |rt| manage::ls(rt, args)),
        Command::Inspect { ref id } => managed(&mut |rt| manage::inspect(rt, id)),
        Command::Stop { ref id, grace } => managed(&mut |rt| manage::stop(rt, id, grace)),
        Command::Kill { ref id } => managed(&mut |rt| manage::kill(rt, id)),
        Command::Pause { ref id } => managed(&mut |rt| manage::pause(rt, id)),
        Command::Resume { ref id } => managed(&mut |rt| manage::resume(rt, id)),
        Command::SetTimeout { ref id, timeout } => {
            managed(&mut |rt| manage::set_timeout(rt, id, timeout))
        }
        Command::Cp { ref src, ref dst } => managed(&mut |rt| manage::cp(rt, src, dst)),
        Command::Stats { ref id, json } => managed(&mut |rt| manage::stats(rt, id, json)),
        Command::Template(command) => template(&cli.data_dir, command).map(|()| ExitCode::SUCCESS),
        Command::Doctor => Ok(doctor(&cli.data_dir)),
        Command::Serve(args) => Ok(serve::serve(&cli.data_dir, &cli.state_dir, *args)),
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
    // Only the limits given here: the template's settings fill in the rest.
    let options = args.sandbox.options().network(args.network.network());
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
                        args.sandbox.template
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
        sandbox
            .commands()
            .spawn(cmd, run_options.stdin_piped())
            .and_then(|process| forward::forward(&sandbox, process))
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
