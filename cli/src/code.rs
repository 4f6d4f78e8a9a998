//! `sandlot code`: code cells in one stateful context of a new sandbox.

use std::io::{self, Read, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use sandlot::code::{CellOptions, CodeContextOptions, DisplayData, Execution, Language};
use sandlot::{Error, Runtime, Sandbox, SandboxOptions};
use serde_json::{json, Map, Value};

use crate::parse::parse_duration;

#[derive(Args)]
pub struct CodeArgs {
    /// Template to start from (see `sandlot template ls`).
    #[arg(long, short, default_value = "base")]
    pub template: String,
    /// The context's language: python, javascript or bash.
    #[arg(long, short, default_value = "python", value_parser = parse_language)]
    pub language: Language,
    /// Print one JSON object per cell per line: stdout, stderr, results,
    /// error, execution_count.
    #[arg(long)]
    pub json: bool,
    /// Interrupt a cell that runs longer, e.g. 30s (default 300s).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub cell_timeout: Option<Duration>,
    /// A cell to run (repeatable, run in order). Without any, one cell is
    /// read from stdin.
    #[arg(short = 'c', long = "cell", value_name = "CELL")]
    pub cells: Vec<String>,
}

pub fn parse_language(text: &str) -> Result<Language, String> {
    text.parse::<Language>().map_err(|e| e.to_string())
}

pub fn main(data_dir: &Path, args: CodeArgs) -> Result<ExitCode, Error> {
    let cells = if args.cells.is_empty() {
        let mut cell = String::new();
        io::stdin()
            .read_to_string(&mut cell)
            .map_err(|e| Error::Io {
                context: "read a cell from stdin".into(),
                source: e,
            })?;
        vec![cell]
    } else {
        args.cells
    };
    let runtime = Runtime::builder().data_dir(data_dir).build()?;
    let sandbox = runtime.create(SandboxOptions::template(&args.template))?;
    let outcome = run_cells(
        &sandbox,
        args.language,
        &cells,
        args.json,
        args.cell_timeout,
    );
    sandbox.kill()?;
    outcome
}

fn run_cells(
    sandbox: &Sandbox,
    language: Language,
    cells: &[String],
    as_json: bool,
    timeout: Option<Duration>,
) -> Result<ExitCode, Error> {
    let context = sandbox
        .code()
        .create_context(CodeContextOptions::new(language))?;
    for cell in cells {
        let mut options = CellOptions {
            timeout,
            ..CellOptions::default()
        };
        if !as_json {
            options = options
                .on_stdout(|text| {
                    let mut out = io::stdout().lock();
                    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
                })
                .on_stderr(|text| {
                    let mut err = io::stderr().lock();
                    let _ = err.write_all(text.as_bytes()).and_then(|()| err.flush());
                });
        }
        let execution = sandbox.code().run(&context, cell, options)?;
        if as_json {
            println!("{}", execution_json(&execution));
        } else {
            print_results(&execution);
        }
        if execution.error.is_some() {
            return Ok(ExitCode::from(1));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// What a person sees after a cell's streamed output: its displays and
/// main result (text, or the kinds of output it has), its error.
pub fn print_results(execution: &Execution) {
    let mut out = io::stdout().lock();
    for result in &execution.results {
        let _ = writeln!(out, "{}", summary(result));
    }
    let _ = out.flush();
    if let Some(error) = &execution.error {
        let mut err = io::stderr().lock();
        if error.traceback.is_empty() {
            let _ = writeln!(err, "{}: {}", error.name, error.value);
        } else {
            let _ = write!(err, "{}", error.traceback);
            if !error.traceback.ends_with('\n') {
                let _ = writeln!(err);
            }
        }
    }
    for (flag, what) in [
        (execution.stdout_truncated, "stdout"),
        (execution.stderr_truncated, "stderr"),
        (execution.results_truncated, "results"),
    ] {
        if flag {
            eprintln!("sandlot: the cell's {what} was truncated");
        }
    }
}

/// A result's text, or the formats it came in (`<png>`, `<html, svg>`).
fn summary(result: &DisplayData) -> String {
    match &result.text {
        Some(text) => text.clone(),
        None => format!("<{}>", result.formats().join(", ")),
    }
}

/// One cell as a JSON object, in the shape of the reference's SDK.
pub fn execution_json(execution: &Execution) -> Value {
    json!({
        "stdout": execution.stdout,
        "stderr": execution.stderr,
        "results": execution.results.iter().map(result_json).collect::<Vec<_>>(),
        "error": execution.error.as_ref().map(|e| json!({
            "name": e.name,
            "value": e.value,
            "traceback": e.traceback,
        })),
        "execution_count": execution.execution_count,
    })
}

/// A result with the formats it has (absent ones left out).
fn result_json(result: &DisplayData) -> Value {
    let mut object = Map::new();
    let texts = [
        ("text", &result.text),
        ("html", &result.html),
        ("markdown", &result.markdown),
        ("svg", &result.svg),
        ("png", &result.png),
        ("jpeg", &result.jpeg),
        ("pdf", &result.pdf),
        ("latex", &result.latex),
        ("javascript", &result.javascript),
    ];
    for (key, value) in texts {
        if let Some(value) = value {
            object.insert(key.into(), Value::String(value.clone()));
        }
    }
    if let Some(value) = &result.json {
        object.insert("json".into(), value.clone());
    }
    if !result.extra.is_empty() {
        object.insert(
            "extra".into(),
            Value::Object(result.extra.clone().into_iter().collect()),
        );
    }
    object.insert("is_main_result".into(), Value::Bool(result.is_main_result));
    Value::Object(object)
}
