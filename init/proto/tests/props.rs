//! Properties of the control protocol's codec, on arbitrary input: the
//! host decodes what init sends and init decodes what the host sends, and
//! neither may panic, over-allocate or accept two spellings of a message.

use proptest::prelude::*;
use sandlot_proto::{
    spawn_id, DecodeError, Event, PtySize, Request, Spawn, Status, StdioMask, Usage,
    EXTRA_FD_NUMBERS, MAX_EXTRA_FDS, MAX_MESSAGE,
};

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..max)
}

fn spawn() -> impl Strategy<Value = Spawn> {
    (
        any::<u64>(),
        prop::collection::vec(bytes(40), 0..8),
        prop::collection::vec(bytes(40), 0..8),
        bytes(40),
        (any::<u32>(), any::<u32>()),
        prop::collection::vec(any::<u32>(), 0..8),
        0..=7u8,
        prop::collection::btree_set(EXTRA_FD_NUMBERS, 0..=MAX_EXTRA_FDS),
        prop::option::of((any::<u16>(), any::<u16>())),
    )
        .prop_map(
            |(id, argv, env, cwd, (uid, gid), groups, stdio, extra, pty)| Spawn {
                id,
                argv,
                env,
                cwd,
                uid,
                gid,
                groups,
                // A terminal is the command's stdio.
                stdio: StdioMask(if pty.is_some() { 0 } else { stdio }),
                extra_fds: extra.into_iter().collect(),
                pty: pty.map(|(rows, cols)| PtySize { rows, cols }),
            },
        )
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        Just(Request::Go),
        spawn().prop_map(Request::Spawn),
        (any::<u64>(), any::<i32>(), any::<bool>())
            .prop_map(|(id, signal, group)| { Request::Signal { id, signal, group } }),
        any::<i32>().prop_map(|signal| Request::SignalAll { signal }),
        Just(Request::Persist),
    ]
}

/// Events as init can send them: pids of live processes, exit codes as
/// `WEXITSTATUS` gives them, signal numbers as `WTERMSIG` does.
fn event() -> impl Strategy<Value = Event> {
    let status = prop_oneof![
        (0..=255i32).prop_map(Status::Exited),
        (1..=127i32, any::<bool>()).prop_map(|(signal, core_dumped)| Status::Signaled {
            signal,
            core_dumped
        }),
    ];
    let usage = (any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(u, s, rss)| Usage {
        user_micros: u,
        system_micros: s,
        max_rss_kib: rss,
    });
    prop_oneof![
        (any::<u32>(), any::<i32>()).prop_map(|(step, errno)| Event::SetupFailed { step, errno }),
        any::<u32>().prop_map(|version| Event::Ready { version }),
        (any::<u64>(), 1..=i32::MAX).prop_map(|(id, pid)| Event::Spawned { id, pid }),
        (any::<u64>(), 1..=i32::MAX).prop_map(|(id, pid)| Event::SpawnedPty { id, pid }),
        (any::<u64>(), any::<i32>()).prop_map(|(id, errno)| Event::SpawnFailed { id, errno }),
        any::<i32>().prop_map(|errno| Event::Persisted { errno }),
        (any::<u64>(), 1..=i32::MAX, status, usage).prop_map(|(id, pid, status, usage)| {
            Event::Exited {
                id,
                pid,
                status,
                usage,
            }
        }),
    ]
}

/// Bytes that look like a message: a real tag (or any byte), then noise.
fn message_like() -> impl Strategy<Value = Vec<u8>> {
    let tag = prop_oneof![
        prop::sample::select(vec![
            0x01u8, 0x02, 0x03, 0x04, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86,
        ]),
        any::<u8>(),
    ];
    (tag, bytes(200)).prop_map(|(tag, rest)| {
        let mut buf = vec![tag];
        buf.extend(rest);
        buf
    })
}

/// A valid encoding with one edit: a byte changed, inserted or removed.
fn mutated(valid: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let len = valid.len();
    (0..=len, any::<u8>(), 0..3u8).prop_map(move |(at, byte, how)| {
        let mut buf = valid.clone();
        match how {
            0 if at < buf.len() => buf[at] = byte,
            1 => buf.insert(at, byte),
            _ if at < buf.len() => {
                buf.remove(at);
            }
            _ => buf.push(byte),
        }
        buf
    })
}

/// What decoding `buf` must satisfy whatever it holds: no panic, and an
/// accepted message is re-encoded to exactly `buf` (one spelling per
/// message, and nothing decoded that the bytes did not carry).
fn check_request(buf: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(req) = Request::decode(buf) {
        prop_assert_eq!(req.encode(), buf);
        if let Request::Spawn(spawn) = &req {
            prop_assert_eq!(spawn.encoded_len(), buf.len());
        }
    }
    let _ = spawn_id(buf);
    Ok(())
}

fn check_event(buf: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(event) = Event::decode(buf) {
        prop_assert_eq!(event.encode(), buf);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn requests_round_trip(req in request()) {
        let buf = req.encode();
        prop_assert!(buf.len() <= MAX_MESSAGE);
        prop_assert_eq!(Request::decode(&buf), Ok(req.clone()));
        if let Request::Spawn(spawn) = &req {
            prop_assert_eq!(spawn.encoded_len(), buf.len());
            prop_assert_eq!(spawn_id(&buf), Some(spawn.id));
        }
    }

    #[test]
    fn events_round_trip(event in event()) {
        let buf = event.encode();
        prop_assert_eq!(Event::decode(&buf), Ok(event));
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_only_canonical_ones_decode(buf in message_like()) {
        check_request(&buf)?;
        check_event(&buf)?;
    }

    #[test]
    fn edited_requests_never_panic_and_stay_canonical(
        buf in request().prop_flat_map(|req| mutated(req.encode()))
    ) {
        check_request(&buf)?;
    }

    #[test]
    fn edited_events_never_panic_and_stay_canonical(
        buf in event().prop_flat_map(|event| mutated(event.encode()))
    ) {
        check_event(&buf)?;
    }

    #[test]
    fn counts_and_lengths_past_the_end_are_refused_without_allocating(
        id in any::<u64>(),
        count in any::<u32>(),
        tail in bytes(64),
    ) {
        // A spawn whose argv count (or first length) claims more than the
        // message holds: refused as truncated, whatever the number.
        let mut buf = vec![0x02];
        buf.extend_from_slice(&id.to_le_bytes());
        buf.extend_from_slice(&count.to_le_bytes());
        buf.extend_from_slice(&tail);
        match Request::decode(&buf) {
            Ok(req) => prop_assert_eq!(req.encode(), buf.clone()),
            Err(e) => prop_assert!(
                matches!(e, DecodeError::Truncated | DecodeError::TrailingBytes(_)
                    | DecodeError::Invalid { .. }),
                "{:?}", e
            ),
        }
        if (count as usize).saturating_mul(4) > tail.len() {
            prop_assert_eq!(Request::decode(&buf), Err(DecodeError::Truncated));
        }
    }
}

#[test]
fn values_no_encoder_writes_are_refused_naming_the_field() {
    let exited = |kind: u8, value: i32, pid: i32| {
        let mut buf = vec![0x85];
        buf.extend_from_slice(&7u64.to_le_bytes());
        buf.extend_from_slice(&pid.to_le_bytes());
        buf.push(kind);
        buf.extend_from_slice(&value.to_le_bytes());
        buf.extend_from_slice(&[0; 24]);
        Event::decode(&buf)
    };
    assert!(exited(0, 255, 1).is_ok());
    for (result, field) in [
        (exited(0, 256, 1), "exit code"),
        (exited(0, -1, 1), "exit code"),
        (exited(1, 0, 1), "signal"),
        (exited(2, i32::MAX, 1), "signal"),
        (exited(3, 9, 1), "status"),
        (exited(0, 0, 0), "pid"),
        (exited(0, 0, -1), "pid"),
    ] {
        assert!(
            matches!(result, Err(DecodeError::Invalid { field: f, .. }) if f == field),
            "{result:?}"
        );
    }
    let mut signal = Request::Signal {
        id: 1,
        signal: 15,
        group: true,
    }
    .encode();
    *signal.last_mut().unwrap() = 2;
    assert!(matches!(
        Request::decode(&signal),
        Err(DecodeError::Invalid {
            field: "group",
            value: 2
        })
    ));
    let mut spawn = Request::Spawn(Spawn::default()).encode();
    *spawn.last_mut().unwrap() = 8;
    assert!(matches!(
        Request::decode(&spawn),
        Err(DecodeError::Invalid {
            field: "stdio",
            value: 8
        })
    ));
}
