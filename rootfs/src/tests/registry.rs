//! The named registry: get/list/remove, names, settings, shared layers,
//! directory templates, concurrent imports.

use std::fs;
use std::path::Path;
use std::time::{Duration, SystemTime};

use serde_json::json;

use super::fixture::*;
use super::import::two_layer_image;
use crate::{
    DefaultLimits, Error, Interpreter, Readiness, Settings, SettingsOrigin, StartCommand, Store,
    TemplateKind, BASE_NAME,
};

fn python_settings() -> Settings {
    Settings {
        timeout_secs: Some(120),
        limits: DefaultLimits {
            cpus: Some(1.5),
            memory: Some(256 << 20),
            pids: None,
            disk: Some(1 << 30),
        },
        start: Some(StartCommand {
            command: "touch /tmp/ready".into(),
            ready: Some(Readiness::File("/tmp/ready".into())),
            ready_timeout_secs: 5,
        }),
        interpreters: vec![Interpreter {
            language: "python".into(),
            command: vec!["python3".into(), "-u".into(), "-i".into()],
        }],
    }
}

/// Two images sharing their bottom layer.
fn sibling_images(tmp: &TempDir) -> (std::path::PathBuf, std::path::PathBuf, Layer, Layer, Layer) {
    let shared = Layer::new(
        Tar::default().dir("etc").file("etc/os", "shared").bytes(),
        Comp::Gzip,
    );
    let a = Layer::new(Tar::default().file("a", "a").bytes(), Comp::Gzip);
    let b = Layer::new(Tar::default().file("b", "b").bytes(), Comp::None);
    let la = layout(
        &tmp.join("a"),
        &[shared.clone(), a.clone()],
        json!({"Cmd": ["a"]}),
    );
    let lb = layout(
        &tmp.join("b"),
        &[shared.clone(), b.clone()],
        json!({"Cmd": ["b"]}),
    );
    (la, lb, shared, a, b)
}

#[test]
fn get_list_and_remove() {
    require_root();
    let tmp = TempDir::new("registry");
    let (la, lb, shared, a, b) = sibling_images(&tmp);
    let store = Store::open(tmp.join("data")).unwrap();
    let started = SystemTime::now() - Duration::from_secs(2);

    store.import_oci("alpha", &la).unwrap();
    store.import_oci("beta", &lb).unwrap();
    let rootfs = tmp.join("rootfs");
    fs::create_dir_all(rootfs.join("etc")).unwrap();
    fs::create_dir_all(rootfs.join("usr/bin")).unwrap();
    fs::write(rootfs.join("usr/bin/hello"), "hello").unwrap();
    let gamma = store.import_dir("gamma", &rootfs).unwrap();
    assert_eq!(gamma.layers, [fs::canonicalize(&rootfs).unwrap()]);
    assert_eq!(
        gamma.kind,
        TemplateKind::Dir(fs::canonicalize(&rootfs).unwrap())
    );

    let list = store.list().unwrap();
    let listed: Vec<&str> = list.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(listed, [BASE_NAME, "alpha", "beta", "gamma"]);
    assert_eq!(list[0].kind, TemplateKind::HostBind);
    assert_eq!(list[1].layers, 2);
    assert_eq!(list[1].size, 7, "'shared' + 'a'");
    assert_eq!(list[3].layers, 1);
    assert_eq!(list[3].size, 5);
    assert!(list[1].created >= started);

    let alpha = store.get("alpha").unwrap();
    assert_eq!(alpha.config.cmd, ["a"]);
    assert_eq!(alpha.layers.len(), 2);
    assert!(matches!(
        store.get("base").unwrap().kind,
        TemplateKind::HostBind
    ));
    assert!(matches!(store.get("nope"), Err(Error::NotFound(n)) if n == "nope"));

    // Removing alpha keeps the layer beta shares.
    let layers = tmp.join("data/layers/sha256");
    store.remove("alpha").unwrap();
    assert!(matches!(store.get("alpha"), Err(Error::NotFound(_))));
    assert!(!tmp.join("data/templates/alpha").exists());
    let mut left = vec![shared.hex(), b.hex()];
    left.sort();
    assert_eq!(names(&layers), left);
    assert!(!layers.join(a.hex()).exists());
    let beta = store.get("beta").unwrap();
    assert_eq!(
        fs::read_to_string(beta.layers[1].join("etc/os")).unwrap(),
        "shared"
    );

    store.remove("beta").unwrap();
    assert!(names(&layers).is_empty());
    store.remove("gamma").unwrap();
    assert!(
        rootfs.join("usr/bin/hello").exists(),
        "a dir template is not ours to delete"
    );
    assert!(matches!(store.remove("gamma"), Err(Error::NotFound(_))));
    assert!(matches!(
        store.remove("base"),
        Err(Error::InvalidName { .. })
    ));
    let names_left: Vec<String> = store.list().unwrap().into_iter().map(|s| s.name).collect();
    assert_eq!(names_left, [BASE_NAME]);
}

#[test]
fn names_are_checked_everywhere() {
    require_root();
    let tmp = TempDir::new("names");
    let (la, _, _, _, _) = sibling_images(&tmp);
    let store = Store::open(tmp.join("data")).unwrap();
    for bad in ["", "Alpha", "../x", ".x", "a/b", &"x".repeat(64)] {
        assert!(
            matches!(store.import_oci(bad, &la), Err(Error::InvalidName { .. })),
            "{bad:?}"
        );
        assert!(matches!(store.get(bad), Err(Error::InvalidName { .. })));
        assert!(matches!(store.remove(bad), Err(Error::InvalidName { .. })));
    }
    assert!(matches!(
        store.import_oci(BASE_NAME, &la),
        Err(Error::InvalidName { .. })
    ));
    assert!(names(&tmp.join("data/layers/sha256")).is_empty());
}

#[test]
fn reimport_replaces_and_drops_the_old_layers() {
    require_root();
    let tmp = TempDir::new("replace");
    let (la, lb, shared, a, b) = sibling_images(&tmp);
    let store = Store::open(tmp.join("data")).unwrap();
    store.import_oci("t", &la).unwrap();
    let replaced = store.import_oci("t", &lb).unwrap();
    assert_eq!(replaced.config.cmd, ["b"]);
    assert_eq!(store.get("t").unwrap(), replaced);
    let layers = tmp.join("data/layers/sha256");
    assert!(!layers.join(a.hex()).exists(), "alpha's own layer dropped");
    assert!(layers.join(shared.hex()).exists() && layers.join(b.hex()).exists());
    let template_dir = tmp.join("data/templates/t");
    assert_eq!(names(&template_dir), ["sandlot.json", "template.json"]);
}

#[test]
fn settings_at_import_from_the_image_and_later() {
    require_root();
    let tmp = TempDir::new("settings");
    let (la, _, _, _, _) = sibling_images(&tmp);
    let store = Store::open(tmp.join("data")).unwrap();

    let t = store.import_oci_with("py", &la, python_settings()).unwrap();
    assert_eq!(t.settings, python_settings());
    let on_disk = fs::read_to_string(tmp.join("data/templates/py/sandlot.json")).unwrap();
    assert_eq!(Settings::from_json(&on_disk).unwrap(), python_settings());
    assert_eq!(store.get("py").unwrap().settings, python_settings());

    let later = Settings {
        timeout_secs: Some(30),
        ..Settings::default()
    };
    assert_eq!(
        store.set_settings("py", later.clone()).unwrap().settings,
        later
    );
    assert_eq!(store.settings("py").unwrap(), later);
    assert!(matches!(
        store.set_settings("nope", later.clone()),
        Err(Error::NotFound(_))
    ));
    let invalid = Settings {
        timeout_secs: Some(0),
        ..Settings::default()
    };
    assert!(matches!(
        store.set_settings("py", invalid),
        Err(Error::InvalidSettings { .. })
    ));
    store.set_settings(BASE_NAME, later.clone()).unwrap();
    assert_eq!(store.get(BASE_NAME).unwrap().settings, later);

    // An image that carries its settings in a label.
    let label = serde_json::to_string(&python_settings()).unwrap();
    let labelled = layout(
        &tmp.join("labelled"),
        &[Layer::new(
            Tar::default().file("x", "x").bytes(),
            Comp::None,
        )],
        json!({"Labels": {crate::SETTINGS_LABEL: label}}),
    );
    assert_eq!(
        store.import_oci("labelled", &labelled).unwrap().settings,
        python_settings()
    );
    // Explicit settings win over the label.
    assert_eq!(
        store
            .import_oci_with("labelled", &labelled, later.clone())
            .unwrap()
            .settings,
        later
    );
}

#[test]
fn directory_templates_must_look_like_a_rootfs() {
    require_root();
    let tmp = TempDir::new("dir");
    let store = Store::open(tmp.join("data")).unwrap();
    let empty = tmp.join("empty");
    fs::create_dir(&empty).unwrap();
    assert!(matches!(
        store.import_dir("empty", &empty),
        Err(Error::NotARootfs { .. })
    ));
    fs::write(tmp.join("file"), "x").unwrap();
    assert!(matches!(
        store.import_dir("file", tmp.join("file")),
        Err(Error::NotARootfs { .. })
    ));
    assert!(matches!(
        store.import_dir("host", "/"),
        Err(Error::NotARootfs { .. })
    ));
    // A merged-/usr layout with an absolute bin symlink is fine.
    let root = tmp.join("root");
    fs::create_dir_all(root.join("etc")).unwrap();
    std::os::unix::fs::symlink("/usr/bin", root.join("bin")).unwrap();
    store.import_dir("merged", &root).unwrap();
    assert_eq!(store.get("merged").unwrap().config.shell, "/bin/sh");
}

#[test]
fn concurrent_imports_of_the_same_layers_agree() {
    require_root();
    let tmp = TempDir::new("concurrent");
    let (layout, one, two) = two_layer_image(&tmp.join("layout"));
    let data = tmp.join("data");
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|i| {
                let (data, layout) = (&data, &layout);
                s.spawn(move || {
                    // A Store each, as separate processes would have.
                    let store = Store::open(data).unwrap();
                    store.import_oci(&format!("t{i}"), layout)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let templates: Vec<_> = results.into_iter().map(Result::unwrap).collect();
    assert!(templates.windows(2).all(|w| w[0].layers == w[1].layers));
    let mut expected = vec![one.hex(), two.hex()];
    expected.sort();
    assert_eq!(names(&data.join("layers/sha256")), expected);
    assert!(names(&data.join("layers/tmp")).is_empty());
    let hostname = templates[0].layers[0].join("etc/hostname");
    assert_eq!(fs::read_to_string(hostname).unwrap(), "two");
}

#[test]
fn stale_temporary_dirs_are_cleaned_on_open() {
    require_root();
    let tmp = TempDir::new("stale");
    let data = tmp.join("data");
    Store::open(&data).unwrap();
    // pid 0 never names a process of ours; a huge pid does not exist.
    let stale = data.join("layers/tmp/2147483646-0");
    fs::create_dir_all(stale.join("root/etc")).unwrap();
    let live = data.join(format!("layers/tmp/{}-99", std::process::id()));
    fs::create_dir_all(&live).unwrap();
    Store::open(&data).unwrap();
    assert!(!stale.exists());
    assert!(live.exists(), "an unpack in progress was removed");
    fs::remove_dir_all(Path::new(&live)).unwrap();
}

#[test]
fn settings_out_of_bounds_are_refused_wherever_they_come_from() {
    require_root();
    let tmp = TempDir::new("bounds");
    let store = Store::open(tmp.join("data")).unwrap();
    let huge = r#"{"timeout_secs":18446744073709551615}"#;
    let field_and_bound = |err: &Error| {
        let text = err.to_string();
        assert!(
            text.contains("timeout_secs") && text.contains(&crate::MAX_TIMEOUT_SECS.to_string()),
            "{text}"
        );
        match err {
            Error::InvalidSettings { origin, error } => {
                assert_eq!(error.field, "timeout_secs");
                origin.clone()
            }
            other => panic!("expected invalid settings, got {other}"),
        }
    };

    // In an image's label: the import fails and leaves nothing.
    let labelled = layout(
        &tmp.join("labelled"),
        &[Layer::new(
            Tar::default().file("x", "x").bytes(),
            Comp::None,
        )],
        json!({"Labels": {crate::SETTINGS_LABEL: huge}}),
    );
    let err = store.import_oci("labelled", &labelled).unwrap_err();
    assert_eq!(field_and_bound(&err), SettingsOrigin::Label);
    assert!(names(&tmp.join("data/templates")).is_empty());
    assert!(names(&tmp.join("data/layers/sha256")).is_empty());

    // In a sandlot.json edited by hand: the template cannot be used, and
    // the error says which file.
    let plain = layout(
        &tmp.join("plain"),
        &[Layer::new(
            Tar::default().file("x", "x").bytes(),
            Comp::None,
        )],
        json!({}),
    );
    store.import_oci("plain", &plain).unwrap();
    let file = tmp.join("data/templates/plain/sandlot.json");
    fs::write(&file, huge).unwrap();
    let err = store.get("plain").unwrap_err();
    assert_eq!(field_and_bound(&err), SettingsOrigin::File(file));
}
