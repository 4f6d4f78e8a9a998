//! What one cell has produced so far: output pieces under the cell's caps,
//! UTF-8 decoded across read boundaries, each handed to the caller's
//! callback as it arrives.

use super::types::{CellOptions, DisplayData, Execution, ExecutionError};

/// UTF-8 text from a byte stream whose reads may split a character.
#[derive(Debug, Default)]
pub(crate) struct Utf8Stream {
    carry: Vec<u8>,
}

impl Utf8Stream {
    /// Decodes what `bytes` completes; an incomplete character at the end
    /// waits for the next call, invalid bytes become U+FFFD.
    pub fn decode(&mut self, bytes: &[u8]) -> String {
        self.carry.extend_from_slice(bytes);
        let mut out = String::with_capacity(self.carry.len());
        let mut rest: &[u8] = &self.carry;
        loop {
            match std::str::from_utf8(rest) {
                Ok(text) => {
                    out.push_str(text);
                    rest = &[];
                    break;
                }
                Err(e) => {
                    let (good, bad) = rest.split_at(e.valid_up_to());
                    out.push_str(std::str::from_utf8(good).unwrap_or_default());
                    match e.error_len() {
                        Some(n) => {
                            out.push('\u{FFFD}');
                            rest = &bad[n..];
                        }
                        None => {
                            rest = bad;
                            break;
                        }
                    }
                }
            }
        }
        let keep = rest.len();
        self.carry.drain(..self.carry.len() - keep);
        out
    }

    /// What is left at the end of the stream.
    pub fn finish(&mut self) -> String {
        let out = String::from_utf8_lossy(&self.carry).into_owned();
        self.carry.clear();
        out
    }
}

struct Capped {
    kept: u64,
    text: Utf8Stream,
}

pub(crate) struct CellOutput<'a> {
    pub execution: Execution,
    cap: u64,
    stdout: Capped,
    stderr: Capped,
    results_bytes: u64,
    options: &'a mut CellOptions,
}

impl<'a> CellOutput<'a> {
    pub fn new(cap: u64, options: &'a mut CellOptions) -> CellOutput<'a> {
        let capped = || Capped {
            kept: 0,
            text: Utf8Stream::default(),
        };
        CellOutput {
            execution: Execution::default(),
            cap,
            stdout: capped(),
            stderr: capped(),
            results_bytes: 0,
            options,
        }
    }

    pub fn stdout(&mut self, bytes: &[u8]) {
        let cap = self.cap;
        if let Some(text) = take(
            &mut self.stdout,
            cap,
            bytes,
            &mut self.execution.stdout_truncated,
        ) {
            if let Some(f) = self.options.on_stdout.as_mut() {
                f(&text);
            }
            self.execution.stdout.push(text);
        }
    }

    pub fn stderr(&mut self, bytes: &[u8]) {
        let cap = self.cap;
        if let Some(text) = take(
            &mut self.stderr,
            cap,
            bytes,
            &mut self.execution.stderr_truncated,
        ) {
            if let Some(f) = self.options.on_stderr.as_mut() {
                f(&text);
            }
            self.execution.stderr.push(text);
        }
    }

    /// A rich output of `size` payload bytes; dropped past the cap.
    pub fn result(
        &mut self,
        bundle: serde_json::Map<String, serde_json::Value>,
        main: bool,
        size: usize,
    ) {
        if self.results_bytes + size as u64 > self.cap {
            self.execution.results_truncated = true;
            return;
        }
        self.results_bytes += size as u64;
        let data = DisplayData::from_bundle(bundle, main);
        if let Some(f) = self.options.on_result.as_mut() {
            f(&data);
        }
        self.execution.results.push(data);
    }

    pub fn error(&mut self, error: ExecutionError) {
        if let Some(f) = self.options.on_error.as_mut() {
            f(&error);
        }
        self.execution.error = Some(error);
    }

    pub fn finish(mut self) -> Execution {
        for (stream, pieces, callback) in [
            (
                &mut self.stdout,
                &mut self.execution.stdout,
                &mut self.options.on_stdout,
            ),
            (
                &mut self.stderr,
                &mut self.execution.stderr,
                &mut self.options.on_stderr,
            ),
        ] {
            let tail = stream.text.finish();
            if !tail.is_empty() {
                if let Some(f) = callback.as_mut() {
                    f(&tail);
                }
                pieces.push(tail);
            }
        }
        self.execution
    }
}

/// The part of `bytes` under the cap, decoded; flags what is dropped.
fn take(stream: &mut Capped, cap: u64, bytes: &[u8], truncated: &mut bool) -> Option<String> {
    let room = cap.saturating_sub(stream.kept);
    let n = (bytes.len() as u64).min(room) as usize;
    if n < bytes.len() {
        *truncated = true;
    }
    if n == 0 {
        return None;
    }
    stream.kept += n as u64;
    let text = stream.text.decode(&bytes[..n]);
    (!text.is_empty()).then_some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn characters_split_across_reads_are_joined() {
        let mut s = Utf8Stream::default();
        let bytes = "é€😀".as_bytes();
        let mut out = String::new();
        for b in bytes {
            out.push_str(&s.decode(std::slice::from_ref(b)));
        }
        out.push_str(&s.finish());
        assert_eq!(out, "é€😀");
    }

    #[test]
    fn invalid_bytes_become_replacement_characters() {
        let mut s = Utf8Stream::default();
        assert_eq!(s.decode(b"a\xffb"), "a\u{FFFD}b");
        assert_eq!(s.decode(b"\xe2\x82"), "");
        assert_eq!(s.finish(), "\u{FFFD}");
    }

    #[test]
    fn output_past_the_cap_is_dropped_and_flagged() {
        let mut options = CellOptions::default();
        let mut out = CellOutput::new(5, &mut options);
        out.stdout(b"abc");
        out.stdout(b"defgh");
        out.stdout(b"ij");
        let execution = out.finish();
        assert_eq!(execution.stdout_text(), "abcde");
        assert!(execution.stdout_truncated);
        assert!(!execution.stderr_truncated);
    }
}
