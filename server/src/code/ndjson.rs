//! The lines of an `/execute` answer, as the code-interpreter SDKs parse
//! them: one JSON object per line with a `type` of `stdout`, `stderr`
//! (`text`, `timestamp` in nanoseconds since the epoch), `result` (one
//! field per representation, `extra`, `is_main_result`), `error` (`name`,
//! `value`, `traceback`), `number_of_executions` (`execution_count`) and
//! finally `end_of_execution`.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use sandlot::code::{DisplayData, ExecutionError};
use serde_json::{json, Map, Value};

fn line(value: Value) -> Bytes {
    let mut out = serde_json::to_vec(&value).unwrap_or_default();
    out.push(b'\n');
    Bytes::from(out)
}

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

pub fn stdout(text: &str) -> Bytes {
    line(json!({ "type": "stdout", "text": text, "timestamp": now_nanos() }))
}

pub fn stderr(text: &str) -> Bytes {
    line(json!({ "type": "stderr", "text": text, "timestamp": now_nanos() }))
}

/// A string's repr loses its quotes, as the reference's results do
/// (`'abc'` → `abc`), so that `execution.text` of a string is the string.
fn plain_text(text: &str) -> &str {
    if text.len() >= 2 && text.starts_with('\'') && text.ends_with('\'') {
        &text[1..text.len() - 1]
    } else {
        text
    }
}

pub fn result(data: &DisplayData) -> Bytes {
    let mut out = Map::new();
    out.insert("type".into(), json!("result"));
    let text_fields = [
        ("html", &data.html),
        ("markdown", &data.markdown),
        ("svg", &data.svg),
        ("png", &data.png),
        ("jpeg", &data.jpeg),
        ("pdf", &data.pdf),
        ("latex", &data.latex),
        ("javascript", &data.javascript),
    ];
    if let Some(text) = &data.text {
        out.insert("text".into(), json!(plain_text(text)));
    }
    for (name, value) in text_fields {
        if let Some(value) = value {
            out.insert(name.into(), json!(value));
        }
    }
    if let Some(value) = &data.json {
        out.insert("json".into(), value.clone());
    }
    if !data.extra.is_empty() {
        out.insert("extra".into(), json!(data.extra));
    }
    out.insert("is_main_result".into(), json!(data.is_main_result));
    line(Value::Object(out))
}

pub fn error(e: &ExecutionError) -> Bytes {
    line(json!({
        "type": "error",
        "name": e.name,
        "value": e.value,
        "traceback": e.traceback,
    }))
}

pub fn number_of_executions(count: u32) -> Bytes {
    line(json!({ "type": "number_of_executions", "execution_count": count }))
}

pub fn end_of_execution() -> Bytes {
    line(json!({ "type": "end_of_execution" }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(b: Bytes) -> Value {
        assert_eq!(b.last(), Some(&b'\n'));
        assert_eq!(b.iter().filter(|&&c| c == b'\n').count(), 1, "one line");
        serde_json::from_slice(&b).unwrap()
    }

    #[test]
    fn results_carry_each_representation_and_strip_string_quotes() {
        let mut data = DisplayData {
            text: Some("'hello'".into()),
            html: Some("<b>x</b>".into()),
            png: Some("iVBOR".into()),
            is_main_result: true,
            ..DisplayData::default()
        };
        data.extra.insert("text/x-custom".into(), json!("y"));
        let v = parse(result(&data));
        assert_eq!(v["type"], "result");
        assert_eq!(v["text"], "hello");
        assert_eq!(v["html"], "<b>x</b>");
        assert_eq!(v["png"], "iVBOR");
        assert_eq!(v["extra"]["text/x-custom"], "y");
        assert_eq!(v["is_main_result"], true);
        assert!(
            v.get("svg").is_none(),
            "absent representations are left out"
        );
        let v = parse(result(&DisplayData {
            text: Some("42".into()),
            ..DisplayData::default()
        }));
        assert_eq!(v["text"], "42");
        assert!(v.get("extra").is_none());
    }

    #[test]
    fn output_and_control_lines() {
        let v = parse(stdout("a\nb"));
        assert_eq!(
            (v["type"].as_str(), v["text"].as_str()),
            (Some("stdout"), Some("a\nb"))
        );
        assert!(v["timestamp"].as_u64().unwrap() > 1_600_000_000_000_000_000);
        assert_eq!(parse(stderr("e"))["type"], "stderr");
        let v = parse(error(&ExecutionError {
            name: "ZeroDivisionError".into(),
            value: "division by zero".into(),
            traceback: "tb".into(),
        }));
        assert_eq!(v["name"], "ZeroDivisionError");
        assert_eq!(parse(number_of_executions(3))["execution_count"], 3);
        assert_eq!(
            parse(end_of_execution()),
            json!({"type": "end_of_execution"})
        );
    }
}
