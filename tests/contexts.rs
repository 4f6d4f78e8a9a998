//! Code contexts in real sandboxes (root, real kernel): each interpreter
//! runs inside through init, as the template's user or the context's, with
//! the host owning its pipes. The base template binds the host's /usr, so
//! Debian's python3 (with python3-ipython and python3-matplotlib), nodejs
//! and bash are what runs; `.ci/run` installs them.

use std::sync::{mpsc, Arc, RwLock};
use std::time::Duration;

use sandlot::code::{
    CellOptions, CodeContextOptions, Context, ContextState, Execution, Language, CONTEXT_EXITED,
    TIMEOUT_ERROR,
};
use sandlot::{Error, ExecLimits, Sandbox, State};
use sandlot_tests::{census, eventually, options, runtime, sandbox, sh, warmed_runtime};

/// The census test counts the whole process's descriptors and children: it
/// runs alone, every other test shares.
static FD_CENSUS: RwLock<()> = RwLock::new(());

fn shared() -> std::sync::RwLockReadGuard<'static, ()> {
    FD_CENSUS.read().unwrap_or_else(|e| e.into_inner())
}

fn context(sb: &Sandbox, options: CodeContextOptions) -> Context {
    sb.code()
        .create_context(options)
        .unwrap_or_else(|e| panic!("create context: {e}"))
}

fn run(sb: &Sandbox, ctx: &Context, code: &str) -> Execution {
    sb.code()
        .run(ctx, code, CellOptions::default())
        .unwrap_or_else(|e| panic!("cell {code:?}: {e}"))
}

fn ok(sb: &Sandbox, ctx: &Context, code: &str) -> Execution {
    let execution = run(sb, ctx, code);
    assert!(
        execution.error.is_none(),
        "cell {code:?} failed: {:?}\nstderr: {}",
        execution.error,
        execution.stderr_text()
    );
    execution
}

/// Both Python drivers: the standard-library one and IPython.
fn python_variants() -> [(&'static str, CodeContextOptions); 2] {
    let base = CodeContextOptions::new(Language::Python);
    [
        ("stdlib", base.clone().ipython(false)),
        ("ipython", base.ipython(true)),
    ]
}

#[test]
fn run_code_keeps_state_and_the_trailing_expression_is_the_main_result() {
    let _shared = shared();
    let rt = runtime();
    let sb = sandbox(&rt);
    let first = sb.run_code("x = 41\ndef f(v):\n    return v + 1").unwrap();
    assert!(first.error.is_none(), "{:?}", first.error);
    assert!(first.results.is_empty(), "a trailing def gives no result");
    assert_eq!(first.execution_count, 1, "the first cell is cell 1");
    let second = sb.run_code("print('hello')\nf(x)").unwrap();
    assert_eq!(second.stdout_text(), "hello\n");
    assert_eq!(second.text(), Some("42"));
    assert!(second.results[0].is_main_result);
    assert_eq!(second.execution_count, first.execution_count + 1);
    let assigned = sb.run_code("y = f(x)").unwrap();
    assert!(
        assigned.results.is_empty(),
        "a trailing assignment gives none"
    );
    // One default context, listed as such, on IPython (the host's /usr has it).
    let list = sb.code().list();
    assert_eq!(list.len(), 1);
    assert!(list[0].is_default);
    assert_eq!(list[0].language, Language::Python);
    let ctx = sb.code().get(&list[0].id).unwrap();
    assert!(sb.code().uses_ipython(&ctx).unwrap());
}

#[test]
fn python_exception_names_the_cell_line_and_the_context_lives_on() {
    let _shared = shared();
    let rt = runtime();
    let sb = sandbox(&rt);
    for (driver, options) in python_variants() {
        let ctx = context(&sb, options);
        ok(&sb, &ctx, "kept = 'still here'");
        let failed = run(&sb, &ctx, "a = 1\nb = 0\nprint('before')\nc = a / b");
        let error = failed.error.clone().expect("an error");
        assert_eq!(error.name, "ZeroDivisionError", "{driver}");
        assert_eq!(error.value, "division by zero", "{driver}");
        assert!(
            error.traceback.contains("c = a / b"),
            "{driver}: {}",
            error.traceback
        );
        assert!(
            error.traceback.contains("line 4"),
            "{driver}: {}",
            error.traceback
        );
        assert_eq!(failed.stdout_text(), "before\n", "{driver}");
        assert!(!failed.state_lost);
        assert_eq!(
            ok(&sb, &ctx, "kept").text(),
            Some("'still here'"),
            "{driver}"
        );
    }
}

#[test]
fn a_cell_past_its_timeout_is_interrupted_and_the_next_sees_earlier_state() {
    let _shared = shared();
    let rt = runtime();
    let sb = sandbox(&rt);
    for (driver, options) in python_variants() {
        let ctx = context(&sb, options);
        ok(&sb, &ctx, "counter = 7");
        let pid = sb
            .code()
            .list()
            .iter()
            .find(|c| c.id == ctx.id)
            .unwrap()
            .pid;
        let execution = sb
            .code()
            .run(
                &ctx,
                "while True:\n    pass",
                CellOptions::default().timeout(Duration::from_millis(500)),
            )
            .unwrap();
        assert!(execution.timed_out, "{driver}");
        assert!(!execution.state_lost, "{driver}: {:?}", execution.error);
        assert_eq!(
            execution.error.unwrap().name,
            "KeyboardInterrupt",
            "{driver}"
        );
        assert_eq!(ok(&sb, &ctx, "counter + 1").text(), Some("8"), "{driver}");
        let now = sb
            .code()
            .list()
            .iter()
            .find(|c| c.id == ctx.id)
            .unwrap()
            .pid;
        assert_eq!(now, pid, "{driver}: the same interpreter");
    }
}

#[test]
fn a_cell_ignoring_sigint_is_killed_and_the_context_restarts_with_state_lost() {
    let _shared = shared();
    let rt = runtime();
    let sb = sandbox(&rt);
    let ctx = context(
        &sb,
        CodeContextOptions::new(Language::Python)
            .ipython(false)
            .interrupt_grace(Duration::from_millis(300)),
    );
    ok(&sb, &ctx, "lost = 1");
    let old_pid = sb.code().list()[0].pid.unwrap();
    let cell = "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True:\n    pass";
    let execution = sb
        .code()
        .run(
            &ctx,
            cell,
            CellOptions::default().timeout(Duration::from_millis(300)),
        )
        .unwrap();
    assert!(execution.timed_out);
    assert!(execution.state_lost);
    let error = execution.error.unwrap();
    assert_eq!(error.name, TIMEOUT_ERROR);
    assert!(error.value.contains("state lost"), "{}", error.value);
    // Killed inside the sandbox, and reaped there.
    let ps = sh(
        &sb,
        &format!("test -e /proc/{old_pid} && echo alive || echo gone"),
    );
    assert_eq!(ps.trim(), "gone");
    assert_eq!(sb.code().list()[0].state, ContextState::Dead);
    let after = run(&sb, &ctx, "lost");
    assert_eq!(after.error.unwrap().name, "NameError");
    assert_eq!(after.execution_count, 1, "a new interpreter counts from 1");
}

#[test]
fn stdout_reaches_the_callback_while_the_cell_still_runs() {
    let _shared = shared();
    let rt = runtime();
    let sb = Arc::new(sandbox(&rt));
    for (language, cell) in [
        (
            Language::Python,
            "import os, time\nprint('first line')\nwhile not os.path.exists('/tmp/release'):\n    time.sleep(0.01)\nprint('second')",
        ),
        (
            Language::Bash,
            "echo 'first line'; while [ ! -e /tmp/release ]; do sleep 0.01; done; echo second",
        ),
        (
            Language::JavaScript,
            "console.log('first line');\nconst fs = require('fs');\nwhile (!fs.existsSync('/tmp/release')) { await new Promise(r => setTimeout(r, 10)); }\nconsole.log('second');",
        ),
    ] {
        let _ = sb.files().remove("/tmp/release");
        let ctx = context(&sb, CodeContextOptions::new(language).ipython(false));
        let (tx, rx) = mpsc::channel::<String>();
        let runner = {
            let sb = sb.clone();
            std::thread::spawn(move || {
                let tx = std::sync::Mutex::new(tx);
                let options = CellOptions::default()
                    .timeout(Duration::from_secs(30))
                    .on_stdout(move |text| {
                        let _ = tx.lock().unwrap().send(text.to_string());
                    });
                sb.code().run(&ctx, cell, options).unwrap()
            })
        };
        // The cell cannot end before the file exists: a line seen here was
        // streamed while it ran.
        let seen = rx.recv_timeout(Duration::from_secs(20)).expect("first line streamed");
        assert!(seen.starts_with("first line"), "{language}: {seen:?}");
        assert!(!runner.is_finished(), "{language}: the cell still waits");
        assert_eq!(sb.state(), State::Active, "{language}: a running cell is activity");
        sb.files().write("/tmp/release", b"").unwrap();
        let execution = runner.join().unwrap();
        assert!(execution.error.is_none(), "{language}: {:?}", execution.error);
        assert_eq!(execution.stdout_text(), "first line\nsecond\n", "{language}");
    }
    assert!(
        eventually(Duration::from_secs(2), || sb.state() == State::Running),
        "an interpreter waiting between cells is not activity"
    );
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn eight_mib_arrive_intact_and_a_hundred_mib_are_truncated_with_memory_bounded() {
    let _shared = shared();
    let rt = runtime();
    let sb = sandbox(&rt);
    let ctx = context(
        &sb,
        CodeContextOptions::new(Language::Python).ipython(false),
    );
    let cell = "import sys\nfor i in range(1 << 17):\n    sys.stdout.write('%063d\\n' % i)";
    let execution = ok(&sb, &ctx, cell);
    assert!(!execution.stdout_truncated);
    let text = execution.stdout_text();
    assert_eq!(text.len(), 8 << 20);
    for (i, line) in text.lines().enumerate() {
        assert_eq!(line, format!("{i:063}"), "line {i}");
    }
    drop(text);
    drop(execution);

    let before = rss_kib();
    let cell = "import sys\nchunk = 'y' * (1 << 20)\nfor _ in range(100):\n    sys.stdout.write(chunk)\nprint('done', file=sys.stderr)";
    let execution = ok(&sb, &ctx, cell);
    let growth_mib = rss_kib().saturating_sub(before) / 1024;
    assert!(execution.stdout_truncated);
    assert_eq!(
        execution.stdout_text().len(),
        16 << 20,
        "the default cap is kept"
    );
    assert_eq!(execution.stderr_text(), "done\n", "the cell ran to its end");
    assert!(
        growth_mib < 64,
        "host memory grew by {growth_mib} MiB for 100 MiB of output"
    );
}

#[test]
fn two_contexts_never_share_state() {
    let _shared = shared();
    let rt = runtime();
    let sb = sandbox(&rt);
    let a = context(
        &sb,
        CodeContextOptions::new(Language::Python).ipython(false),
    );
    let b = context(
        &sb,
        CodeContextOptions::new(Language::Python).ipython(false),
    );
    ok(&sb, &a, "secret = 'a'");
    let missing = run(&sb, &b, "secret");
    assert_eq!(missing.error.unwrap().name, "NameError");
    ok(&sb, &b, "secret = 'b'");
    assert_eq!(ok(&sb, &a, "secret").text(), Some("'a'"));
    assert_eq!(ok(&sb, &b, "secret").text(), Some("'b'"));
}

#[test]
fn rich_outputs_html_two_displays_and_a_matplotlib_png() {
    let _shared = shared();
    let rt = runtime();
    let sb = sandbox(&rt);
    for (driver, options) in python_variants() {
        // Debian's matplotlib reads its defaults from /etc/matplotlibrc,
        // which the base template (the host's /usr only) does not have;
        // the same file ships in /usr. The code-interpreter template has
        // /etc.
        let options = options.env("MATPLOTLIBRC", "/usr/share/matplotlib/mpl-data");
        let ctx = context(&sb, options);
        let html = ok(
            &sb,
            &ctx,
            "class T:\n    def _repr_html_(self):\n        return '<b>hi</b>'\nT()",
        );
        let main = html.main_result().expect("main result");
        assert_eq!(main.html.as_deref(), Some("<b>hi</b>"), "{driver}");
        let shown = ok(
            &sb,
            &ctx,
            "class M:\n    def __init__(self, v): self.v = v\n    def _repr_markdown_(self): return '*%s*' % self.v\ndisplay(M(1))\ndisplay(M(2))",
        );
        let shown: Vec<_> = shown.results.iter().filter(|r| !r.is_main_result).collect();
        assert_eq!(shown.len(), 2, "{driver}");
        assert_eq!(shown[0].markdown.as_deref(), Some("*1*"), "{driver}");
        assert_eq!(shown[1].markdown.as_deref(), Some("*2*"), "{driver}");
        let plot = sb
            .code()
            .run(
                &ctx,
                "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3], [1, 4, 9])",
                CellOptions::default().timeout(Duration::from_secs(120)),
            )
            .unwrap();
        assert!(plot.error.is_none(), "{driver}: {:?}", plot.error);
        let png = plot
            .results
            .iter()
            .find_map(|r| r.png.clone())
            .unwrap_or_else(|| panic!("{driver}: no PNG in {:?}", plot.results));
        let bytes = base64_decode(&png);
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{driver}");
    }
}

/// Standard base64 (the PNG's bytes), without a crate for one test.
fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let clean: Vec<u8> = text.bytes().filter(|&c| c != b'=' && c != b'\n').collect();
    let mut out = Vec::with_capacity(clean.len() * 3 / 4);
    for chunk in clean.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= u32::from(value(c)) << (18 - 6 * i);
        }
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    out
}

#[test]
fn bash_keeps_cwd_variables_and_functions_and_exit_ends_the_context() {
    let _shared = shared();
    let rt = runtime();
    let sb = sandbox(&rt);
    let ctx = context(&sb, CodeContextOptions::new(Language::Bash));
    ok(
        &sb,
        &ctx,
        "mkdir -p /tmp/work && cd /tmp/work\nGREETING=hello\ngreet() { echo \"$GREETING $1\"; }",
    );
    let out = ok(&sb, &ctx, "pwd; greet world");
    assert_eq!(out.stdout_text(), "/tmp/work\nhello world\n");
    let failed = run(&sb, &ctx, "false");
    assert_eq!(failed.exit_status, Some(1));
    let exited = run(&sb, &ctx, "exit 3");
    assert!(exited.state_lost);
    assert_eq!(exited.error.unwrap().name, CONTEXT_EXITED);
    let fresh = ok(&sb, &ctx, "echo ${GREETING:-unset}; pwd");
    assert!(
        fresh.stdout_text().starts_with("unset\n"),
        "{}",
        fresh.stdout_text()
    );
}

#[test]
fn node_keeps_let_bindings_and_awaits() {
    let _shared = shared();
    let rt = runtime();
    let sb = sandbox(&rt);
    let ctx = context(&sb, CodeContextOptions::new(Language::JavaScript));
    ok(&sb, &ctx, "let n = 40; const add = (a, b) => a + b;");
    assert_eq!(ok(&sb, &ctx, "n = add(n, 2); n").text(), Some("42"));
    let awaited = ok(
        &sb,
        &ctx,
        "await new Promise(r => setTimeout(() => r(n + 1), 10))",
    );
    assert_eq!(awaited.text(), Some("43"));
}

#[test]
fn a_missing_interpreter_is_a_typed_error_naming_language_and_program() {
    let _shared = shared();
    let rt = runtime();
    let sb = sandbox(&rt);
    let err = sb
        .code()
        .create_context(CodeContextOptions::new(Language::Python).command(["python9"]))
        .expect_err("no python9 in the sandbox");
    match &err {
        Error::InterpreterNotFound { language, program } => {
            assert_eq!(*language, "python");
            assert_eq!(program, "python9");
        }
        other => panic!("expected InterpreterNotFound, got {other:?}"),
    }
    assert!(err.to_string().contains("python9"), "{err}");
    assert!(sb.code().list().is_empty(), "a failed context is not kept");
}

#[test]
fn the_interpreter_runs_as_the_contexts_user_in_its_cwd_with_its_env() {
    let _shared = shared();
    let rt = runtime();
    let sb = sandbox(&rt);
    sh(&sb, "mkdir -p /home/u && chown 1000:1000 /home/u");
    for language in Language::ALL {
        let ctx = context(
            &sb,
            CodeContextOptions::new(language)
                .user("1000:1000")
                .cwd("/home/u")
                .env("CTX_VAR", "ctx")
                .ipython(false),
        );
        let code = match language {
            Language::Python => "import os\nprint(os.getuid(), os.getcwd(), os.environ['CTX_VAR'], os.environ['SANDLOT_SANDBOX_ID'] != '')",
            Language::JavaScript => "console.log(process.getuid(), process.cwd(), process.env.CTX_VAR, process.env.SANDLOT_SANDBOX_ID !== '')",
            Language::Bash => "echo $(id -u) $PWD $CTX_VAR $([ -n \"$SANDLOT_SANDBOX_ID\" ] && echo True)",
        };
        let out = ok(&sb, &ctx, code).stdout_text().to_lowercase();
        assert_eq!(out, "1000 /home/u ctx true\n", "{language}");
        // Its pipes are its own: reopening stderr by name works.
        let reopen = match language {
            Language::Python => "open('/dev/stderr', 'w').write('via name\\n')",
            Language::JavaScript => "require('fs').writeFileSync('/dev/stderr', 'via name\\n')",
            Language::Bash => "echo 'via name' > /dev/stderr",
        };
        let out = ok(&sb, &ctx, reopen);
        assert_eq!(out.stderr_text(), "via name\n", "{language}");
    }
}

#[test]
fn interpreters_do_not_count_against_max_concurrent_but_cells_are_activity() {
    let _shared = shared();
    let rt = runtime();
    let sb = rt
        .create(options().exec_limits(ExecLimits {
            max_concurrent: Some(1),
            ..ExecLimits::default()
        }))
        .unwrap();
    let a = context(&sb, CodeContextOptions::new(Language::Bash));
    let b = context(
        &sb,
        CodeContextOptions::new(Language::Python).ipython(false),
    );
    ok(&sb, &a, "true");
    ok(&sb, &b, "1");
    // Two interpreters wait; a command still may run.
    assert_eq!(sh(&sb, "echo ok"), "ok\n");
    assert!(
        sb.commands().list().is_empty(),
        "interpreters are not commands"
    );
    assert_eq!(sb.info().commands_in_flight, 0);
    assert_eq!(sb.state(), State::Running);
}

#[test]
fn interrupt_restart_and_remove_from_another_thread() {
    let _shared = shared();
    let rt = runtime();
    let sb = Arc::new(sandbox(&rt));
    let ctx = context(
        &sb,
        CodeContextOptions::new(Language::Python).ipython(false),
    );
    ok(&sb, &ctx, "kept = 5");
    let runner = {
        let (sb, ctx) = (sb.clone(), ctx.clone());
        std::thread::spawn(move || {
            sb.code()
                .run(
                    &ctx,
                    "import time\nwhile True: time.sleep(0.01)",
                    CellOptions::default(),
                )
                .unwrap()
        })
    };
    assert!(eventually(Duration::from_secs(10), || sb.code().list()[0]
        .state
        == ContextState::Running));
    sb.code().interrupt(&ctx).unwrap();
    let interrupted = runner.join().unwrap();
    assert_eq!(interrupted.error.unwrap().name, "KeyboardInterrupt");
    assert_eq!(ok(&sb, &ctx, "kept").text(), Some("5"));
    sb.code().restart(&ctx).unwrap();
    assert_eq!(run(&sb, &ctx, "kept").error.unwrap().name, "NameError");
    sb.code().remove(&ctx).unwrap();
    assert!(matches!(
        sb.code().run(&ctx, "1", CellOptions::default()),
        Err(Error::CodeContextNotFound(_))
    ));
}

#[test]
fn a_sandbox_destroyed_during_a_cell_ends_it_with_state_lost() {
    let _shared = shared();
    let rt = runtime();
    let sb = Arc::new(sandbox(&rt));
    let ctx = context(
        &sb,
        CodeContextOptions::new(Language::Python).ipython(false),
    );
    let runner = {
        let (sb, ctx) = (sb.clone(), ctx.clone());
        std::thread::spawn(move || {
            sb.code()
                .run(
                    &ctx,
                    "print('running', flush=True)\nimport time\ntime.sleep(100)",
                    CellOptions::default(),
                )
                .unwrap()
        })
    };
    assert!(eventually(Duration::from_secs(10), || sb.state() == State::Active));
    sb.kill().unwrap();
    // Left alone the cell would sleep its 100 s out and end without an
    // error; ended with its sandbox, its interpreter is gone.
    let execution = runner.join().unwrap();
    assert!(execution.state_lost);
    assert!(matches!(
        sb.run_code("1"),
        Err(Error::SandboxNotRunning { .. })
    ));
}

#[test]
fn contexts_and_their_sandboxes_leave_nothing_behind() {
    let _alone = FD_CENSUS.write().unwrap_or_else(|e| e.into_inner());
    let rt = warmed_runtime();
    let before = census();
    let sb = sandbox(&rt);
    // A context removed while idle, one left running a cell when the
    // sandbox ends, and a default one.
    let removed = context(&sb, CodeContextOptions::new(Language::Bash));
    ok(&sb, &removed, "sleep 0.01 &");
    sb.code().remove(&removed).unwrap();
    let js = context(&sb, CodeContextOptions::new(Language::JavaScript));
    ok(&sb, &js, "1");
    sb.run_code("import subprocess\np = subprocess.Popen(['sleep', '100'])")
        .unwrap();
    let sb = Arc::new(sb);
    let runner = {
        let (sb, js) = (sb.clone(), js.clone());
        std::thread::spawn(move || {
            sb.code()
                .run(&js, "while (true) {}", CellOptions::default())
        })
    };
    assert!(eventually(Duration::from_secs(10), || sb.state() == State::Active));
    sb.kill().unwrap();
    let ended = runner.join().unwrap().unwrap();
    assert!(ended.state_lost);
    drop(sb);
    assert!(
        eventually(Duration::from_secs(5), || census() == before),
        "left behind: before {before:?}, after {:?}",
        census()
    );
}

#[test]
fn a_paused_sandbox_refuses_cells_restarts_and_removals_and_serves_them_after_resume() {
    let _shared = shared();
    let rt = runtime();
    let sb = sandbox(&rt);
    let ctx = context(&sb, CodeContextOptions::new(Language::Bash));
    ok(&sb, &ctx, "KEPT=yes");
    sb.pause().unwrap();
    let paused = |r: Result<(), Error>| {
        assert!(
            matches!(
                r,
                Err(Error::SandboxNotRunning {
                    state: State::Paused,
                    ..
                })
            ),
            "{r:?}"
        );
    };
    paused(
        sb.code()
            .run(&ctx, "echo", CellOptions::default())
            .map(drop),
    );
    paused(sb.code().restart(&ctx));
    paused(sb.code().remove(&ctx));
    sb.resume().unwrap();
    assert_eq!(ok(&sb, &ctx, "echo $KEPT").stdout_text(), "yes\n");
}
