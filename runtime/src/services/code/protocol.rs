//! The framing between the host and a code context's driver.
//!
//! A driver has four channels, all pipes the host owns:
//!
//! | driver fd | direction | carries |
//! |---|---|---|
//! | 1, 2 | driver → host | the cell's stdout and stderr, raw bytes, read like a command's output (subprocesses of the cell write there too) |
//! | 3 (bash: 0) | host → driver | requests |
//! | 4 | driver → host | messages |
//!
//! Python and node take private close-on-exec copies of fds 3 and 4 at
//! start and close the originals, and fd 0 is /dev/null, so user code and
//! its children never see the control pipes. The bash driver is bash
//! itself reading commands from fd 0; every cell runs with fd 0 on
//! /dev/null and without the message pipe.
//!
//! # Requests (host → driver)
//!
//! One per cell, bytes with explicit lengths, so that no driver needs a
//! JSON parser to read one (bash reads them with `read -N`):
//!
//! ```text
//! __sandlot_cell <id> <env count> <code bytes>\n
//! <key bytes> <value bytes>\n<key><value>        (once per variable)
//! <code>
//! ```
//!
//! The bash dialect is one command line per cell instead, which bash's
//! own parser reads (bash buffers its input, so nothing else may read from
//! the pipe it parses):
//!
//! ```text
//! __sandlot_cell <id> $'<code>' [<key> $'<value>']... && eval "$__sandlot_run" </dev/null {__sandlot_msg}>&-\n
//! ```
//!
//! Code and values are ANSI-C quoted (`\\`, `\'`, `\n`, other control
//! bytes as `\xHH`), so the line is a single physical line whatever the
//! code holds. The function `__sandlot_cell` keeps the code; the rest of the
//! line runs it at the shell's top level. Code and variables hold no NUL
//! byte and keys are identifiers; [`validate_cell`] refuses anything else
//! before it is sent.
//!
//! # Messages (driver → host)
//!
//! Each message is `<payload bytes, decimal>\n<payload>`, the payload one
//! JSON object with a `type`:
//!
//! - `ready {protocol, language, version, ipython?}`: once, when the driver
//!   can take cells; anything the interpreter printed before is start-up
//!   noise, kept only to explain a failed start.
//! - `start {id, execution_count}`: the cell's code was read and is about
//!   to run. The host sends SIGINT only after it, so an interrupt never
//!   lands in the middle of a request.
//! - `display {id, data, main}`: a rich output, `data` a MIME bundle
//!   (`text/plain`, `text/html`, `image/png` as base64, …); `main` marks
//!   the value of the cell's last expression.
//! - `error {id, name, value, traceback}`: the cell raised.
//! - `done {id, execution_count, status?}`: the cell ended (`status`: the
//!   bash cell's exit status). The driver flushes its stdout and stderr
//!   before it sends `done` (and before each `display`), and the host reads
//!   what is already in those pipes before it completes the cell, so no
//!   output of the cell is lost or attributed to the next one.
//!
//! The driver runs untrusted code, so its messages are untrusted too. A
//! header longer than [`MAX_HEADER`] bytes, a length that is not a decimal
//! number, or a payload that is not a known message is a protocol error:
//! the cell fails and the context is restarted (the stream cannot be
//! trusted to be in step any more). A payload longer than [`MAX_MESSAGE`]
//! is skipped without being stored (the stream stays in step) and the
//! cell's results are flagged truncated. No input makes the host allocate
//! more than [`MAX_MESSAGE`] plus one read buffer per context.

use serde::Deserialize;

/// The protocol version drivers announce in `ready`.
pub const PROTOCOL_VERSION: u32 = 1;

/// Longest accepted message payload (a PNG of a large figure, base64, fits
/// many times over).
pub const MAX_MESSAGE: usize = 32 << 20;

/// Longest accepted header: the decimal length and its newline.
pub const MAX_HEADER: usize = 12;

/// What ends a bash-dialect request: run the code just kept, with the
/// cell's variables, at the top level of the shell, its stdin on /dev/null
/// and without the message pipe.
pub const BASH_RUN: &str = " && eval \"$__sandlot_run\" </dev/null {__sandlot_msg}>&-\n";

/// How a driver reads requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// Python and node: the request as documented.
    Plain,
    /// bash: the header line is also a command line.
    Bash,
}

/// Why a cell cannot be sent as it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CellInputError {
    #[error("the code contains a NUL byte")]
    NulInCode,
    #[error("environment variable name {0:?} is not an identifier ([A-Za-z_][A-Za-z0-9_]*)")]
    BadEnvName(String),
    #[error("environment variable {0} has a NUL byte in its value")]
    NulInEnvValue(String),
}

/// Checks what the request format cannot carry.
pub fn validate_cell(code: &str, env: &[(String, String)]) -> Result<(), CellInputError> {
    if code.contains('\0') {
        return Err(CellInputError::NulInCode);
    }
    for (key, value) in env {
        if !is_identifier(key) {
            return Err(CellInputError::BadEnvName(key.clone()));
        }
        if value.contains('\0') {
            return Err(CellInputError::NulInEnvValue(key.clone()));
        }
    }
    Ok(())
}

pub(crate) fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

/// One cell's request, ready to write. Call [`validate_cell`] first.
pub fn encode_request(id: u64, env: &[(String, String)], code: &str, dialect: Dialect) -> Vec<u8> {
    if dialect == Dialect::Bash {
        let mut line = format!("__sandlot_cell {id} {}", bash_quote(code));
        for (key, value) in env {
            line.push_str(&format!(" {key} {}", bash_quote(value)));
        }
        line.push_str(BASH_RUN);
        return line.into_bytes();
    }
    let mut out = Vec::with_capacity(code.len() + 64);
    out.extend_from_slice(format!("__sandlot_cell {id} {} {}\n", env.len(), code.len()).as_bytes());
    for (key, value) in env {
        out.extend_from_slice(format!("{} {}\n", key.len(), value.len()).as_bytes());
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(value.as_bytes());
    }
    out.extend_from_slice(code.as_bytes());
    out
}

/// `text` as one ANSI-C quoted bash word (`$'...'`) on one line.
pub fn bash_quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 3);
    out.push_str("$'");
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// A message from a driver.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Message {
    Ready {
        protocol: u32,
        language: String,
        #[serde(default)]
        version: String,
        #[serde(default)]
        ipython: bool,
    },
    Start {
        id: u64,
        execution_count: u32,
    },
    Display {
        id: u64,
        data: serde_json::Map<String, serde_json::Value>,
        #[serde(default)]
        main: bool,
    },
    Error {
        id: u64,
        name: String,
        value: String,
        traceback: String,
    },
    Done {
        id: u64,
        #[serde(default)]
        execution_count: Option<u32>,
        #[serde(default)]
        status: Option<i32>,
    },
}

/// What the decoder found in the message stream.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    /// A message and its payload size.
    Message(Message, usize),
    /// A payload longer than [`MAX_MESSAGE`], skipped.
    Oversized(u64),
}

/// The driver broke the framing; the stream cannot be trusted any more.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("message header is not a decimal length: {0:?}")]
    BadHeader(String),
    #[error("message is not valid: {0}")]
    BadMessage(String),
}

/// Incremental decoder of the message stream: feed it what a read returned,
/// take out whole messages. Holds at most one payload.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
    /// Bytes of an oversized payload still to drop.
    skip: u64,
}

impl Decoder {
    pub fn new() -> Decoder {
        Decoder::default()
    }

    /// Appends `data` and returns every message it completes.
    pub fn push(&mut self, mut data: &[u8]) -> Result<Vec<Decoded>, ProtocolError> {
        let mut out = Vec::new();
        loop {
            if self.skip > 0 {
                let n = usize::try_from(self.skip)
                    .unwrap_or(usize::MAX)
                    .min(data.len());
                self.skip -= n as u64;
                data = &data[n..];
                if self.skip > 0 {
                    return Ok(out);
                }
            }
            // Copy only up to the end of the current message, so the buffer
            // never holds more than one header and one payload.
            let need = self.needed()?;
            let take = match need {
                Need::Header => data
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(data.len(), |i| i + 1)
                    .min(MAX_HEADER + 1 - self.buf.len().min(MAX_HEADER + 1)),
                Need::Payload { header, len } => (header + len - self.buf.len()).min(data.len()),
                Need::Oversized { .. } | Need::Complete { .. } => 0,
            };
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
            match self.needed()? {
                Need::Complete { header, len } => {
                    let payload = &self.buf[header..header + len];
                    let message = serde_json::from_slice::<Message>(payload)
                        .map_err(|e| ProtocolError::BadMessage(e.to_string()))?;
                    out.push(Decoded::Message(message, len));
                    self.buf.clear();
                }
                Need::Oversized { len } => {
                    out.push(Decoded::Oversized(len));
                    self.skip = len;
                    self.buf.clear();
                }
                Need::Header | Need::Payload { .. } if data.is_empty() => return Ok(out),
                Need::Header | Need::Payload { .. } => {}
            }
        }
    }

    fn needed(&self) -> Result<Need, ProtocolError> {
        let Some(nl) = self.buf.iter().position(|&b| b == b'\n') else {
            if self.buf.len() > MAX_HEADER {
                return Err(self.bad_header());
            }
            return Ok(Need::Header);
        };
        let digits = &self.buf[..nl];
        if digits.is_empty() || digits.len() >= MAX_HEADER || !digits.iter().all(u8::is_ascii_digit)
        {
            return Err(self.bad_header());
        }
        // At most 11 digits: fits a u64.
        let len: u64 = std::str::from_utf8(digits)
            .unwrap_or("0")
            .parse()
            .unwrap_or(u64::MAX);
        if len > MAX_MESSAGE as u64 {
            return Ok(Need::Oversized { len });
        }
        let (header, len) = (nl + 1, len as usize);
        if self.buf.len() >= header + len {
            Ok(Need::Complete { header, len })
        } else {
            Ok(Need::Payload { header, len })
        }
    }

    fn bad_header(&self) -> ProtocolError {
        let shown = &self.buf[..self.buf.len().min(MAX_HEADER + 1)];
        ProtocolError::BadHeader(String::from_utf8_lossy(shown).into_owned())
    }
}

enum Need {
    Header,
    Payload { header: usize, len: usize },
    Complete { header: usize, len: usize },
    Oversized { len: u64 },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(payload: &str) -> Vec<u8> {
        format!("{}\n{payload}", payload.len()).into_bytes()
    }

    #[test]
    fn decodes_messages_split_at_every_byte() {
        let mut stream = frame(r#"{"type":"start","id":1,"execution_count":3}"#);
        stream.extend(frame(r#"{"type":"done","id":1,"status":2}"#));
        let mut decoder = Decoder::new();
        let mut got = Vec::new();
        for byte in &stream {
            got.extend(decoder.push(std::slice::from_ref(byte)).unwrap());
        }
        assert_eq!(got.len(), 2);
        assert!(matches!(
            &got[0],
            Decoded::Message(
                Message::Start {
                    id: 1,
                    execution_count: 3
                },
                _
            )
        ));
        assert!(matches!(
            &got[1],
            Decoded::Message(
                Message::Done {
                    id: 1,
                    status: Some(2),
                    execution_count: None
                },
                _
            )
        ));
    }

    #[test]
    fn oversized_payload_is_skipped_and_the_stream_stays_in_step() {
        let mut decoder = Decoder::new();
        let huge = MAX_MESSAGE as u64 + 10;
        let got = decoder.push(format!("{huge}\n").as_bytes()).unwrap();
        assert_eq!(got, vec![Decoded::Oversized(huge)]);
        let chunk = vec![b'x'; 1 << 20];
        let mut left = huge;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            assert!(decoder.push(&chunk[..n]).unwrap().is_empty());
            left -= n as u64;
            assert!(decoder.buf.capacity() <= MAX_HEADER + 1 + 64);
        }
        let got = decoder.push(&frame(r#"{"type":"done","id":7}"#)).unwrap();
        assert!(matches!(
            &got[..],
            [Decoded::Message(Message::Done { id: 7, .. }, _)]
        ));
    }

    #[test]
    fn garbage_is_a_protocol_error() {
        for bad in [
            &b"hello\n"[..],
            b"12345678901234567890",
            b"-1\n{}",
            b"\n",
            b"3\nabc",
            b"2\n{}",
        ] {
            let result = Decoder::new().push(bad);
            assert!(
                result.is_err(),
                "{:?} decoded as {result:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn requests_carry_env_and_code_with_byte_lengths() {
        let env = vec![("A".to_string(), "é x".to_string())];
        let req = encode_request(4, &env, "print('ü')", Dialect::Plain);
        assert_eq!(req, "__sandlot_cell 4 1 11\n1 4\nAé xprint('ü')".as_bytes());
        let env = vec![("K".to_string(), "a'b".to_string())];
        let bash =
            String::from_utf8(encode_request(5, &env, "echo 'x'\n\tls\\", Dialect::Bash)).unwrap();
        assert_eq!(
            bash,
            format!("__sandlot_cell 5 $'echo \\'x\\'\\n\\x09ls\\\\' K $'a\\'b'{BASH_RUN}")
        );
        assert_eq!(bash.matches('\n').count(), 1, "one physical line");
    }

    #[test]
    fn cell_input_is_validated() {
        assert_eq!(validate_cell("a\0", &[]), Err(CellInputError::NulInCode));
        let bad = vec![("1A".to_string(), String::new())];
        assert_eq!(
            validate_cell("", &bad),
            Err(CellInputError::BadEnvName("1A".into()))
        );
        let bad = vec![("A".to_string(), "\0".to_string())];
        assert_eq!(
            validate_cell("", &bad),
            Err(CellInputError::NulInEnvValue("A".into()))
        );
        assert!(validate_cell("x = 1", &[("_OK1".into(), "v".into())]).is_ok());
    }
}
