//! `sandlot repl`: a prompt for a person, backed by one code context in a
//! new sandbox. rustyline edits the line and keeps the history; a cell
//! spans several lines while it is visibly unfinished (open brackets or
//! quotes, a block after `:` until an empty line, a trailing backslash,
//! an open `if`/`do`/`case` in bash). Ctrl-C at the prompt clears the
//! line; while a cell runs it interrupts the cell. Ctrl-D leaves.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use clap::Args;
use rustyline::completion::Completer;
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::history::DefaultHistory;
use rustyline::validate::{ValidationContext, ValidationResult, Validator};
use rustyline::{Editor, Helper};
use sandlot::code::{CellOptions, CodeContextOptions, Context, Language};
use sandlot::{Error, Runtime, Sandbox, SandboxOptions};
use signal_hook::consts::SIGINT;
use signal_hook::iterator::Signals;

use crate::code::{parse_language, print_results};

#[derive(Args)]
pub struct ReplArgs {
    /// Template to start from (see `sandlot template ls`).
    #[arg(long, short, default_value = "base")]
    pub template: String,
    /// The context's language: python, javascript or bash.
    #[arg(long, short, default_value = "python", value_parser = parse_language)]
    pub language: Language,
}

fn io_error(context: &str) -> impl FnOnce(io::Error) -> Error + '_ {
    move |source| Error::Io {
        context: context.into(),
        source,
    }
}

fn readline_error(e: ReadlineError) -> Error {
    Error::Io {
        context: "read a line".into(),
        source: io::Error::other(e.to_string()),
    }
}

/// Where the history is kept between sessions: `~/.sandlot_history`.
fn history_file() -> Option<PathBuf> {
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".sandlot_history"))
}

pub fn main(data_dir: &Path, args: ReplArgs) -> Result<ExitCode, Error> {
    let runtime = Runtime::builder().data_dir(data_dir).build()?;
    let sandbox = Arc::new(runtime.create(SandboxOptions::template(&args.template))?);
    let outcome = session(&sandbox, args.language);
    sandbox.kill()?;
    outcome.map(|()| ExitCode::SUCCESS)
}

fn session(sandbox: &Arc<Sandbox>, language: Language) -> Result<(), Error> {
    let context = sandbox
        .code()
        .create_context(CodeContextOptions::new(language))?;
    let mut editor: Editor<Continuation, DefaultHistory> = Editor::new().map_err(readline_error)?;
    editor.set_helper(Some(Continuation { language }));
    let history = history_file();
    if let Some(path) = &history {
        let _ = editor.load_history(path);
    }
    let running = Arc::new(AtomicBool::new(false));
    let mut signals = Signals::new([SIGINT]).map_err(io_error("watch SIGINT"))?;
    let signal_handle = signals.handle();
    let interrupter = {
        let (sandbox, context, running) = (sandbox.clone(), context.clone(), running.clone());
        std::thread::Builder::new()
            .name("sandlot-sigint".into())
            .spawn(move || {
                for _ in signals.forever() {
                    if running.load(Ordering::SeqCst) {
                        let _ = sandbox.code().interrupt(&context);
                    }
                }
            })
            .map_err(io_error("start the signal thread"))?
    };
    println!(
        "sandlot {} repl in sandbox {} (Ctrl-D leaves)",
        language,
        sandbox.id()
    );
    let prompt = match language {
        Language::Python => ">>> ",
        Language::JavaScript => "> ",
        Language::Bash => "$ ",
    };
    let outcome = loop {
        match editor.readline(prompt) {
            Ok(line) if line.trim().is_empty() => {}
            Ok(line) => {
                let _ = editor.add_history_entry(line.as_str());
                if let Err(e) = run_cell(sandbox, &context, &line, &running) {
                    break Err(e);
                }
            }
            Err(ReadlineError::Interrupted) => {}
            Err(ReadlineError::Eof) => break Ok(()),
            Err(e) => break Err(readline_error(e)),
        }
    };
    if let Some(path) = &history {
        let _ = editor.save_history(path);
    }
    signal_handle.close();
    let _ = interrupter.join();
    outcome
}

fn run_cell(
    sandbox: &Sandbox,
    context: &Context,
    code: &str,
    running: &AtomicBool,
) -> Result<(), Error> {
    let options = CellOptions::default()
        .on_stdout(|text| {
            let mut out = io::stdout().lock();
            let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
        })
        .on_stderr(|text| {
            let mut err = io::stderr().lock();
            let _ = err.write_all(text.as_bytes()).and_then(|()| err.flush());
        });
    running.store(true, Ordering::SeqCst);
    let execution = sandbox.code().run(context, code, options);
    running.store(false, Ordering::SeqCst);
    let execution = execution?;
    print_results(&execution);
    if execution.state_lost {
        eprintln!("sandlot: the interpreter was restarted; earlier state is gone");
    }
    Ok(())
}

/// Decides whether Enter ends the cell or starts another line of it.
struct Continuation {
    language: Language,
}

impl Helper for Continuation {}
impl Completer for Continuation {
    type Candidate = String;
}
impl Hinter for Continuation {
    type Hint = String;
}
impl Highlighter for Continuation {}

impl Validator for Continuation {
    fn validate(&self, ctx: &mut ValidationContext<'_>) -> rustyline::Result<ValidationResult> {
        Ok(if unfinished(self.language, ctx.input()) {
            ValidationResult::Incomplete
        } else {
            ValidationResult::Valid(None)
        })
    }
}

/// Whether `input` visibly needs more lines.
pub fn unfinished(language: Language, input: &str) -> bool {
    let scan = Scan::of(language, input);
    if scan.depth > 0 || scan.open_quote || input.trim_end_matches(' ').ends_with('\\') {
        return true;
    }
    let last_line_empty = input
        .rsplit('\n')
        .next()
        .is_some_and(|l| l.trim().is_empty());
    match language {
        // A block (a line ending in `:`) goes on until an empty line, as
        // in Python's own prompt.
        Language::Python => input.lines().any(|l| l.trim_end().ends_with(':')) && !last_line_empty,
        Language::Bash => {
            scan.shell_blocks > 0
                || ["|", "&&", "||"]
                    .iter()
                    .any(|end| input.trim_end().ends_with(end))
        }
        Language::JavaScript => false,
    }
}

/// Brackets and quotes still open at the end of the input (outside
/// strings and comments), and bash's open compound commands.
struct Scan {
    depth: i32,
    open_quote: bool,
    shell_blocks: i32,
}

impl Scan {
    fn of(language: Language, input: &str) -> Scan {
        let comment = match language {
            Language::Python | Language::Bash => "#",
            Language::JavaScript => "//",
        };
        let quotes: &[&str] = match language {
            Language::Python => &["\"\"\"", "'''", "\"", "'"],
            Language::JavaScript => &["`", "\"", "'"],
            Language::Bash => &["\"", "'"],
        };
        let mut depth = 0;
        let mut shell_blocks = 0;
        let mut open: Option<&str> = None;
        let mut word = String::new();
        let mut rest = input;
        let end_word = |word: &mut String, blocks: &mut i32| {
            match word.as_str() {
                "if" | "do" | "case" => *blocks += 1,
                "fi" | "done" | "esac" => *blocks -= 1,
                _ => {}
            }
            word.clear();
        };
        while let Some(c) = rest.chars().next() {
            if let Some(quote) = open {
                if c == '\\' && quote != "'" {
                    rest = &rest[c.len_utf8()..];
                    if let Some(next) = rest.chars().next() {
                        rest = &rest[next.len_utf8()..];
                    }
                    continue;
                }
                if rest.starts_with(quote) {
                    open = None;
                    rest = &rest[quote.len()..];
                    continue;
                }
                if c == '\n' && (quote == "\"" || quote == "'") && language != Language::Bash {
                    open = None; // a one-line string cannot span lines
                }
                rest = &rest[c.len_utf8()..];
                continue;
            }
            if rest.starts_with(comment) {
                end_word(&mut word, &mut shell_blocks);
                rest = rest.find('\n').map_or("", |at| &rest[at..]);
                continue;
            }
            if let Some(quote) = quotes.iter().find(|q| rest.starts_with(**q)) {
                open = Some(quote);
                rest = &rest[quote.len()..];
                continue;
            }
            match c {
                '(' | '[' | '{' => depth += 1,
                ')' | ']' | '}' => depth -= 1,
                _ => {}
            }
            if c.is_alphanumeric() || c == '_' {
                word.push(c);
            } else {
                end_word(&mut word, &mut shell_blocks);
            }
            rest = &rest[c.len_utf8()..];
        }
        end_word(&mut word, &mut shell_blocks);
        Scan {
            depth,
            open_quote: open.is_some(),
            shell_blocks: if language == Language::Bash {
                shell_blocks
            } else {
                0
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_blocks_continue_until_an_empty_line() {
        let py = Language::Python;
        assert!(!unfinished(py, "x = 1"));
        assert!(unfinished(py, "def f():"));
        assert!(unfinished(py, "def f():\n    return 1"));
        assert!(!unfinished(py, "def f():\n    return 1\n"));
        assert!(unfinished(py, "x = (1,"));
        assert!(unfinished(py, "s = \"\"\"doc"));
        assert!(!unfinished(py, "s = ')'  # (\nx = 1"));
        assert!(unfinished(py, "x = 1 + \\"));
    }

    #[test]
    fn bash_compound_commands_and_open_quotes_continue() {
        let sh = Language::Bash;
        assert!(!unfinished(sh, "echo hi"));
        assert!(unfinished(sh, "for i in 1 2; do"));
        assert!(!unfinished(sh, "for i in 1 2; do echo $i; done"));
        assert!(unfinished(sh, "if true; then\n  echo yes"));
        assert!(!unfinished(sh, "if true; then\n  echo yes\nfi"));
        assert!(unfinished(sh, "echo 'open"));
        assert!(unfinished(sh, "ls |"));
        assert!(!unfinished(sh, "echo done # if"));
    }

    #[test]
    fn javascript_brackets_and_template_strings_continue() {
        let js = Language::JavaScript;
        assert!(!unfinished(js, "let a = 1;"));
        assert!(unfinished(js, "function f() {"));
        assert!(unfinished(js, "const s = `line"));
        assert!(!unfinished(js, "const s = `a\nb`;"));
        assert!(!unfinished(js, "// {\nlet b = 2"));
    }
}
