use proptest::prelude::*;

use super::*;
use crate::error::SettingsOrigin;

fn python_settings() -> Settings {
    Settings {
        timeout_secs: Some(600),
        limits: DefaultLimits {
            cpus: Some(0.5),
            memory: Some(512 << 20),
            pids: Some(128),
            disk: Some(1 << 30),
        },
        start: Some(StartCommand {
            command: "python3 -m http.server 8000".into(),
            ready: Some(Readiness::Port(8000)),
            ready_timeout_secs: 10,
        }),
        interpreters: vec![Interpreter {
            language: "python".into(),
            command: vec!["python3".into(), "-u".into(), "-i".into()],
        }],
    }
}

/// The field and problem of a refused document.
fn refusal(json: &str) -> SettingsError {
    match Settings::from_json(json) {
        Err(Error::InvalidSettings {
            origin: SettingsOrigin::Given,
            error,
        }) => *error,
        other => panic!("{json} gave {other:?}"),
    }
}

#[test]
fn settings_round_trip_through_json() {
    let settings = python_settings();
    let json = serde_json::to_string(&settings).unwrap();
    assert!(json.contains(r#""ready":{"port":8000}"#), "{json}");
    assert_eq!(Settings::from_json(&json).unwrap(), settings);
    assert_eq!(
        settings.interpreter("python").unwrap().command[0],
        "python3"
    );
    assert_eq!(Settings::from_json("{}").unwrap(), Settings::default());
}

#[test]
fn settings_reject_nonsense_naming_the_field() {
    for (json, field) in [
        (r#"{"timeout_secs":0}"#, "timeout_secs"),
        (r#"{"limits":{"cpus":-1}}"#, "limits.cpus"),
        (r#"{"limits":{"memory":0}}"#, "limits.memory"),
        (r#"{"limits":{"memory":4096}}"#, "limits.memory"),
        (r#"{"limits":{"pids":0}}"#, "limits.pids"),
        (r#"{"limits":{"disk":1}}"#, "limits.disk"),
        (r#"{"start":{"command":" "}}"#, "start.command"),
        (
            r#"{"start":{"command":"x","ready":{"file":"relative"}}}"#,
            "start.ready.file",
        ),
        (
            r#"{"start":{"command":"x","ready":{"port":0}}}"#,
            "start.ready.port",
        ),
        (
            r#"{"start":{"command":"x","ready_timeout_secs":0}}"#,
            "start.ready_timeout_secs",
        ),
        (
            r#"{"interpreters":[{"language":"python","command":[]}]}"#,
            "interpreters[0].command",
        ),
        (
            r#"{"interpreters":[{"language":"py","command":["a"]},{"language":"py","command":["b"]}]}"#,
            "interpreters[1].language",
        ),
        (
            r#"{"interpreters":[{"language":"py","command":["a\u0000b"]}]}"#,
            "interpreters[0].command[0]",
        ),
        // Syntax errors name the field too.
        (r#"{"timeout":5}"#, "timeout"),
        (r#"{"limits":{"memory":"1G"}}"#, "limits.memory"),
        (r#"{"limits":{"pids":-1}}"#, "limits.pids"),
        (r#"{"limits":{"disk":1.5}}"#, "limits.disk"),
        (
            r#"{"start":{"command":"x","ready":{"port":65536}}}"#,
            "start.ready.port",
        ),
        (r#"{"timeout_secs":18446744073709551616}"#, "timeout_secs"),
    ] {
        let error = refusal(json);
        assert_eq!(error.field, field, "{json}: {error}");
    }
    let error = refusal("not json");
    assert_eq!(error.field, "");
    let error = refusal(r#"{} {}"#);
    assert!(
        matches!(error.problem, SettingsProblem::Syntax(_)),
        "{error}"
    );
}

#[test]
fn every_number_has_an_upper_bound_that_is_named() {
    for (json, field, max) in [
        (
            r#"{"timeout_secs":18446744073709551615}"#,
            "timeout_secs",
            MAX_TIMEOUT_SECS,
        ),
        (
            r#"{"start":{"command":"x","ready_timeout_secs":18446744073709551615}}"#,
            "start.ready_timeout_secs",
            MAX_READY_TIMEOUT_SECS,
        ),
        (
            r#"{"limits":{"memory":18446744073709551615}}"#,
            "limits.memory",
            MAX_BYTES,
        ),
        (
            r#"{"limits":{"disk":18446744073709551615}}"#,
            "limits.disk",
            MAX_BYTES,
        ),
        (
            r#"{"limits":{"pids":18446744073709551615}}"#,
            "limits.pids",
            MAX_PIDS,
        ),
    ] {
        let error = refusal(json);
        assert_eq!(error.field, field, "{json}");
        match &error.problem {
            SettingsProblem::AboveMax { value, max: shown } => {
                assert_eq!(value, "18446744073709551615");
                assert!(shown.starts_with(&max.to_string()), "{shown}");
            }
            other => panic!("{json}: {other:?}"),
        }
        let text = Settings::from_json(json).unwrap_err().to_string();
        assert!(
            text.contains(field) && text.contains(&max.to_string()),
            "{text}"
        );
    }
    let error = refusal(r#"{"limits":{"cpus":1e300}}"#);
    assert_eq!(error.field, "limits.cpus");
    assert!(matches!(error.problem, SettingsProblem::AboveMax { .. }));
    // Settings built in code are held to the same bounds.
    let huge = Settings {
        timeout_secs: Some(u64::MAX),
        ..Settings::default()
    };
    assert!(matches!(
        huge.validate(),
        Err(Error::InvalidSettings { error, .. }) if error.field == "timeout_secs"
    ));
}

#[test]
fn a_document_larger_than_the_limit_is_refused_before_parsing() {
    let json = format!(
        r#"{{"start":{{"command":"{}"}}}}"#,
        "x".repeat(MAX_SETTINGS_JSON)
    );
    let error = refusal(&json);
    assert_eq!(error.field, "");
    assert!(matches!(error.problem, SettingsProblem::AboveMax { .. }));
}

// ---- properties ----

/// A JSON value as text, built from the field names settings have (and a
/// few others), with numbers that straddle every bound, fractions,
/// negatives and integers too large for any Rust type.
fn json_text() -> impl Strategy<Value = String> {
    let number = prop_oneof![
        any::<u64>().prop_map(|n| n.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>()
            .prop_filter("JSON has no NaN or infinity", |f| f.is_finite())
            .prop_map(|f| f.to_string()),
        prop::sample::select(vec![
            "0",
            "1",
            "-0",
            "0.01",
            "0.009",
            "65535",
            "65536",
            "3600",
            "3601",
            "2592000",
            "2592001",
            "4194304",
            "4194305",
            "1125899906842624",
            "1125899906842625",
            "18446744073709551615",
            "18446744073709551616",
            "1e400",
            "-1e400",
        ])
        .prop_map(str::to_string),
    ];
    let text = prop_oneof![
        any::<String>(),
        prop::sample::select(vec!["", " ", "/ready", "relative", "sh", "\u{0}"])
            .prop_map(str::to_string),
    ]
    .prop_map(|s| serde_json::to_string(&s).unwrap());
    let leaf = prop_oneof![
        4 => number,
        2 => text,
        1 => prop::sample::select(vec!["true", "false", "null"]).prop_map(str::to_string),
    ];
    let key = prop_oneof![
        8 => prop::sample::select(vec![
            "timeout_secs",
            "limits",
            "cpus",
            "memory",
            "pids",
            "disk",
            "start",
            "command",
            "ready",
            "ready_timeout_secs",
            "file",
            "port",
            "interpreters",
            "language",
        ])
        .prop_map(str::to_string),
        1 => any::<String>(),
    ];
    leaf.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6)
                .prop_map(|items| format!("[{}]", items.join(","))),
            prop::collection::vec((key.clone(), inner), 0..6).prop_map(|fields| {
                let fields: Vec<String> = fields
                    .into_iter()
                    .map(|(k, v)| format!("{}:{v}", serde_json::to_string(&k).unwrap()))
                    .collect();
                format!("{{{}}}", fields.join(","))
            }),
        ]
    })
}

fn valid_text() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9_./=-][ a-zA-Z0-9_./=-]{0,30}"
}

fn valid_settings() -> impl Strategy<Value = Settings> {
    let limits = (
        prop::option::of(MIN_CPUS..=MAX_CPUS),
        prop::option::of(MIN_MEMORY..=MAX_BYTES),
        prop::option::of(1..=MAX_PIDS),
        prop::option::of(MIN_DISK..=MAX_BYTES),
    )
        .prop_map(|(cpus, memory, pids, disk)| DefaultLimits {
            cpus,
            memory,
            pids,
            disk,
        });
    let ready = prop_oneof![
        "/[a-z0-9/._-]{0,40}".prop_map(Readiness::File),
        (1..=u16::MAX).prop_map(Readiness::Port),
        valid_text().prop_map(Readiness::Command),
    ];
    let start = (
        valid_text(),
        prop::option::of(ready),
        1..=MAX_READY_TIMEOUT_SECS,
    )
        .prop_map(|(command, ready, ready_timeout_secs)| StartCommand {
            command,
            ready,
            ready_timeout_secs,
        });
    let interpreters = prop::collection::btree_map(
        "[a-z][a-z0-9+_-]{0,15}",
        prop::collection::vec(valid_text(), 1..5),
        0..4,
    )
    .prop_map(|by_language| {
        by_language
            .into_iter()
            .map(|(language, command)| Interpreter { language, command })
            .collect()
    });
    (
        prop::option::of(1..=MAX_TIMEOUT_SECS),
        limits,
        prop::option::of(start),
        interpreters,
    )
        .prop_map(|(timeout_secs, limits, start, interpreters)| Settings {
            timeout_secs,
            limits,
            start,
            interpreters,
        })
}

proptest! {
    #[test]
    fn any_text_is_parsed_or_refused_never_a_panic(text in any::<String>()) {
        let _ = Settings::from_json(&text);
    }

    #[test]
    fn json_like_documents_are_parsed_or_refused_never_a_panic(text in json_text()) {
        if let Ok(settings) = Settings::from_json(&text) {
            // What is accepted is within bounds and survives a round trip.
            prop_assert!(settings.validate().is_ok());
            let again = serde_json::to_string(&settings).unwrap();
            prop_assert_eq!(Settings::from_json(&again).unwrap(), settings);
        }
    }

    #[test]
    fn valid_settings_round_trip(settings in valid_settings()) {
        prop_assert!(settings.validate().is_ok(), "{:?}", settings.validate());
        let json = serde_json::to_string(&settings).unwrap();
        prop_assert_eq!(Settings::from_json(&json).unwrap(), settings.clone());
        let pretty = serde_json::to_string_pretty(&settings).unwrap();
        prop_assert_eq!(Settings::from_json(&pretty).unwrap(), settings);
    }

    #[test]
    fn numbers_past_a_bound_are_refused_naming_their_field(
        timeout in MAX_TIMEOUT_SECS + 1..,
        ready in MAX_READY_TIMEOUT_SECS + 1..,
        bytes in MAX_BYTES + 1..,
        pids in MAX_PIDS + 1..,
    ) {
        for (json, field) in [
            (format!(r#"{{"timeout_secs":{timeout}}}"#), "timeout_secs"),
            (
                format!(r#"{{"start":{{"command":"x","ready_timeout_secs":{ready}}}}}"#),
                "start.ready_timeout_secs",
            ),
            (format!(r#"{{"limits":{{"memory":{bytes}}}}}"#), "limits.memory"),
            (format!(r#"{{"limits":{{"disk":{bytes}}}}}"#), "limits.disk"),
            (format!(r#"{{"limits":{{"pids":{pids}}}}}"#), "limits.pids"),
        ] {
            let error = refusal(&json);
            prop_assert_eq!(&error.field, field);
            let above = matches!(error.problem, SettingsProblem::AboveMax { .. });
            prop_assert!(above, "{}", error);
        }
    }
}
