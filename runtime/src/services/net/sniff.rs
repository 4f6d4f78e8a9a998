//! The server name a connection's first bytes announce: the SNI of a TLS
//! ClientHello (tls-parser) or the Host of an HTTP/1 request (httparse).
//! Nothing else of either protocol is read, and the bytes are only
//! peeked: the proxy forwards them untouched once they pass.

use tls_parser::{
    parse_tls_extensions, parse_tls_plaintext, SNIType, TlsExtension, TlsMessage,
    TlsMessageHandshake,
};

/// Most bytes read before deciding: a TLS record (16 KiB + header) or an
/// HTTP request head of that size.
pub const MAX_PEEK: usize = 16 * 1024 + 5;

/// TLS record type of a handshake.
const TLS_HANDSHAKE: u8 = 0x16;

/// What the first bytes say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sniffed {
    /// Not enough bytes yet to tell.
    NeedMore,
    /// A TLS ClientHello, with its SNI host name if it has one.
    Tls(Option<String>),
    /// An HTTP/1 request, with its Host (port removed) if it has one.
    Http(Option<String>),
    /// Looks like TLS or HTTP but cannot be read (a fragmented or
    /// malformed ClientHello, two Host headers, a head over the limit):
    /// refused under domain rules rather than let through unchecked.
    Unreadable,
    /// Another protocol: nothing to check.
    Other,
}

/// Reads `buf` (everything the client sent so far, at most [`MAX_PEEK`]);
/// `at_limit` says no more will be looked at (buffer full or the client
/// stopped sending).
pub fn sniff(buf: &[u8], at_limit: bool) -> Sniffed {
    let Some(&first) = buf.first() else {
        return if at_limit {
            Sniffed::Other
        } else {
            Sniffed::NeedMore
        };
    };
    if first == TLS_HANDSHAKE {
        return sniff_tls(buf, at_limit);
    }
    sniff_http(buf, at_limit)
}

fn sniff_tls(buf: &[u8], at_limit: bool) -> Sniffed {
    if buf.len() < 5 {
        return if at_limit {
            Sniffed::Unreadable
        } else {
            Sniffed::NeedMore
        };
    }
    let record = 5 + u16::from_be_bytes([buf[3], buf[4]]) as usize;
    if buf.len() < record {
        return if at_limit || record > MAX_PEEK {
            Sniffed::Unreadable
        } else {
            Sniffed::NeedMore
        };
    }
    let Ok((_, plaintext)) = parse_tls_plaintext(&buf[..record]) else {
        return Sniffed::Unreadable;
    };
    for message in &plaintext.msg {
        if let TlsMessage::Handshake(TlsMessageHandshake::ClientHello(hello)) = message {
            let Some(ext) = hello.ext else {
                return Sniffed::Tls(None);
            };
            let Ok((_, extensions)) = parse_tls_extensions(ext) else {
                return Sniffed::Unreadable;
            };
            let mut names = extensions.iter().filter_map(|e| match e {
                TlsExtension::SNI(list) => Some(list),
                _ => None,
            });
            return match (names.next(), names.next()) {
                (None, _) => Sniffed::Tls(None),
                (Some(list), None) => host_name(list),
                // Two SNI extensions: a server may read either.
                (Some(_), Some(_)) => Sniffed::Unreadable,
            };
        }
    }
    Sniffed::Unreadable
}

fn host_name(list: &[(SNIType, &[u8])]) -> Sniffed {
    let mut hosts = list.iter().filter(|(kind, _)| *kind == SNIType::HostName);
    match (hosts.next(), hosts.next()) {
        (None, _) => Sniffed::Tls(None),
        (Some((_, name)), None) => match std::str::from_utf8(name) {
            Ok(name) if !name.is_empty() => Sniffed::Tls(Some(name.to_ascii_lowercase())),
            _ => Sniffed::Unreadable,
        },
        (Some(_), Some(_)) => Sniffed::Unreadable,
    }
}

fn sniff_http(buf: &[u8], at_limit: bool) -> Sniffed {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(buf) {
        Ok(httparse::Status::Complete(_)) => {
            let mut hosts = request
                .headers
                .iter()
                .filter(|h| h.name.eq_ignore_ascii_case("host"));
            match (hosts.next(), hosts.next()) {
                (None, _) => Sniffed::Http(None),
                (Some(host), None) => match std::str::from_utf8(host.value) {
                    Ok(value) => match strip_port(value.trim()) {
                        Some(name) => Sniffed::Http(Some(name.to_ascii_lowercase())),
                        None => Sniffed::Unreadable,
                    },
                    Err(_) => Sniffed::Unreadable,
                },
                (Some(_), Some(_)) => Sniffed::Unreadable,
            }
        }
        Ok(httparse::Status::Partial) => {
            // A request line has begun (httparse checked the method token
            // so far); wait for the rest of the head.
            if at_limit || buf.len() >= MAX_PEEK {
                Sniffed::Unreadable
            } else {
                Sniffed::NeedMore
            }
        }
        Err(httparse::Error::TooManyHeaders) => Sniffed::Unreadable,
        Err(_) => Sniffed::Other,
    }
}

/// `example.com:8080` → `example.com`; `[2001:db8::1]:80` → `2001:db8::1`.
fn strip_port(host: &str) -> Option<&str> {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split_once(']').map(|(ip, _)| ip);
    }
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    };
    (!name.is_empty()).then_some(name)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal TLS 1.2 ClientHello record with `sni` (or none).
    pub(crate) fn client_hello(sni: Option<&str>) -> Vec<u8> {
        let mut ext = Vec::new();
        if let Some(name) = sni {
            let n = name.len() as u16;
            ext.extend_from_slice(&[0x00, 0x00]); // server_name
            ext.extend_from_slice(&(n + 5).to_be_bytes());
            ext.extend_from_slice(&(n + 3).to_be_bytes());
            ext.push(0); // host_name
            ext.extend_from_slice(&n.to_be_bytes());
            ext.extend_from_slice(name.as_bytes());
        }
        let mut body = vec![0x03, 0x03];
        body.extend_from_slice(&[7u8; 32]); // random
        body.push(0); // session id
        body.extend_from_slice(&[0x00, 0x02, 0x13, 0x01]); // one cipher
        body.extend_from_slice(&[0x01, 0x00]); // null compression
        body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
        body.extend_from_slice(&ext);
        let mut hs = vec![0x01];
        hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        hs.extend_from_slice(&body);
        let mut record = vec![TLS_HANDSHAKE, 0x03, 0x01];
        record.extend_from_slice(&(hs.len() as u16).to_be_bytes());
        record.extend_from_slice(&hs);
        record
    }

    #[test]
    fn tls_client_hello_gives_its_sni() {
        let hello = client_hello(Some("API.example.com"));
        assert_eq!(
            sniff(&hello, false),
            Sniffed::Tls(Some("api.example.com".into()))
        );
        assert_eq!(sniff(&client_hello(None), false), Sniffed::Tls(None));
        // Cut short: wait, unless nothing more will come.
        assert_eq!(sniff(&hello[..20], false), Sniffed::NeedMore);
        assert_eq!(sniff(&hello[..20], true), Sniffed::Unreadable);
        // A handshake record that is not a readable ClientHello.
        let mut broken = hello.clone();
        broken[5] = 0x02; // server hello type
        assert_eq!(sniff(&broken, false), Sniffed::Unreadable);
    }

    #[test]
    fn http_request_gives_its_host_without_port() {
        let get = b"GET / HTTP/1.1\r\nHost: Files.Example.org:8080\r\nAccept: */*\r\n\r\n";
        assert_eq!(
            sniff(get, false),
            Sniffed::Http(Some("files.example.org".into()))
        );
        let v6 = b"GET / HTTP/1.1\r\nHost: [2001:db8::1]:80\r\n\r\n";
        assert_eq!(sniff(v6, false), Sniffed::Http(Some("2001:db8::1".into())));
        assert_eq!(sniff(b"GET / HTTP/1.0\r\n\r\n", false), Sniffed::Http(None));
        assert_eq!(sniff(b"GET / HTTP/1.1\r\nHo", false), Sniffed::NeedMore);
        let twice = b"GET / HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n";
        assert_eq!(sniff(twice, false), Sniffed::Unreadable);
    }

    #[test]
    fn other_protocols_are_other() {
        assert_eq!(sniff(b"SSH-2.0-OpenSSH_9.2\r\n", false), Sniffed::Other);
        assert_eq!(sniff(&[0, 1, 2, 3], false), Sniffed::Other);
        assert_eq!(sniff(b"", true), Sniffed::Other);
        assert_eq!(sniff(b"", false), Sniffed::NeedMore);
    }
}
