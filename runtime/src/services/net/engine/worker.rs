//! The `sandlot-net-lookup` threads: blocking exchanges with the upstream
//! resolver, for sandboxes' queries and for connections dialled by name.
//! Results go back to the loop that asked.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::Receiver;
use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RecordType};

use super::slab::Key;
use super::{Destination, LoopHandle, Msg, Shared};
use crate::engine::sync::lock;
use crate::services::net::dns::{self, Question};
use crate::services::net::rules::DeniedBy;

/// Where a resolver answer goes.
#[derive(Debug)]
pub enum ReplyTo {
    /// A UDP query: back to `client`, from the address it was sent to.
    Udp { client: SocketAddr, local: IpAddr },
    /// A query on this DNS-over-TCP connection.
    Tcp(Key),
}

pub enum Job {
    /// Forward a sandbox's query.
    Dns {
        loop_index: usize,
        sb: Key,
        shared: Arc<Shared>,
        question: Box<Question>,
        to: ReplyTo,
    },
    /// Resolve a name a connection was made to.
    Resolve {
        loop_index: usize,
        sb: Key,
        conn: Key,
        shared: Arc<Shared>,
        name: String,
        port: u16,
    },
}

pub fn run(jobs: Receiver<Job>, loops: Vec<LoopHandle>) {
    for job in jobs {
        match job {
            Job::Dns {
                loop_index,
                sb,
                shared,
                question,
                to,
            } => {
                let upstream = match shared.upstream {
                    Some(server) => dns::exchange(server, &question),
                    None => Err("no upstream resolver configured".to_string()),
                };
                let policy = shared.policy();
                let (bytes, denied) = {
                    let mut fakes = lock(&shared.fakes);
                    let udp = matches!(to, ReplyTo::Udp { .. });
                    dns::finish(
                        &policy,
                        &mut fakes,
                        &question,
                        upstream,
                        udp,
                        Instant::now(),
                    )
                };
                if let Some((name, why)) = denied {
                    shared.denied(Destination::Lookup(name), why);
                }
                let _ = loops[loop_index].send(Msg::DnsDone { sb, to, bytes });
            }
            Job::Resolve {
                loop_index,
                sb,
                conn,
                shared,
                name,
                port,
            } => {
                let result = resolve(&shared, &name, port);
                let _ = loops[loop_index].send(Msg::Resolved { sb, conn, result });
            }
        }
    }
}

/// The name's addresses the rules allow, refreshed in the sandbox's fake
/// table.
fn resolve(shared: &Shared, name: &str, port: u16) -> Result<Vec<SocketAddr>, DeniedBy> {
    let server = shared
        .upstream
        .ok_or_else(|| DeniedBy::Unresolvable("no upstream resolver configured".into()))?;
    let qname = Name::from_ascii(format!("{name}."))
        .map_err(|e| DeniedBy::Unresolvable(format!("{name}: {e}")))?;
    let mut message = Message::new(0, MessageType::Query, OpCode::Query);
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(qname, RecordType::A));
    let question = Question {
        message,
        name: name.to_string(),
        qtype: RecordType::A,
        fake: true,
    };
    let answer = dns::exchange(server, &question).map_err(DeniedBy::Unresolvable)?;
    // An A query: its answers' addresses are IPv4 (an AAAA is ignored).
    let ips: Vec<IpAddr> = answer
        .answers
        .iter()
        .filter_map(dns::record_ip)
        .filter(IpAddr::is_ipv4)
        .collect();
    if ips.is_empty() {
        return Err(DeniedBy::Unresolvable(format!(
            "{name}: {}",
            answer.metadata.response_code
        )));
    }
    let policy = shared.policy();
    let allowed: Vec<IpAddr> = ips
        .iter()
        .copied()
        .filter(|ip| policy.check_resolved(*ip).is_ok())
        .collect();
    if allowed.is_empty() {
        let all: Vec<String> = ips.iter().map(|ip| ip.to_string()).collect();
        return Err(DeniedBy::Rebinding(all.join(", ")));
    }
    lock(&shared.fakes).assign(
        name,
        allowed.clone(),
        dns::fake_keep(&answer.answers),
        Instant::now(),
    );
    Ok(allowed
        .into_iter()
        .map(|ip| SocketAddr::new(ip, port))
        .collect())
}
