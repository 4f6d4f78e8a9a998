//! The sandbox's resolver: every DNS query the sandbox sends, to any
//! address, arrives here (steering). hickory-proto is only the codec; the
//! decisions are sandlot's:
//!
//! - a name the rules do not allow answers NXDOMAIN at once and is never
//!   sent upstream (no DNS exfiltration through the resolver);
//! - an allowed name is forwarded to the upstream resolver; addresses in
//!   the answer that the rules deny (always-denied ranges: rebinding) are
//!   removed, and an answer left with none is refused;
//! - under domain rules, A queries are answered with the sandbox's fake
//!   address for the name ([`super::fakeip`]) once upstream confirmed it
//!   resolves, and AAAA queries with no data (the fake range is IPv4).
//!
//! `/etc/hosts` inside the sandbox changes nothing: the proxy maps fake
//! addresses back to names and checks IP literals against the rules.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{DNSClass, RData, Record, RecordType};

use super::fakeip::FakeIps;
use super::rules::{normalize, DeniedBy, Policy};

/// TTL of fake answers: short, so rule changes and evictions show soon.
const FAKE_TTL: u32 = 30;
/// Longest the real addresses behind a fake one are reused by the proxy.
const MAX_CACHE: Duration = Duration::from_secs(300);
/// UDP answers without EDNS fit in 512 bytes (RFC 1035).
const CLASSIC_UDP: usize = 512;
const UDP_TIMEOUT: Duration = Duration::from_secs(2);
const UDP_TRIES: usize = 2;
const TCP_TIMEOUT: Duration = Duration::from_secs(4);

/// A parsed query waiting for upstream.
#[derive(Debug, Clone)]
pub struct Question {
    pub message: Message,
    /// The queried name, normalized (lowercase, no trailing dot).
    pub name: String,
    pub qtype: RecordType,
    /// Under domain rules: answer with a fake address.
    pub fake: bool,
}

/// A denied name, for the event stream.
pub type Denied = Option<(String, DeniedBy)>;

/// What to do with a query from the sandbox.
#[derive(Debug)]
pub enum Plan {
    /// Answer now with these bytes.
    Answer(Vec<u8>, Denied),
    /// Ask upstream, then [`finish`].
    Forward(Box<Question>),
    /// Not something to answer (unparseable, or a response).
    Ignore,
}

fn reply(query: &Message, code: ResponseCode, answers: Vec<Record>) -> Message {
    let mut m = Message::new(
        query.metadata.id,
        MessageType::Response,
        query.metadata.op_code,
    );
    m.metadata.response_code = code;
    m.metadata.recursion_desired = query.metadata.recursion_desired;
    m.metadata.recursion_available = true;
    m.add_queries(query.queries.iter().cloned());
    m.add_answers(answers);
    m
}

fn encode(message: &Message) -> Vec<u8> {
    // Encoding a message we built from a parsed one cannot fail short of a
    // bug; SERVFAIL with the id is the safe answer then.
    message.to_vec().unwrap_or_else(|_| {
        let mut fail = vec![0u8; 12];
        fail[..2].copy_from_slice(&message.metadata.id.to_be_bytes());
        fail[2] = 0x80;
        fail[3] = 0x02;
        fail
    })
}

/// SERVFAIL for `q` (upstream unreachable, or too many lookups at once).
pub fn servfail(q: &Question) -> Vec<u8> {
    encode(&reply(&q.message, ResponseCode::ServFail, vec![]))
}

/// Decides what to do with `bytes`, a query from the sandbox.
pub fn plan(policy: &Policy, fakes: &FakeIps, bytes: &[u8], now: Instant) -> Plan {
    let Ok(message) = Message::from_vec(bytes) else {
        return Plan::Ignore;
    };
    if message.metadata.message_type != MessageType::Query {
        return Plan::Ignore;
    }
    if message.metadata.op_code != OpCode::Query {
        return Plan::Answer(encode(&reply(&message, ResponseCode::NotImp, vec![])), None);
    }
    let [query] = message.queries.as_slice() else {
        return Plan::Answer(
            encode(&reply(&message, ResponseCode::FormErr, vec![])),
            None,
        );
    };
    if query.query_class() != DNSClass::IN {
        return Plan::Answer(
            encode(&reply(&message, ResponseCode::Refused, vec![])),
            None,
        );
    }
    let name = normalize(&query.name().to_ascii());
    if let Err(why) = policy.check_name(&name) {
        let answer = reply(&message, ResponseCode::NXDomain, vec![]);
        return Plan::Answer(encode(&answer), Some((name, why)));
    }
    let qtype = query.query_type();
    let fake = policy.has_domain_rules();
    if fake {
        match qtype {
            RecordType::A => {
                if let Some(ip) = fakes.cached(&name, now) {
                    let record =
                        Record::from_rdata(query.name().clone(), FAKE_TTL, RData::A(A(ip)));
                    return Plan::Answer(
                        encode(&reply(&message, ResponseCode::NoError, vec![record])),
                        None,
                    );
                }
            }
            // The fake range is IPv4: no data, so clients use the A answer.
            RecordType::AAAA => {
                return Plan::Answer(
                    encode(&reply(&message, ResponseCode::NoError, vec![])),
                    None,
                )
            }
            _ => {}
        }
    }
    Plan::Forward(Box::new(Question {
        message,
        name,
        qtype,
        fake,
    }))
}

pub(crate) fn record_ip(record: &Record) -> Option<IpAddr> {
    match &record.data {
        RData::A(a) => Some(IpAddr::V4(a.0)),
        RData::AAAA(aaaa) => Some(IpAddr::V6(aaaa.0)),
        _ => None,
    }
}

/// How long a name's fake address stays assigned: its records' TTL, at
/// least the fake answer's own TTL, at most the cache's bound.
pub(crate) fn fake_keep(answers: &[Record]) -> Duration {
    let ttl = answers.iter().map(|r| r.ttl).min().unwrap_or(0);
    Duration::from_secs(u64::from(ttl).max(u64::from(FAKE_TTL))).min(MAX_CACHE)
}

/// Builds the answer to `q` from upstream's, applying the rules. `udp`:
/// the answer goes back over UDP, so it must fit the sandbox's payload
/// limit (512 bytes, or what its EDNS says) or be truncated.
pub fn finish(
    policy: &Policy,
    fakes: &mut FakeIps,
    q: &Question,
    upstream: Result<Message, String>,
    udp: bool,
    now: Instant,
) -> (Vec<u8>, Denied) {
    let mut answer = match upstream {
        Ok(answer) => answer,
        Err(_) => {
            return (
                encode(&reply(&q.message, ResponseCode::ServFail, vec![])),
                None,
            )
        }
    };
    // Drop every address the rules deny, wherever it appears.
    let mut removed = Vec::new();
    let mut kept = 0usize;
    let mut filter = |records: &mut Vec<Record>| {
        records.retain(|r| match record_ip(r) {
            Some(ip) => match policy.check_resolved(ip) {
                Ok(()) => {
                    kept += 1;
                    true
                }
                Err(_) => {
                    removed.push(ip.to_string());
                    false
                }
            },
            None => true,
        })
    };
    filter(&mut answer.answers);
    filter(&mut answer.additionals);
    let rebinding =
        (!removed.is_empty() && kept == 0).then(|| DeniedBy::Rebinding(removed.join(", ")));

    let response = if rebinding.is_some() {
        reply(&q.message, ResponseCode::Refused, vec![])
    } else if q.fake && q.qtype == RecordType::A {
        let addrs: Vec<IpAddr> = answer.answers.iter().filter_map(record_ip).collect();
        if addrs.is_empty() {
            // NXDOMAIN or no data upstream: say the same, without addresses.
            reply(&q.message, answer.metadata.response_code, vec![])
        } else {
            let ip = fakes.assign(&q.name, addrs, fake_keep(&answer.answers), now);
            let name = q.message.queries[0].name().clone();
            reply(
                &q.message,
                ResponseCode::NoError,
                vec![Record::from_rdata(name, FAKE_TTL, RData::A(A(ip)))],
            )
        }
    } else {
        answer.metadata.id = q.message.metadata.id;
        answer
    };
    let mut bytes = encode(&response);
    if udp {
        let limit = q
            .message
            .edns
            .as_ref()
            .map_or(CLASSIC_UDP, |e| (e.max_payload() as usize).max(CLASSIC_UDP));
        if bytes.len() > limit {
            bytes = encode(&response.truncate());
        }
    }
    (bytes, rebinding.map(|why| (q.name.clone(), why)))
}

/// Asks `server` the question of `q` (blocking): UDP from a fresh socket
/// with a random id, retried once; TCP when the answer was truncated.
pub fn exchange(server: SocketAddr, q: &Question) -> Result<Message, String> {
    let mut message = q.message.clone();
    message.metadata.id = getrandom::u32().map_err(|e| e.to_string())? as u16;
    if q.fake && q.qtype == RecordType::A {
        // The answer becomes a fake address: ask plainly for A, without
        // the sandbox's EDNS options.
        message.queries = vec![Query::query(
            q.message.queries[0].name().clone(),
            RecordType::A,
        )];
        message.edns = None;
    }
    let bytes = message.to_vec().map_err(|e| e.to_string())?;
    let matches = |answer: &Message| {
        answer.metadata.id == message.metadata.id
            && answer.metadata.message_type == MessageType::Response
            && answer.queries == message.queries
    };

    let bind = if server.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    let udp = UdpSocket::bind(bind).map_err(|e| format!("udp socket: {e}"))?;
    udp.connect(server)
        .map_err(|e| format!("connect {server}: {e}"))?;
    udp.set_read_timeout(Some(UDP_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 65535];
    let mut truncated = false;
    'tries: for _ in 0..UDP_TRIES {
        udp.send(&bytes)
            .map_err(|e| format!("send to {server}: {e}"))?;
        let deadline = Instant::now() + UDP_TIMEOUT;
        while Instant::now() < deadline {
            let n = match udp.recv(&mut buf) {
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    continue 'tries
                }
                Err(e) => return Err(format!("{server}: {e}")),
            };
            // Anything that is not the answer to this question is ignored.
            if let Ok(answer) = Message::from_vec(&buf[..n]) {
                if matches(&answer) {
                    if !answer.metadata.truncation {
                        return Ok(answer);
                    }
                    truncated = true;
                    break 'tries;
                }
            }
        }
    }
    if !truncated {
        return Err(format!("{server} did not answer"));
    }
    let mut tcp = TcpStream::connect_timeout(&server, TCP_TIMEOUT)
        .map_err(|e| format!("tcp {server}: {e}"))?;
    tcp.set_read_timeout(Some(TCP_TIMEOUT))
        .map_err(|e| e.to_string())?;
    tcp.set_write_timeout(Some(TCP_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&bytes);
    tcp.write_all(&framed)
        .map_err(|e| format!("tcp {server}: {e}"))?;
    let mut len = [0u8; 2];
    tcp.read_exact(&mut len)
        .map_err(|e| format!("tcp {server}: {e}"))?;
    let mut answer = vec![0u8; u16::from_be_bytes(len) as usize];
    tcp.read_exact(&mut answer)
        .map_err(|e| format!("tcp {server}: {e}"))?;
    let answer = Message::from_vec(&answer).map_err(|e| format!("tcp {server}: {e}"))?;
    if !matches(&answer) {
        return Err(format!("tcp {server}: an answer to another question"));
    }
    Ok(answer)
}

/// The first `nameserver` of the host's resolv.conf (port 53).
pub fn system_upstream() -> Option<SocketAddr> {
    let conf = std::fs::read_to_string("/etc/resolv.conf").ok()?;
    conf.lines()
        .filter_map(|line| line.trim().strip_prefix("nameserver"))
        .filter_map(|rest| rest.trim().split('%').next()?.parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .next()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::network::Network;
    use crate::services::net::rules::Policy;
    use hickory_proto::rr::Name;

    fn query(name: &str, qtype: RecordType) -> Vec<u8> {
        let mut m = Message::new(0x1234, MessageType::Query, OpCode::Query);
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
        m.to_vec().unwrap()
    }

    fn upstream_answer(q: &Question, ips: &[&str]) -> Message {
        let mut m = reply(&q.message, ResponseCode::NoError, vec![]);
        let name = q.message.queries[0].name().clone();
        for ip in ips {
            let data = match ip.parse::<IpAddr>().unwrap() {
                IpAddr::V4(v4) => RData::A(A(v4)),
                IpAddr::V6(v6) => RData::AAAA(hickory_proto::rr::rdata::AAAA(v6)),
            };
            m.add_answer(Record::from_rdata(name.clone(), 300, data));
        }
        m
    }

    fn answer_ips(bytes: &[u8]) -> (ResponseCode, Vec<IpAddr>) {
        let m = Message::from_vec(bytes).unwrap();
        assert_eq!(m.metadata.id, 0x1234);
        (
            m.metadata.response_code,
            m.answers.iter().filter_map(record_ip).collect(),
        )
    }

    #[test]
    fn names_not_allowed_answer_nxdomain_without_going_upstream() {
        let policy = Policy::of(&Network::internet().allow_out("ok.test").unwrap());
        let fakes = FakeIps::default();
        match plan(
            &policy,
            &fakes,
            &query("exfil-data.evil.test.", RecordType::A),
            Instant::now(),
        ) {
            Plan::Answer(bytes, Some((name, DeniedBy::NoAllowRule))) => {
                assert_eq!(name, "exfil-data.evil.test");
                assert_eq!(answer_ips(&bytes).0, ResponseCode::NXDomain);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn domain_rules_answer_fake_addresses_after_upstream_confirms() {
        let policy = Policy::of(&Network::internet().allow_out("*.ok.test").unwrap());
        let mut fakes = FakeIps::default();
        let now = Instant::now();
        let Plan::Forward(q) = plan(&policy, &fakes, &query("api.ok.test.", RecordType::A), now)
        else {
            panic!("an allowed name goes upstream first");
        };
        let (bytes, denied) = finish(
            &policy,
            &mut fakes,
            &q,
            Ok(upstream_answer(&q, &["203.0.113.5"])),
            true,
            now,
        );
        assert_eq!(denied, None);
        let (code, ips) = answer_ips(&bytes);
        assert_eq!(code, ResponseCode::NoError);
        assert!(super::super::fakeip::is_fake(ips[0]));
        assert_eq!(
            fakes.lookup(ips[0], now),
            Some((
                "api.ok.test".into(),
                Some(vec!["203.0.113.5".parse().unwrap()])
            ))
        );
        // Asked again: answered from the table, no upstream.
        assert!(matches!(
            plan(&policy, &fakes, &query("api.ok.test.", RecordType::A), now),
            Plan::Answer(..)
        ));
        // AAAA: no data.
        let Plan::Answer(bytes, None) = plan(
            &policy,
            &fakes,
            &query("api.ok.test.", RecordType::AAAA),
            now,
        ) else {
            panic!()
        };
        assert_eq!(answer_ips(&bytes), (ResponseCode::NoError, vec![]));
    }

    #[test]
    fn answers_pointing_at_denied_addresses_are_refused() {
        for policy in [
            Policy::of(&Network::internet()),
            Policy::of(&Network::internet().allow_out("rebind.test").unwrap()),
        ] {
            let mut fakes = FakeIps::default();
            let now = Instant::now();
            let Plan::Forward(q) =
                plan(&policy, &fakes, &query("rebind.test.", RecordType::A), now)
            else {
                panic!()
            };
            let (bytes, denied) = finish(
                &policy,
                &mut fakes,
                &q,
                Ok(upstream_answer(&q, &["127.0.0.1", "10.0.0.1"])),
                true,
                now,
            );
            assert!(
                matches!(denied, Some((_, DeniedBy::Rebinding(_)))),
                "{denied:?}"
            );
            assert_eq!(answer_ips(&bytes), (ResponseCode::Refused, vec![]));
            assert!(fakes.is_empty());
        }
        // Mixed: the public address stays, the private one goes.
        let policy = Policy::of(&Network::internet());
        let mut fakes = FakeIps::default();
        let Plan::Forward(q) = plan(
            &policy,
            &fakes,
            &query("mixed.test.", RecordType::A),
            Instant::now(),
        ) else {
            panic!()
        };
        let (bytes, denied) = finish(
            &policy,
            &mut fakes,
            &q,
            Ok(upstream_answer(&q, &["10.0.0.1", "203.0.113.9"])),
            true,
            Instant::now(),
        );
        assert_eq!(denied, None);
        assert_eq!(
            answer_ips(&bytes),
            (ResponseCode::NoError, vec!["203.0.113.9".parse().unwrap()])
        );
    }

    #[test]
    fn garbage_is_ignored_and_odd_queries_get_errors() {
        let policy = Policy::of(&Network::internet());
        let fakes = FakeIps::default();
        assert!(matches!(
            plan(&policy, &fakes, b"\x00\x01garbage", Instant::now()),
            Plan::Ignore
        ));
        let mut m = Message::new(7, MessageType::Query, OpCode::Query);
        m.add_query(Query::query(
            Name::from_ascii("a.test.").unwrap(),
            RecordType::A,
        ));
        m.add_query(Query::query(
            Name::from_ascii("b.test.").unwrap(),
            RecordType::A,
        ));
        let Plan::Answer(bytes, None) = plan(&policy, &fakes, &m.to_vec().unwrap(), Instant::now())
        else {
            panic!()
        };
        assert_eq!(
            Message::from_vec(&bytes).unwrap().metadata.response_code,
            ResponseCode::FormErr
        );
    }
}
