//! `sandlot run --tty`, `sandlot code` and `sandlot repl` as a person or a
//! script uses them (root, real kernel). The terminal tests run sandlot on
//! a pseudo-terminal the test opens, as its controlling terminal, and play
//! the person at the other end.

use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::termios::{self, LocalFlags};

fn require_root() {
    let euid = nix::unistd::geteuid().as_raw();
    assert_eq!(
        euid, 0,
        "the CLI tests create sandboxes and must run as root (euid is {euid}): run `sudo -E cargo test --workspace`"
    );
}

fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/sandlot-test-data")
}

fn sandlot_cmd(args: &[&str]) -> Command {
    require_root();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sandlot"));
    cmd.arg("--data-dir").arg(data_dir()).args(args);
    cmd
}

/// Runs sandlot with pipes; `stdin` is written and closed.
fn sandlot(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = sandlot_cmd(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start sandlot");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

// ---- sandlot code ------------------------------------------------------

#[test]
fn code_json_prints_one_object_per_cell_and_exits_1_at_the_first_raise() {
    let out = sandlot(
        &[
            "code",
            "--json",
            "-c",
            "x = 1",
            "-c",
            "print('out'); x + 1",
            "-c",
            "1/0",
            "-c",
            "x",
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(1), "stderr: {}", text(&out.stderr));
    let lines: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON object per line"))
        .collect();
    assert_eq!(lines.len(), 3, "stops at the cell that raised");
    assert_eq!(lines[0]["results"], serde_json::json!([]));
    assert_eq!(lines[0]["error"], serde_json::Value::Null);
    assert_eq!(lines[0]["execution_count"], 1);
    let stdout: Vec<&str> = lines[1]["stdout"]
        .as_array()
        .unwrap()
        .iter()
        .map(|piece| piece.as_str().unwrap())
        .collect();
    assert_eq!(stdout.concat(), "out\n");
    assert_eq!(
        lines[1]["results"],
        serde_json::json!([{"text": "2", "is_main_result": true}])
    );
    assert_eq!(lines[1]["execution_count"], 2);
    assert_eq!(lines[2]["error"]["name"], "ZeroDivisionError");
    assert_eq!(lines[2]["error"]["value"], "division by zero");
    assert!(lines[2]["error"]["traceback"]
        .as_str()
        .unwrap()
        .contains("1/0"));
}

#[test]
fn code_reads_a_cell_from_stdin_and_prints_output_then_the_result() {
    let out = sandlot(&["code"], b"print('hi')\n6 * 7\n");
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "hi\n42\n");

    let bash = sandlot(
        &[
            "code",
            "--language",
            "bash",
            "-c",
            "cd /tmp; X=5",
            "-c",
            "echo $X $PWD",
        ],
        b"",
    );
    assert_eq!(bash.status.code(), Some(0));
    assert_eq!(text(&bash.stdout), "5 /tmp\n");

    let node = sandlot(
        &[
            "code",
            "-l",
            "javascript",
            "-c",
            "let a = 2",
            "-c",
            "a * 21",
        ],
        b"",
    );
    assert_eq!(text(&node.stdout), "42\n");

    let slow = sandlot(
        &["code", "--cell-timeout", "300ms", "-c", "while True: pass"],
        b"",
    );
    assert_eq!(slow.status.code(), Some(1));
    assert!(
        text(&slow.stderr).contains("KeyboardInterrupt"),
        "{}",
        text(&slow.stderr)
    );

    let bad = sandlot(&["code", "--language", "cobol", "-c", "x"], b"");
    assert_eq!(
        bad.status.code(),
        Some(2),
        "clap refuses an unknown language"
    );
    assert!(text(&bad.stderr).contains("cobol"));
}

// ---- a terminal the test holds ------------------------------------------

/// A pseudo-terminal: the test keeps the master, sandlot gets the slave as
/// its controlling terminal.
struct Terminal {
    master: OwnedFd,
    slave: OwnedFd,
    seen: String,
    /// Where the last pattern waited for ended: the next wait looks after
    /// it (a prompt that shows again is a new prompt).
    mark: usize,
}

impl Terminal {
    fn new(rows: u16, cols: u16) -> Terminal {
        // SAFETY: a NUL-terminated path; open returns a new descriptor or -1.
        let fd = unsafe {
            libc::open(
                c"/dev/ptmx".as_ptr(),
                libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
            )
        };
        assert!(fd >= 0, "open /dev/ptmx");
        // SAFETY: a fresh descriptor owned by nobody else.
        let master = unsafe { OwnedFd::from_raw_fd(fd) };
        let unlock: libc::c_int = 0;
        // SAFETY: TIOCSPTLCK reads one int; TIOCGPTPEER returns a new fd.
        let slave = unsafe {
            assert_eq!(
                libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock),
                0
            );
            libc::ioctl(
                master.as_raw_fd(),
                libc::TIOCGPTPEER,
                libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
            )
        };
        assert!(slave >= 0, "TIOCGPTPEER");
        // SAFETY: a fresh descriptor owned by nobody else.
        let slave = unsafe { OwnedFd::from_raw_fd(slave) };
        let terminal = Terminal {
            master,
            slave,
            seen: String::new(),
            mark: 0,
        };
        terminal.resize(rows, cols);
        terminal
    }

    fn resize(&self, rows: u16, cols: u16) {
        let size = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads one winsize from a live local.
        let rc = unsafe { libc::ioctl(self.master.as_raw_fd(), libc::TIOCSWINSZ, &size) };
        assert_eq!(rc, 0);
    }

    /// Starts sandlot on this terminal: a new session, the slave its
    /// controlling terminal and its stdin, stdout and stderr.
    fn spawn(&self, args: &[&str]) -> Child {
        self.spawn_with(args, &[])
    }

    fn spawn_with(&self, args: &[&str], env: &[(&str, &str)]) -> Child {
        let mut cmd = sandlot_cmd(args);
        cmd.env("TERM", "xterm").envs(env.iter().copied());
        for stream in 0..3 {
            let fd = self.slave.try_clone().unwrap();
            match stream {
                0 => cmd.stdin(Stdio::from(fd)),
                1 => cmd.stdout(Stdio::from(fd)),
                _ => cmd.stderr(Stdio::from(fd)),
            };
        }
        // SAFETY: setsid and ioctl are async-signal-safe and touch only
        // the child's own session and descriptor 0.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() == -1 || libc::ioctl(0, libc::TIOCSCTTY, 0) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd.spawn().expect("start sandlot on the terminal")
    }

    fn write(&self, bytes: &[u8]) {
        nix::unistd::write(&self.master, bytes).expect("type into the terminal");
    }

    /// Reads until `pattern` shows up after the previous one.
    fn read_until(&mut self, pattern: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut buf = [0u8; 4096];
        loop {
            if let Some(at) = self.seen[self.mark..].find(pattern) {
                self.mark += at + pattern.len();
                return;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "waited for {pattern:?}; the terminal showed {:?}",
                self.seen
            );
            let mut fds = [nix::poll::PollFd::new(
                self.master.as_fd(),
                nix::poll::PollFlags::POLLIN,
            )];
            let ms = nix::poll::PollTimeout::try_from(left.as_millis().min(1000) as i32).unwrap();
            if nix::poll::poll(&mut fds, ms).unwrap_or(0) == 0 {
                continue;
            }
            match nix::unistd::read(self.master.as_fd(), &mut buf) {
                Ok(n) if n > 0 => self.seen.push_str(&String::from_utf8_lossy(&buf[..n])),
                _ => panic!("the terminal closed; it showed {:?}", self.seen),
            }
        }
    }

    fn slave(&self) -> BorrowedFd<'_> {
        self.slave.as_fd()
    }

    fn is_raw(&self) -> bool {
        let attrs = termios::tcgetattr(self.slave()).unwrap();
        !attrs
            .local_flags
            .intersects(LocalFlags::ICANON | LocalFlags::ECHO)
    }
}

fn wait(child: &mut Child) -> Option<i32> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("sandlot did not exit");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn eventually(mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check() {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

#[test]
fn run_on_a_terminal_is_raw_follows_the_window_size_and_restores_the_terminal() {
    let mut term = Terminal::new(30, 100);
    let before = termios::tcgetattr(term.slave()).unwrap();
    let mut child = term.spawn(&[
        "run",
        "--",
        "sh",
        "-c",
        "test -t 0 && test -t 1 && echo on-a-tty; stty size; \
         while [ \"$(stty size)\" != '40 120' ]; do sleep 0.05; done; echo resized; \
         read -r line; echo \"got $line\"",
    ]);
    term.read_until("on-a-tty\r\n30 100\r\n");
    assert!(term.is_raw(), "sandlot put its terminal in raw mode");
    // The window changes: the kernel tells sandlot (SIGWINCH), which
    // resizes the sandbox's terminal.
    term.resize(40, 120);
    term.read_until("resized\r\n");
    term.write(b"hello\r");
    term.read_until("got hello\r\n");
    assert_eq!(wait(&mut child), Some(0));
    let after = termios::tcgetattr(term.slave()).unwrap();
    assert_eq!(after.local_flags, before.local_flags, "terminal restored");
    assert_eq!(after.input_flags, before.input_flags);
    assert_eq!(after.output_flags, before.output_flags);
}

#[test]
fn ctrl_c_goes_to_the_sandbox_and_sigterm_still_restores_the_terminal() {
    let mut term = Terminal::new(24, 80);
    let mut child = term.spawn(&[
        "run",
        "--",
        "sh",
        "-c",
        "trap 'echo caught-int' INT; echo ready; while :; do sleep 0.05; done",
    ]);
    term.read_until("ready\r\n");
    // Raw mode: Ctrl-C is a byte for the sandbox's terminal, which turns
    // it into SIGINT there; sandlot itself lives on.
    term.write(b"\x03");
    term.read_until("caught-int");
    assert!(term.is_raw());
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert_eq!(wait(&mut child), Some(128 + libc::SIGKILL));
    assert!(!term.is_raw(), "terminal restored after SIGTERM");
}

#[test]
fn no_tty_keeps_pipes_and_tty_can_be_forced_without_a_terminal() {
    let mut term = Terminal::new(24, 80);
    let mut child = term.spawn(&[
        "run",
        "--no-tty",
        "--",
        "sh",
        "-c",
        "test -t 0 || echo not-a-tty",
    ]);
    term.read_until("not-a-tty\r\n");
    assert_eq!(wait(&mut child), Some(0));

    let forced = sandlot(
        &[
            "run",
            "--tty",
            "--",
            "sh",
            "-c",
            "test -t 0 && echo yes; cat",
        ],
        b"typed\n",
    );
    assert_eq!(forced.status.code(), Some(0), "{}", text(&forced.stderr));
    let out = text(&forced.stdout);
    // The terminal echoes the input whenever it arrives, and cat prints it
    // again once it reads it.
    assert!(out.contains("yes\r\n"), "{out:?}");
    assert_eq!(out.matches("typed\r\n").count(), 2, "{out:?}");
}

#[test]
fn repl_takes_multi_line_cells_and_ctrl_c_interrupts_a_running_one() {
    let mut term = Terminal::new(24, 80);
    // The history file goes to $HOME: a scratch one, not root's.
    let home = data_dir().join(format!("../cli-repl-home-{}", std::process::id()));
    std::fs::create_dir_all(&home).unwrap();
    let _cleanup = RemoveDir(home.clone());
    let mut child = term.spawn_with(&["repl"], &[("HOME", home.to_str().unwrap())]);
    // A person types at a prompt: rustyline drops what was typed ahead of
    // it, so each cell waits for its prompt.
    term.read_until(">>> ");
    term.write(b"def double(x):\r");
    term.write(b"    return x * 2\r");
    term.write(b"\r");
    term.read_until(">>> ");
    term.write(b"double(21)\r");
    term.read_until("42\r\n");
    term.read_until(">>> ");
    term.write(b"print('sleep' + 'ing'); import time; time.sleep(100)\r");
    term.read_until("sleeping\r\n");
    term.write(b"\x03");
    term.read_until("KeyboardInterrupt");
    term.read_until(">>> ");
    term.write(b"double(4)\r");
    term.read_until("8\r\n");
    term.read_until(">>> ");
    term.write(b"\x04");
    assert_eq!(wait(&mut child), Some(0));
    assert!(eventually(|| !term.is_raw()));
    let history = std::fs::read_to_string(home.join(".sandlot_history")).unwrap();
    assert!(history.contains("double(21)"), "{history:?}");
}

struct RemoveDir(PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
