//! Code contexts, run against the host's own interpreters through the
//! host launcher: everything of a context that needs no sandbox. The
//! interpreters are Debian's: python3 with python3-ipython and
//! python3-matplotlib, nodejs, bash (.ci/run installs them). A missing one
//! fails the test with a message naming the package.

use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use sandlot::code::{
    CellOptions, CodeContextOptions, CodeContexts, CodeError, Context, ContextState, Execution,
    HostLauncher, Language, CONTEXT_EXITED, EXIT_STATUS, PROTOCOL_ERROR, TIMEOUT_ERROR,
};

/// The leak test counts the process's descriptors: it runs alone, every
/// other test shares.
static FD_CENSUS: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// Debian's python3: the one the tests install IPython and matplotlib into.
const PYTHON: &str = "/usr/bin/python3";

fn require(program: &str, package: &str) {
    let found = if program.contains('/') {
        Path::new(program).exists()
    } else {
        std::env::var_os("PATH")
            .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).exists()))
    };
    assert!(found, "{program} is missing: apt-get install {package}");
}

fn require_python_module(module: &str, package: &str) {
    require(PYTHON, "python3");
    let ok = std::process::Command::new(PYTHON)
        .args(["-c", &format!("import {module}")])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "{PYTHON} cannot import {module}: apt-get install {package}"
    );
}

/// Python contexts in both drivers: the standard-library one and IPython.
fn python_variants() -> Vec<(&'static str, CodeContextOptions)> {
    require_python_module("IPython", "python3-ipython");
    let base = CodeContextOptions::new(Language::Python).command([PYTHON]);
    vec![
        ("stdlib", base.clone().ipython(false)),
        ("ipython", base.ipython(true)),
    ]
}

fn context(contexts: &CodeContexts, options: CodeContextOptions) -> Context {
    contexts.create_context(options).expect("create context")
}

fn run(contexts: &CodeContexts, ctx: &Context, code: &str) -> Execution {
    contexts
        .run(ctx, code, CellOptions::default())
        .unwrap_or_else(|e| panic!("cell {code:?}: {e}"))
}

fn ok(contexts: &CodeContexts, ctx: &Context, code: &str) -> Execution {
    let execution = run(contexts, ctx, code);
    assert!(
        execution.error.is_none(),
        "cell {code:?} failed: {:?}",
        execution.error
    );
    execution
}

fn process_alive(pid: u32) -> bool {
    // A zombie counts as gone: only its exit status is left.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            !stat
                .rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(false)
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[test]
fn python_state_persists_and_the_trailing_expression_is_the_main_result() {
    let _shared = FD_CENSUS.read().unwrap_or_else(|e| e.into_inner());
    for (driver, options) in python_variants() {
        let contexts = CodeContexts::new(HostLauncher);
        let ctx = context(&contexts, options);
        assert_eq!(contexts.uses_ipython(&ctx).unwrap(), driver == "ipython");
        let first = ok(&contexts, &ctx, "x = 41\ndef f(v):\n    return v + 1");
        assert!(
            first.results.is_empty(),
            "{driver}: a trailing def gives no result"
        );
        let second = ok(&contexts, &ctx, "print('hello')\nf(x)");
        assert_eq!(second.stdout_text(), "hello\n", "{driver}");
        assert_eq!(second.text(), Some("42"), "{driver}");
        assert_eq!(second.results.len(), 1);
        assert!(second.results[0].is_main_result);
        assert_eq!(
            second.execution_count,
            first.execution_count + 1,
            "{driver}"
        );
        let assigned = ok(&contexts, &ctx, "y = f(x)");
        assert!(
            assigned.results.is_empty(),
            "{driver}: a trailing assignment gives none"
        );
        let silenced = ok(&contexts, &ctx, "y;");
        assert!(
            silenced.results.is_empty(),
            "{driver}: a trailing ';' silences the value"
        );
        assert_eq!(ok(&contexts, &ctx, "y * 2").text(), Some("84"), "{driver}");
    }
}

#[test]
fn python_exception_names_the_cell_line_and_the_context_lives_on() {
    let _shared = FD_CENSUS.read().unwrap_or_else(|e| e.into_inner());
    for (driver, options) in python_variants() {
        let contexts = CodeContexts::new(HostLauncher);
        let ctx = context(&contexts, options);
        ok(&contexts, &ctx, "kept = 'still here'");
        let failed = run(
            &contexts,
            &ctx,
            "a = 1\nb = 0\nprint('before')\nc = a / b\nprint('after')",
        );
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
        let syntax = run(&contexts, &ctx, "def broken(:\n    pass");
        assert_eq!(
            syntax.error.expect("syntax error").name,
            "SyntaxError",
            "{driver}"
        );
        assert_eq!(
            ok(&contexts, &ctx, "kept").text(),
            Some("'still here'"),
            "{driver}"
        );
    }
}

#[test]
fn python_cell_past_its_timeout_is_interrupted_and_state_is_kept() {
    let _shared = FD_CENSUS.read().unwrap_or_else(|e| e.into_inner());
    for (driver, options) in python_variants() {
        let contexts = CodeContexts::new(HostLauncher);
        let ctx = context(&contexts, options);
        ok(&contexts, &ctx, "counter = 7");
        let pid = contexts.list()[0].pid.expect("pid");
        let options = CellOptions::default().timeout(Duration::from_millis(500));
        let execution = contexts
            .run(&ctx, "while True:\n    pass", options)
            .unwrap();
        assert!(execution.timed_out, "{driver}");
        assert!(!execution.state_lost, "{driver}: {:?}", execution.error);
        assert_eq!(
            execution.error.expect("error").name,
            "KeyboardInterrupt",
            "{driver}"
        );
        assert_eq!(
            ok(&contexts, &ctx, "counter + 1").text(),
            Some("8"),
            "{driver}"
        );
        assert_eq!(
            contexts.list()[0].pid,
            Some(pid),
            "{driver}: same interpreter"
        );
    }
}

#[test]
fn python_cell_ignoring_sigint_is_killed_and_the_context_restarts_without_its_state() {
    let _shared = FD_CENSUS.read().unwrap_or_else(|e| e.into_inner());
    let contexts = CodeContexts::new(HostLauncher);
    let options = CodeContextOptions::new(Language::Python)
        .command([PYTHON])
        .ipython(false)
        .interrupt_grace(Duration::from_millis(300));
    let ctx = context(&contexts, options);
    ok(&contexts, &ctx, "lost = 1");
    let old_pid = contexts.list()[0].pid.unwrap();
    let cell = "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True:\n    pass";
    let execution = contexts
        .run(
            &ctx,
            cell,
            CellOptions::default().timeout(Duration::from_millis(300)),
        )
        .unwrap();
    assert!(execution.timed_out);
    assert!(execution.state_lost);
    let error = execution.error.expect("error");
    assert_eq!(error.name, TIMEOUT_ERROR);
    assert!(error.value.contains("state lost"), "{}", error.value);
    assert!(
        !process_alive(old_pid),
        "the old interpreter was killed and reaped"
    );
    assert_eq!(contexts.list()[0].state, ContextState::Dead);
    let after = run(&contexts, &ctx, "lost");
    assert_eq!(after.error.expect("NameError").name, "NameError");
    assert_ne!(contexts.list()[0].pid, Some(old_pid));
    assert_eq!(after.execution_count, 1, "a new interpreter counts from 1");
}

#[test]
fn stdout_reaches_the_callback_while_the_cell_still_runs() {
    let _shared = FD_CENSUS.read().unwrap_or_else(|e| e.into_inner());
    let dir = std::env::temp_dir().join(format!("sandlot-code-stream-{}", std::process::id()));
    let release = dir.join("release");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let _cleanup = Cleanup(dir.clone());
    for (language, command, cell) in [
        (
            Language::Python,
            PYTHON,
            format!(
                "import os, time\nprint('first line')\nwhile not os.path.exists({:?}):\n    time.sleep(0.01)\nprint('second')",
                release.display().to_string()
            ),
        ),
        (
            Language::Bash,
            "bash",
            format!("echo 'first line'; while [ ! -e {:?} ]; do sleep 0.01; done; echo second", release.display().to_string()),
        ),
        (
            Language::JavaScript,
            "node",
            format!(
                "console.log('first line');\nconst fs = require('fs');\nwhile (!fs.existsSync({:?})) {{ await new Promise(r => setTimeout(r, 10)); }}\nconsole.log('second');",
                release.display().to_string()
            ),
        ),
    ] {
        require(command, command);
        let _ = std::fs::remove_file(&release);
        let contexts = std::sync::Arc::new(CodeContexts::new(HostLauncher));
        let ctx = context(&contexts, CodeContextOptions::new(language).command([command]).ipython(false));
        let (tx, rx) = mpsc::channel::<String>();
        let runner = {
            let contexts = contexts.clone();
            std::thread::spawn(move || {
                let tx = std::sync::Mutex::new(tx);
                let options = CellOptions::default()
                    .timeout(Duration::from_secs(30))
                    .on_stdout(move |text| {
                        let _ = tx.lock().unwrap().send(text.to_string());
                    });
                contexts.run(&ctx, &cell, options).unwrap()
            })
        };
        // The cell cannot end before the file exists: a line seen here was
        // streamed while it ran.
        let seen = rx.recv_timeout(Duration::from_secs(20)).expect("first line streamed");
        assert!(seen.starts_with("first line"), "{language}: {seen:?}");
        assert!(!runner.is_finished(), "{language}: the cell is still waiting");
        std::fs::write(&release, b"").unwrap();
        let execution = runner.join().unwrap();
        assert!(execution.error.is_none(), "{language}: {:?}", execution.error);
        assert_eq!(execution.stdout_text(), "first line\nsecond\n", "{language}");
    }
}

struct Cleanup(std::path::PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn eight_mib_arrive_intact_and_a_hundred_mib_are_truncated_with_memory_bounded() {
    let _shared = FD_CENSUS.read().unwrap_or_else(|e| e.into_inner());
    let contexts = CodeContexts::new(HostLauncher);
    let ctx = context(
        &contexts,
        CodeContextOptions::new(Language::Python)
            .command([PYTHON])
            .ipython(false),
    );
    // 8 MiB of numbered lines, written in pieces of varying size.
    let cell = "import sys\nfor i in range(1 << 17):\n    sys.stdout.write('%063d\\n' % i)";
    let execution = ok(&contexts, &ctx, cell);
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
    let execution = ok(&contexts, &ctx, cell);
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
    // A smaller cap per cell.
    let small = contexts
        .run(
            &ctx,
            "print('z' * 5000)",
            CellOptions::default().max_output_bytes(1000),
        )
        .unwrap();
    assert!(small.stdout_truncated);
    assert_eq!(small.stdout_text(), "z".repeat(1000));
}

#[test]
fn two_contexts_never_share_state() {
    let _shared = FD_CENSUS.read().unwrap_or_else(|e| e.into_inner());
    let contexts = CodeContexts::new(HostLauncher);
    let options = CodeContextOptions::new(Language::Python)
        .command([PYTHON])
        .ipython(false);
    let a = context(&contexts, options.clone());
    let b = context(&contexts, options);
    ok(&contexts, &a, "secret = 'a'");
    let seen = run(&contexts, &b, "secret");
    assert_eq!(seen.error.expect("NameError").name, "NameError");
    ok(&contexts, &b, "secret = 'b'");
    assert_eq!(ok(&contexts, &a, "secret").text(), Some("'a'"));
    assert_eq!(contexts.list().len(), 2);
    // Cells of two contexts run at the same time.
    let contexts = std::sync::Arc::new(contexts);
    let handles: Vec<_> = [a, b]
        .into_iter()
        .map(|ctx| {
            let contexts = contexts.clone();
            std::thread::spawn(move || {
                ok(&contexts, &ctx, "import time\ntime.sleep(0.3)\nsecret")
                    .text()
                    .map(String::from)
            })
        })
        .collect();
    let texts: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(
        texts,
        vec![Some("'a'".to_string()), Some("'b'".to_string())]
    );
}

const RICH_CLASS: &str = r#"
import base64
class Rich:
    def _repr_html_(self): return '<b>rich</b>'
    def _repr_markdown_(self): return '**rich**'
    def _repr_svg_(self): return '<svg xmlns="http://www.w3.org/2000/svg"/>'
    def _repr_png_(self): return b'\x89PNG\r\n\x1a\n'
    def _repr_jpeg_(self): return b'\xff\xd8\xff'
    def _repr_latex_(self): return r'$\alpha$'
    def _repr_json_(self): return {'k': [1, 2]}
    def _repr_javascript_(self): return 'console.log(1)'
    def _repr_pdf_(self): return b'%PDF-1.4'
    def __repr__(self): return 'Rich()'
class Bundle:
    def _repr_mimebundle_(self, include=None, exclude=None):
        return {'text/plain': 'bundle', 'application/vnd.custom+json': {'a': 1}, 'text/html': '<i>b</i>'}
class Html:
    def __init__(self, n): self.n = n
    def _repr_html_(self): return '<p>%d</p>' % self.n
"#;

#[test]
fn python_rich_outputs_follow_ipython_conventions() {
    let _shared = FD_CENSUS.read().unwrap_or_else(|e| e.into_inner());
    for (driver, options) in python_variants() {
        let contexts = CodeContexts::new(HostLauncher);
        let ctx = context(&contexts, options);
        ok(&contexts, &ctx, RICH_CLASS);
        let rich = ok(&contexts, &ctx, "Rich()");
        let main = rich.main_result().expect("main result");
        assert_eq!(main.text.as_deref(), Some("Rich()"), "{driver}");
        assert_eq!(main.html.as_deref(), Some("<b>rich</b>"), "{driver}");
        assert_eq!(main.markdown.as_deref(), Some("**rich**"), "{driver}");
        assert_eq!(
            main.svg.as_deref(),
            Some("<svg xmlns=\"http://www.w3.org/2000/svg\"/>"),
            "{driver}"
        );
        assert_eq!(
            main.png.as_deref(),
            Some("iVBORw0KGgo="),
            "{driver}: base64 of the PNG signature"
        );
        assert_eq!(main.jpeg.as_deref(), Some("/9j/"), "{driver}");
        assert_eq!(main.latex.as_deref(), Some("$\\alpha$"), "{driver}");
        assert_eq!(
            main.json,
            Some(serde_json::json!({"k": [1, 2]})),
            "{driver}"
        );
        assert_eq!(
            main.javascript.as_deref(),
            Some("console.log(1)"),
            "{driver}"
        );
        assert_eq!(main.pdf.as_deref(), Some("JVBERi0xLjQ="), "{driver}");

        let bundle = ok(&contexts, &ctx, "Bundle()");
        let main = bundle.main_result().expect("main result");
        assert_eq!(main.text.as_deref(), Some("bundle"), "{driver}");
        assert_eq!(main.html.as_deref(), Some("<i>b</i>"), "{driver}");
        assert_eq!(
            main.extra.get("application/vnd.custom+json"),
            Some(&serde_json::json!({"a": 1})),
            "{driver}"
        );

        let shown = ok(
            &contexts,
            &ctx,
            "print('one')\ndisplay(Html(1))\nprint('two')\ndisplay(Html(2))\n'end'",
        );
        let html: Vec<_> = shown.results.iter().map(|r| r.html.clone()).collect();
        assert_eq!(
            html,
            vec![Some("<p>1</p>".into()), Some("<p>2</p>".into()), None],
            "{driver}"
        );
        assert_eq!(
            shown.results.iter().filter(|r| r.is_main_result).count(),
            1,
            "{driver}"
        );
        assert_eq!(shown.text(), Some("'end'"), "{driver}");
        assert_eq!(shown.stdout_text(), "one\ntwo\n", "{driver}");
    }
}

#[test]
fn python_matplotlib_figure_left_open_comes_back_as_png() {
    let _shared = FD_CENSUS.read().unwrap_or_else(|e| e.into_inner());
    require_python_module("matplotlib", "python3-matplotlib");
    for (driver, options) in python_variants() {
        let contexts = CodeContexts::new(HostLauncher);
        let ctx = context(&contexts, options);
        let cell = "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3], [1, 4, 9])\nplt.title('squares')\nx = 1";
        let execution = ok(&contexts, &ctx, cell);
        let pngs: Vec<_> = execution
            .results
            .iter()
            .filter_map(|r| r.png.as_deref())
            .collect();
        assert_eq!(pngs.len(), 1, "{driver}: {:?}", execution.results);
        assert!(pngs[0].starts_with("iVBORw0KGgo"), "{driver}: a base64 PNG");
        assert!(pngs[0].len() > 1000, "{driver}: a real image");
        // The figure was closed: the next cell has no image.
        let next = ok(&contexts, &ctx, "x + 1");
        assert!(next.results.iter().all(|r| r.png.is_none()), "{driver}");
        // plt.show() shows at that point, as a notebook does.
        let shown = ok(&contexts, &ctx, "plt.plot([1]); plt.show(); print('after')");
        assert_eq!(
            shown.results.iter().filter(|r| r.png.is_some()).count(),
            1,
            "{driver}"
        );
    }
}

#[test]
fn python_without_ipython_falls_back_to_the_standard_library_driver() {
    let _shared = FD_CENSUS.read().unwrap_or_else(|e| e.into_inner());
    require(PYTHON, "python3");
    let contexts = CodeContexts::new(HostLauncher);
    // -S: no site-packages, so IPython cannot be imported.
    let ctx = context(
        &contexts,
        CodeContextOptions::new(Language::Python).command([PYTHON, "-S"]),
    );
    assert!(!contexts.uses_ipython(&ctx).unwrap());
    ok(&contexts, &ctx, "x = 2");
    assert_eq!(ok(&contexts, &ctx, "x ** 10").text(), Some("1024"));
}

#[test]
fn ipython_magics_work_as_in_a_notebook() {
    let _shared = FD_CENSUS.read().unwrap_or_else(|e| e.into_inner());
    let (_, options) = python_variants().pop().unwrap();
    let contexts = CodeContexts::new(HostLauncher);
    let ctx = context(&contexts, options);
    let shell = ok(&contexts, &ctx, "!echo from-shell");
    assert_eq!(shell.stdout_text().trim(), "from-shell");
    let cell_magic = ok(
        &contexts,
        &ctx,
        "%%bash\necho from-bash-magic\necho err >&2",
    );
    assert!(
        cell_magic.stdout_text().contains("from-bash-magic"),
        "{:?}",
        cell_magic.stdout
    );
    let timed = ok(&contexts, &ctx, "%time y = sum(range(10))");
    assert!(
        timed.stdout_text().contains("Wall time"),
        "{:?}",
        timed.stdout
    );
    assert_eq!(ok(&contexts, &ctx, "y").text(), Some("45"));
}

#[test]
fn cell_and_context_environment_variables() {
    let _shared = FD_CENSUS.read().unwrap_or_else(|e| e.into_inner());
    let cases = [
        (
            Language::Python,
            PYTHON,
            "import os\nprint(os.environ['CELL_VAR'], os.environ['CTX_VAR'])",
            "import os\nprint(os.environ.get('CELL_VAR'))",
        ),
        (
            Language::Bash,
            "bash",
            "echo \"$CELL_VAR\" $CTX_VAR",
            "echo ${CELL_VAR:-None}",
        ),
        (
            Language::JavaScript,
            "node",
            "console.log(process.env.CELL_VAR, process.env.CTX_VAR)",
            "console.log(process.env.CELL_VAR === undefined ? 'None' : 'set')",
        ),
    ];
    for (language, command, with_env, after) in cases {
        require(command, command);
        let contexts = CodeContexts::new(HostLauncher);
        let options = CodeContextOptions::new(language)
            .command([command])
            .ipython(false)
            .env("CTX_VAR", "ctx");
        let ctx = context(&contexts, options);
        let execution = contexts
            .run(
                &ctx,
                with_env,
                CellOptions::default().env("CELL_VAR", "it's \"quoted\" $HOME\nline2"),
            )
            .unwrap();
        assert!(
            execution.error.is_none(),
            "{language}: {:?}",
            execution.error
        );
        assert_eq!(
            execution.stdout_text(),
            "it's \"quoted\" $HOME\nline2 ctx\n",
            "{language}"
        );
        assert_eq!(
            ok(&contexts, &ctx, after).stdout_text(),
            "None\n",
            "{language}: only for that cell"
        );
    }
}

#[test]
fn bash_keeps_cwd_variables_functions_and_options() {
    let _shared = FD_CENSUS.read().unwrap_or_else(|e| e.into_inner());
    require("bash", "bash");
    let contexts = CodeContexts::new(HostLauncher);
    let ctx = context(&contexts, CodeContextOptions::new(Language::Bash));
    ok(&contexts, &ctx, "cd /usr/share; greeting=hello; declare -a list=(a b c)\nsay() { echo \"$greeting $1\"; }\nset -o pipefail");
    let execution = ok(
        &contexts,
        &ctx,
        "pwd; say world; echo ${list[2]}; set -o | grep pipefail",
    );
    let out = execution.stdout_text();
    let lines: Vec<_> = out.lines().collect();
    assert_eq!(lines[..3], ["/usr/share", "hello world", "c"]);
    assert!(lines[3].ends_with("on"), "{}", lines[3]);
    assert_eq!(execution.exit_status, Some(0));
    let failed = run(&contexts, &ctx, "ls /does-not-exist");
    assert_eq!(failed.exit_status, Some(2));
    assert_eq!(failed.error.clone().expect("error").name, EXIT_STATUS);
    assert!(failed.stderr_text().contains("does-not-exist"));
    // A cell reading stdin gets end-of-file, not the next request.
    assert_eq!(
        ok(&contexts, &ctx, "cat; echo read-done").stdout_text(),
        "read-done\n"
    );
}

#[test]
fn bash_interrupt_abandons_the_cell_and_keeps_the_shell() {
    let _shared = FD_CENSUS.read().unwrap_or_else(|e| e.into_inner());
    require("bash", "bash");
    let contexts = CodeContexts::new(HostLauncher);
    let ctx = context(&contexts, CodeContextOptions::new(Language::Bash));
    ok(
        &contexts,
        &ctx,
        "kept=yes; spin() { while true; do sleep 0.05; done; }",
    );
    for cell in ["while true; do :; done", "spin; echo never"] {
        let execution = contexts
            .run(
                &ctx,
                cell,
                CellOptions::default().timeout(Duration::from_millis(400)),
            )
            .unwrap();
        assert!(execution.timed_out, "{cell}");
        assert!(!execution.state_lost, "{cell}: {:?}", execution.error);
        assert!(!execution.stdout_text().contains("never"));
        assert_eq!(
            execution.error.expect("error").name,
            "KeyboardInterrupt",
            "{cell}"
        );
    }
    assert_eq!(ok(&contexts, &ctx, "echo $kept").stdout_text(), "yes\n");
}

#[test]
fn bash_exit_ends_the_context_and_the_next_cell_starts_a_new_shell() {
    let _shared = FD_CENSUS.read().unwrap_or_else(|e| e.into_inner());
    require("bash", "bash");
    let contexts = CodeContexts::new(HostLauncher);
    let ctx = context(&contexts, CodeContextOptions::new(Language::Bash));
    ok(&contexts, &ctx, "var=1; sleep 1000 &");
    let pid = contexts.list()[0].pid.unwrap();
    let execution = run(&contexts, &ctx, "echo bye; exit 3");
    assert_eq!(execution.stdout_text(), "bye\n");
    assert!(execution.state_lost);
    let error = execution.error.expect("error");
    assert_eq!(error.name, CONTEXT_EXITED);
    assert!(error.value.contains("exit status 3"), "{}", error.value);
    assert!(!process_alive(pid));
    let next = ok(&contexts, &ctx, "echo ${var:-unset}");
    assert_eq!(next.stdout_text(), "unset\n");
    assert_eq!(next.execution_count, 1);
}

#[test]
fn node_keeps_top_level_bindings_and_awaits() {
    let _shared = FD_CENSUS.read().unwrap_or_else(|e| e.into_inner());
    require("node", "nodejs");
    let contexts = CodeContexts::new(HostLauncher);
    let ctx = context(&contexts, CodeContextOptions::new(Language::JavaScript));
    let first = ok(&contexts, &ctx, "let a = 1;\nconst b = 2;\nfunction add(x, y) { return x + y }\nclass Point { constructor(x) { this.x = x } }");
    assert!(first.results.is_empty());
    let second = ok(&contexts, &ctx, "console.log('sum');\nadd(a, b)");
    assert_eq!(second.stdout_text(), "sum\n");
    assert_eq!(second.text(), Some("3"));
    ok(&contexts, &ctx, "a = 10");
    assert_eq!(ok(&contexts, &ctx, "a + b").text(), Some("12"));
    let awaited = ok(
        &contexts,
        &ctx,
        "const v = await new Promise(r => setTimeout(() => r(40), 20));\nv + b",
    );
    assert_eq!(awaited.text(), Some("42"));
    assert_eq!(
        ok(&contexts, &ctx, "v").text(),
        Some("40"),
        "an awaited const persists"
    );
    assert_eq!(ok(&contexts, &ctx, "new Point(5).x").text(), Some("5"));
    assert_eq!(ok(&contexts, &ctx, "({a: 1})").text(), Some("{ a: 1 }"));
    let redeclared = run(&contexts, &ctx, "let a = 5");
    assert_eq!(
        redeclared.error.expect("error").name,
        "SyntaxError",
        "as node's REPL"
    );
    let thrown = run(
        &contexts,
        &ctx,
        "function boom() {\n  throw new TypeError('bad ' + a)\n}\nboom()",
    );
    let error = thrown.error.expect("error");
    assert_eq!(
        (error.name.as_str(), error.value.as_str()),
        ("TypeError", "bad 10")
    );
    assert!(error.traceback.contains("<cell-"), "{}", error.traceback);
    assert!(
        error.traceback.contains(":2:"),
        "names the cell's line: {}",
        error.traceback
    );
    assert!(
        !error.traceback.contains("[eval]"),
        "no driver frames: {}",
        error.traceback
    );
    let rejected = run(
        &contexts,
        &ctx,
        "await Promise.reject(new RangeError('nope'))",
    );
    assert_eq!(rejected.error.expect("error").name, "RangeError");
    assert_eq!(ok(&contexts, &ctx, "a").text(), Some("10"));
}

#[test]
fn node_interrupt_breaks_loops_and_keeps_bindings() {
    let _shared = FD_CENSUS.read().unwrap_or_else(|e| e.into_inner());
    require("node", "nodejs");
    let contexts = CodeContexts::new(HostLauncher);
    let ctx = context(&contexts, CodeContextOptions::new(Language::JavaScript));
    ok(&contexts, &ctx, "let kept = 'yes'");
    for cell in ["while (true) {}", "await new Promise(() => {})"] {
        let execution = contexts
            .run(
                &ctx,
                cell,
                CellOptions::default().timeout(Duration::from_millis(400)),
            )
            .unwrap();
        assert!(execution.timed_out, "{cell}");
        assert!(!execution.state_lost, "{cell}: {:?}", execution.error);
        assert_eq!(
            execution.error.expect("error").name,
            "KeyboardInterrupt",
            "{cell}"
        );
    }
    assert_eq!(ok(&contexts, &ctx, "kept").text(), Some("'yes'"));
}

#[test]
fn interrupt_on_demand_from_another_thread() {
    let _shared = FD_CENSUS.read().unwrap_or_else(|e| e.into_inner());
    let contexts = std::sync::Arc::new(CodeContexts::new(HostLauncher));
    let ctx = context(
        &contexts,
        CodeContextOptions::new(Language::Python)
            .command([PYTHON])
            .ipython(false),
    );
    ok(&contexts, &ctx, "n = 5");
    let runner = {
        let (contexts, ctx) = (contexts.clone(), ctx.clone());
        std::thread::spawn(move || {
            contexts
                .run(
                    &ctx,
                    "import time\nwhile True:\n    time.sleep(0.01)",
                    CellOptions::default(),
                )
                .unwrap()
        })
    };
    while contexts.list()[0].state != ContextState::Running {
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(100));
    contexts.interrupt(&ctx).unwrap();
    let execution = runner.join().unwrap();
    assert!(!execution.timed_out);
    assert_eq!(execution.error.expect("error").name, "KeyboardInterrupt");
    assert_eq!(ok(&contexts, &ctx, "n").text(), Some("5"));
}

#[test]
fn a_missing_interpreter_is_a_typed_error_naming_language_and_program() {
    let _shared = FD_CENSUS.read().unwrap_or_else(|e| e.into_inner());
    let contexts = CodeContexts::new(HostLauncher);
    for language in Language::ALL {
        let options = CodeContextOptions::new(language).command(["sandlot-no-such-interpreter"]);
        match contexts.create_context(options) {
            Err(CodeError::InterpreterNotFound {
                language: l,
                program,
            }) => {
                assert_eq!(l, language);
                assert_eq!(program, "sandlot-no-such-interpreter");
            }
            other => panic!("{language}: {other:?}"),
        }
    }
    let message = contexts
        .create_context(CodeContextOptions::new(Language::JavaScript).command(["sandlot-no-node"]))
        .unwrap_err()
        .to_string();
    assert_eq!(
        message,
        "no javascript interpreter: program \"sandlot-no-node\" not found"
    );
    assert!(contexts.list().is_empty());
}

/// A stand-in "interpreter" that says ready, reads the request, then sends
/// what the test gives it.
fn fake_driver(after_request: &str) -> CodeContextOptions {
    let ready = r#"{"type":"ready","protocol":1,"language":"python"}"#;
    let script = format!(
        "printf '%d\\n%s' {} '{ready}' >&4; read -r header <&3; {after_request}; sleep 30",
        ready.len()
    );
    CodeContextOptions::new(Language::Python)
        .command(["sh", "-c", &script])
        .interrupt_grace(Duration::from_millis(200))
}

#[test]
fn a_driver_that_breaks_the_protocol_fails_its_cell_never_the_host() {
    let _shared = FD_CENSUS.read().unwrap_or_else(|e| e.into_inner());
    require("sh", "dash");
    let contexts = CodeContexts::new(HostLauncher);
    for garbage in [
        "printf 'garbage that is no header' >&4",
        "printf '99999999999999999999\\n' >&4",
        "printf '5\\nnojsn' >&4",
        r#"printf '%s' '23\n{"type":"start","id":9}' >&4"#,
    ] {
        let ctx = context(&contexts, fake_driver(garbage));
        let execution = contexts
            .run(
                &ctx,
                "x",
                CellOptions::default().timeout(Duration::from_secs(10)),
            )
            .unwrap();
        let error = execution.error.expect("error");
        assert_eq!(error.name, PROTOCOL_ERROR, "{garbage}: {error:?}");
        assert!(execution.state_lost);
        contexts.remove(&ctx).unwrap();
    }
    // An oversized message is skipped without being stored; the stream stays
    // in step and the cell ends normally, flagged.
    let huge = 40 << 20;
    let done = r#"{"type":"done","id":1}"#;
    let ctx = context(
        &contexts,
        fake_driver(&format!("printf '{huge}\\n' >&4; head -c {huge} /dev/zero >&4; printf '%d\\n%s' {} '{done}' >&4", done.len())),
    );
    let before = rss_kib();
    let execution = contexts.run(&ctx, "x", CellOptions::default()).unwrap();
    assert!(execution.results_truncated);
    assert!(execution.error.is_none(), "{:?}", execution.error);
    assert!(
        rss_kib().saturating_sub(before) < 24 << 10,
        "the 40 MiB message was not stored"
    );
}

#[test]
fn nothing_is_left_after_contexts_end() {
    let _census = FD_CENSUS.write().unwrap_or_else(|e| e.into_inner());
    let fds_before = open_fds();
    let mut pids = Vec::new();
    {
        let contexts = CodeContexts::new(HostLauncher);
        for language in Language::ALL {
            let ctx = context(
                &contexts,
                CodeContextOptions::new(language)
                    .command([match language {
                        Language::Python => PYTHON,
                        Language::JavaScript => "node",
                        Language::Bash => "bash",
                    }])
                    .ipython(false),
            );
            ok(
                &contexts,
                &ctx,
                match language {
                    Language::Python => {
                        "import subprocess\np = subprocess.Popen(['sleep', '1000'])"
                    }
                    Language::JavaScript => {
                        "require('child_process').spawn('sleep', ['1000'], {stdio: 'inherit'}); 1"
                    }
                    Language::Bash => "sleep 1000 &",
                },
            );
        }
        let removed = contexts.list()[0].clone();
        pids.extend(contexts.list().iter().filter_map(|c| c.pid));
        assert_eq!(pids.len(), Language::ALL.len(), "an interpreter each");
        // Each interpreter leads its process group; a sleep in each.
        assert!(
            sandlot_tests::eventually(Duration::from_secs(10), || sleeps_in(&pids).lines().count()
                == Language::ALL.len()),
            "a sleep per interpreter: {}",
            sleeps_in(&pids)
        );
        contexts
            .remove(&contexts.get(&removed.id).unwrap())
            .unwrap();
        assert!(!process_alive(removed.pid.unwrap()));
        let removed_ctx = Context {
            id: removed.id.clone(),
            language: removed.language,
            cwd: None,
        };
        assert!(matches!(
            contexts.run(&removed_ctx, "1", CellOptions::default()),
            Err(CodeError::ContextNotFound(_))
        ));
        let remaining = contexts.get(&contexts.list()[0].id).unwrap();
        assert!(contexts
            .run(&remaining, "echo", CellOptions::default())
            .is_ok());
        // The rest end with `contexts`.
    }
    for &pid in &pids {
        assert!(
            !process_alive(pid),
            "interpreter {pid} outlived its context"
        );
    }
    assert_eq!(open_fds(), fds_before, "every pipe was closed");
    // The `sleep 1000`s started by cells are in the interpreters' process
    // groups and were killed with them.
    // Killed, they may be zombies a moment (their new parent reaps them).
    let alive = || -> Vec<i32> {
        sleeps_in(&pids)
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .filter(|&pid| sandlot_tests::process_exists(pid))
            .collect()
    };
    assert!(
        sandlot_tests::eventually(Duration::from_secs(10), || alive().is_empty()),
        "sleeps outlived their interpreters: {:?}",
        alive()
    );
}

/// `sleep` processes in the process groups led by `leaders` (pgrep's list).
fn sleeps_in(leaders: &[u32]) -> String {
    let groups: Vec<String> = leaders.iter().map(u32::to_string).collect();
    let out = std::process::Command::new("pgrep")
        .args(["-x", "-g", &groups.join(","), "sleep"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}
