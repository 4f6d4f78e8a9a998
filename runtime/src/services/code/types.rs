//! The public types of code contexts: what a caller asks for and what a
//! cell gives back. Field names follow the reference's SDK (`Execution`,
//! `Result` as [`DisplayData`], `ExecutionError`), so a server can put them
//! on the wire as they are.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// Output kept per stream and per cell unless [`CellOptions::max_output_bytes`]
/// says otherwise: the same default as a command's collected output.
pub const DEFAULT_CELL_OUTPUT_CAP: u64 = 16 << 20;

/// How long a cell may run unless [`CellOptions::timeout`] says otherwise
/// (the reference's default for `run_code`).
pub const DEFAULT_CELL_TIMEOUT: Duration = Duration::from_secs(300);

/// How long an interrupted cell has to stop before its interpreter is
/// killed and the context restarted. Stopping includes reporting the
/// interrupt: IPython's first traceback imports its formatting machinery
/// (0.15 s on an idle machine, seconds on a loaded one; 3 s was once too
/// short in CI). A cell that ignores SIGINT waits this long.
pub const DEFAULT_INTERRUPT_GRACE: Duration = Duration::from_secs(10);

/// How long a new context's interpreter may take to be ready (IPython with
/// numpy and pandas on a cold page cache takes a few seconds).
pub const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(60);

/// The languages sandlot ships a driver for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Language {
    Python,
    JavaScript,
    Bash,
}

impl Language {
    pub const ALL: [Language; 3] = [Language::Python, Language::JavaScript, Language::Bash];

    /// The name templates and the reference's API use.
    pub fn name(self) -> &'static str {
        match self {
            Language::Python => "python",
            Language::JavaScript => "javascript",
            Language::Bash => "bash",
        }
    }

    /// The interpreter started when the template names none.
    pub fn default_command(self) -> &'static str {
        match self {
            Language::Python => "python3",
            Language::JavaScript => "node",
            Language::Bash => "bash",
        }
    }
}

impl fmt::Display for Language {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A language name that sandlot has no driver for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown language {0:?} (known: python, javascript, bash)")]
pub struct UnknownLanguage(pub String);

impl FromStr for Language {
    type Err = UnknownLanguage;

    /// Accepts the names and the aliases the reference's SDKs send.
    fn from_str(s: &str) -> Result<Language, UnknownLanguage> {
        match s.to_ascii_lowercase().as_str() {
            "python" | "python3" | "py" => Ok(Language::Python),
            "javascript" | "js" | "node" | "nodejs" => Ok(Language::JavaScript),
            "bash" | "sh" | "shell" => Ok(Language::Bash),
            _ => Err(UnknownLanguage(s.to_string())),
        }
    }
}

/// Options of a new context.
#[derive(Debug, Clone)]
pub struct CodeContextOptions {
    pub language: Language,
    /// Working directory of the interpreter (default: the launcher's).
    pub cwd: Option<String>,
    /// Environment of the interpreter, on top of the launcher's.
    pub env: Vec<(String, String)>,
    /// Who the interpreter runs as in a sandbox: a user name of its
    /// /etc/passwd or `uid[:gid]` (default: the template's user). The host
    /// launcher runs it as the caller and refuses one.
    pub user: Option<String>,
    /// The interpreter and its own options (default: the template's
    /// interpreter for the language, else [`Language::default_command`]).
    /// sandlot appends its driver's arguments.
    pub command: Option<Vec<String>>,
    /// Python only: use IPython when the interpreter can import it (magics,
    /// `!cmd`); `false` always uses the standard-library driver.
    pub ipython: bool,
    pub start_timeout: Duration,
    pub interrupt_grace: Duration,
}

impl CodeContextOptions {
    pub fn new(language: Language) -> CodeContextOptions {
        CodeContextOptions {
            language,
            cwd: None,
            env: Vec::new(),
            user: None,
            command: None,
            ipython: true,
            start_timeout: DEFAULT_START_TIMEOUT,
            interrupt_grace: DEFAULT_INTERRUPT_GRACE,
        }
    }

    pub fn cwd(mut self, cwd: impl Into<String>) -> Self {
        self.cwd = Some(cwd.into());
        self
    }

    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    pub fn user(mut self, user: impl Into<String>) -> Self {
        self.user = Some(user.into());
        self
    }

    pub fn command<S: Into<String>>(mut self, argv: impl IntoIterator<Item = S>) -> Self {
        self.command = Some(argv.into_iter().map(Into::into).collect());
        self
    }

    pub fn ipython(mut self, use_it: bool) -> Self {
        self.ipython = use_it;
        self
    }

    pub fn interrupt_grace(mut self, grace: Duration) -> Self {
        self.interrupt_grace = grace;
        self
    }

    pub fn start_timeout(mut self, timeout: Duration) -> Self {
        self.start_timeout = timeout;
        self
    }
}

impl Default for CodeContextOptions {
    fn default() -> Self {
        CodeContextOptions::new(Language::Python)
    }
}

/// Called with each piece of output while the cell runs, on the thread
/// that called `run`.
pub type TextCallback = Box<dyn FnMut(&str) + Send>;
/// Called with each rich output (the main result included) as it arrives.
pub type ResultCallback = Box<dyn FnMut(&DisplayData) + Send>;
/// Called with the cell's error as it arrives.
pub type ErrorCallback = Box<dyn FnMut(&ExecutionError) + Send>;

/// Options of one cell.
#[derive(Default)]
pub struct CellOptions {
    /// Past it the cell is interrupted (default [`DEFAULT_CELL_TIMEOUT`]).
    pub timeout: Option<Duration>,
    /// Environment variables for this cell only.
    pub env: Vec<(String, String)>,
    /// Bytes kept per stream (stdout, stderr, rich results); the rest is
    /// read and dropped, and the execution says it was truncated. Default
    /// [`DEFAULT_CELL_OUTPUT_CAP`].
    pub max_output_bytes: Option<u64>,
    pub on_stdout: Option<TextCallback>,
    pub on_stderr: Option<TextCallback>,
    pub on_result: Option<ResultCallback>,
    pub on_error: Option<ErrorCallback>,
}

impl CellOptions {
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    pub fn max_output_bytes(mut self, max: u64) -> Self {
        self.max_output_bytes = Some(max);
        self
    }

    pub fn on_stdout(mut self, f: impl FnMut(&str) + Send + 'static) -> Self {
        self.on_stdout = Some(Box::new(f));
        self
    }

    pub fn on_stderr(mut self, f: impl FnMut(&str) + Send + 'static) -> Self {
        self.on_stderr = Some(Box::new(f));
        self
    }

    pub fn on_result(mut self, f: impl FnMut(&DisplayData) + Send + 'static) -> Self {
        self.on_result = Some(Box::new(f));
        self
    }

    pub fn on_error(mut self, f: impl FnMut(&ExecutionError) + Send + 'static) -> Self {
        self.on_error = Some(Box::new(f));
        self
    }
}

impl fmt::Debug for CellOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CellOptions")
            .field("timeout", &self.timeout)
            .field("env", &self.env)
            .field("max_output_bytes", &self.max_output_bytes)
            .finish_non_exhaustive()
    }
}

/// One rich output of a cell: each representation the object offered.
/// Binary formats (`png`, `jpeg`, `pdf`) are base64 text, as the
/// reference's SDK carries them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DisplayData {
    pub text: Option<String>,
    pub html: Option<String>,
    pub markdown: Option<String>,
    pub svg: Option<String>,
    pub png: Option<String>,
    pub jpeg: Option<String>,
    pub pdf: Option<String>,
    pub latex: Option<String>,
    pub json: Option<serde_json::Value>,
    pub javascript: Option<String>,
    /// Other MIME types, by type.
    pub extra: BTreeMap<String, serde_json::Value>,
    /// The value of the cell's last expression (not a `display()` call).
    pub is_main_result: bool,
}

impl DisplayData {
    /// Sorts a MIME bundle into the known fields and `extra`.
    pub fn from_bundle(
        bundle: serde_json::Map<String, serde_json::Value>,
        main: bool,
    ) -> DisplayData {
        let mut out = DisplayData {
            is_main_result: main,
            ..DisplayData::default()
        };
        for (mime, value) in bundle {
            let text = || match &value {
                serde_json::Value::String(s) => Some(s.clone()),
                other => Some(other.to_string()),
            };
            match mime.as_str() {
                "text/plain" => out.text = text(),
                "text/html" => out.html = text(),
                "text/markdown" => out.markdown = text(),
                "image/svg+xml" => out.svg = text(),
                "image/png" => out.png = text(),
                "image/jpeg" => out.jpeg = text(),
                "application/pdf" => out.pdf = text(),
                "text/latex" => out.latex = text(),
                "application/json" => out.json = Some(value),
                "application/javascript" => out.javascript = text(),
                _ => {
                    out.extra.insert(mime, value);
                }
            }
        }
        out
    }

    /// The MIME types this output has, in the reference's order.
    pub fn formats(&self) -> Vec<&str> {
        let known = [
            ("text", self.text.is_some()),
            ("html", self.html.is_some()),
            ("markdown", self.markdown.is_some()),
            ("svg", self.svg.is_some()),
            ("png", self.png.is_some()),
            ("jpeg", self.jpeg.is_some()),
            ("pdf", self.pdf.is_some()),
            ("latex", self.latex.is_some()),
            ("json", self.json.is_some()),
            ("javascript", self.javascript.is_some()),
        ];
        let mut out: Vec<&str> = known
            .iter()
            .filter(|(_, has)| *has)
            .map(|(n, _)| *n)
            .collect();
        out.extend(self.extra.keys().map(String::as_str));
        out
    }
}

/// The error a cell raised (or the reason it did not finish).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecutionError {
    /// The exception's class (`ZeroDivisionError`, `KeyboardInterrupt`,
    /// `TypeError`), or sandlot's name for what ended the cell:
    /// [`TIMEOUT_ERROR`], [`CONTEXT_EXITED`], [`PROTOCOL_ERROR`],
    /// [`EXIT_STATUS`].
    pub name: String,
    pub value: String,
    /// As the interpreter prints it; names the cell's line.
    pub traceback: String,
}

/// A cell that outlived its timeout and its grace period: its interpreter
/// was killed.
pub const TIMEOUT_ERROR: &str = "TimeoutError";
/// The interpreter ended during the cell (`exit` in bash, `os._exit`).
pub const CONTEXT_EXITED: &str = "ContextExited";
/// The driver sent something that is not the protocol.
pub const PROTOCOL_ERROR: &str = "ProtocolError";
/// A bash cell whose last command failed.
pub const EXIT_STATUS: &str = "ExitStatus";

/// Everything one cell produced.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Execution {
    /// Output in the pieces it arrived in (decoded as UTF-8; invalid bytes
    /// become U+FFFD).
    pub stdout: Vec<String>,
    pub stderr: Vec<String>,
    pub results: Vec<DisplayData>,
    pub error: Option<ExecutionError>,
    /// The interpreter's cell number (1 for the first cell of a context).
    pub execution_count: u32,
    /// bash: the cell's exit status.
    pub exit_status: Option<i32>,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    pub results_truncated: bool,
    /// The cell ran past its timeout (an interrupt was sent).
    pub timed_out: bool,
    /// The interpreter is gone (killed after an ignored interrupt, exited,
    /// broke the protocol): the next cell starts a new one, without the
    /// context's earlier variables.
    pub state_lost: bool,
}

impl Execution {
    /// The main result: the value of the cell's last expression.
    pub fn main_result(&self) -> Option<&DisplayData> {
        self.results.iter().find(|r| r.is_main_result)
    }

    /// The main result's text.
    pub fn text(&self) -> Option<&str> {
        self.main_result().and_then(|r| r.text.as_deref())
    }

    /// All of stdout as one string.
    pub fn stdout_text(&self) -> String {
        self.stdout.concat()
    }

    pub fn stderr_text(&self) -> String {
        self.stderr.concat()
    }
}
