//! `nettool.py` (a small Python client and server) run inside a sandbox
//! against the fake internet, and what its JSON answers mean.

use sandlot::Sandbox;
use serde_json::Value;
use std::time::Duration;

/// The tool's source, for `files().write("/tmp/nettool.py", TOOL)`.
pub const TOOL: &str = include_str!("nettool.py");

/// Runs nettool inside; its JSON answer.
pub fn tool(sb: &Sandbox, args: &[&str]) -> Value {
    let out = sb
        .command("python3")
        .arg("/tmp/nettool.py")
        .args(args.iter().copied())
        .timeout(Duration::from_secs(60))
        .output()
        .unwrap_or_else(|e| panic!("nettool {args:?}: {e}"));
    let stdout = out.stdout_str();
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "nettool {args:?}: {e}: stdout {stdout:?} stderr {:?}",
            out.stderr_str()
        )
    })
}

pub fn get(sb: &Sandbox, host: &str, port: u16, header: &str, path: &str) -> Value {
    tool(sb, &["get", host, &port.to_string(), header, path])
}

pub fn ok(v: &Value) -> bool {
    v["ok"] == Value::Bool(true)
}

/// The answer is a failure of this kind (an exception class name).
pub fn failed_with(v: &Value, error: &str) -> bool {
    !ok(v) && v["error"] == error
}

/// Refused by the proxy: the handshake had completed inside the
/// namespace, then the connection was reset.
pub fn reset(v: &Value) -> bool {
    failed_with(v, "ConnectionResetError")
}

pub fn body(v: &Value) -> String {
    assert!(ok(v), "expected success, got {v}");
    v["body"].as_str().unwrap_or_default().to_string()
}
