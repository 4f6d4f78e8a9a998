//! The drivers sandlot ships inside its binary, and how each is started.

use super::protocol::Dialect;
use super::types::Language;

/// The Python driver (IPython when importable, else the standard library).
pub const PYTHON_DRIVER: &str = include_str!("drivers/python.py");
/// The JavaScript driver for node.
pub const NODE_DRIVER: &str = include_str!("drivers/node.js");
/// The bash driver: shell code bash reads as its first input.
pub const BASH_DRIVER: &str = include_str!("drivers/bash.sh");

/// Where the request pipe goes in the driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestFd {
    /// fd 3 (fd 0 is /dev/null).
    Three,
    /// fd 0: bash reads its commands there.
    Stdin,
}

/// The message pipe's number in every driver.
pub const MESSAGE_FD: i32 = 4;
/// The request pipe's number when it is not stdin.
pub const REQUEST_FD: i32 = 3;

/// How to start one language's driver.
#[derive(Debug, Clone)]
pub struct DriverSpec {
    pub argv: Vec<String>,
    pub requests: RequestFd,
    pub dialect: Dialect,
    /// Written on the request pipe before anything else.
    pub bootstrap: &'static str,
}

/// The driver for `language`, run by `interpreter` (the program and its own
/// options, e.g. `["python3"]`).
pub fn spec(language: Language, interpreter: &[String], ipython: bool) -> DriverSpec {
    let mut argv = interpreter.to_vec();
    match language {
        Language::Python => {
            // -u: stdout and stderr unbuffered, so output streams as printed.
            argv.extend(["-u", "-c", PYTHON_DRIVER].map(String::from));
            if !ipython {
                argv.push("--no-ipython".into());
            }
            DriverSpec {
                argv,
                requests: RequestFd::Three,
                dialect: Dialect::Plain,
                bootstrap: "",
            }
        }
        Language::JavaScript => {
            argv.extend(["--expose-internals", "-e", NODE_DRIVER].map(String::from));
            DriverSpec {
                argv,
                requests: RequestFd::Three,
                dialect: Dialect::Plain,
                bootstrap: "",
            }
        }
        Language::Bash => {
            argv.extend(["--norc", "--noprofile", "--noediting", "-i"].map(String::from));
            DriverSpec {
                argv,
                requests: RequestFd::Stdin,
                dialect: Dialect::Bash,
                bootstrap: BASH_DRIVER,
            }
        }
    }
}
