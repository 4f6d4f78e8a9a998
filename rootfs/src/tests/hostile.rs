//! Broken and hostile images: each is refused with an error that names the
//! blob or the entry, and leaves nothing behind in the layer cache.

use std::fs;
use std::path::Path;

use serde_json::json;
use tar::EntryType;

use super::fixture::*;
use crate::error::{BlobProblem, EntryProblem};
use crate::{Error, Store};

fn assert_nothing_left(data: &Path) {
    assert!(
        names(&data.join("layers/sha256")).is_empty(),
        "layer dirs left behind"
    );
    assert!(
        names(&data.join("layers/tmp")).is_empty(),
        "temporary dirs left behind"
    );
    assert!(
        names(&data.join("templates")).is_empty(),
        "a template was registered"
    );
}

/// Imports a one-layer image whose layer is `tar` (after a harmless first
/// layer, so a failure must also leave the good layer alone… which it
/// does by not committing: see the check below).
fn import_layer(tag: &str, tar: Tar) -> (Error, String) {
    require_root();
    let tmp = TempDir::new(tag);
    let layer = Layer::new(tar.bytes(), Comp::Gzip);
    let layout = layout(&tmp.join("layout"), std::slice::from_ref(&layer), json!({}));
    let store = Store::open(tmp.join("data")).unwrap();
    let err = store.import_oci("hostile", &layout).unwrap_err();
    assert_nothing_left(&tmp.join("data"));
    let text = err.to_string();
    assert!(text.contains(&layer.digest()), "{text}");
    (err, text)
}

fn entry_problem(err: &Error) -> (&str, &EntryProblem) {
    match err {
        Error::Entry { entry, problem, .. } => (entry, problem),
        other => panic!("expected an entry error, got {other}"),
    }
}

#[test]
fn dot_dot_paths_are_refused() {
    let (err, text) = import_layer(
        "dotdot",
        Tar::default()
            .file("ok", "fine")
            .file("../../etc/x", "pwned"),
    );
    assert_eq!(entry_problem(&err), ("../../etc/x", &EntryProblem::DotDot));
    assert!(text.contains("\"../../etc/x\""), "{text}");
}

#[test]
fn absolute_paths_are_refused() {
    let (err, _) = import_layer("absolute", Tar::default().file("/etc/x", "pwned"));
    assert_eq!(entry_problem(&err), ("/etc/x", &EntryProblem::Absolute));
}

#[test]
fn nothing_is_written_through_a_symlink() {
    let before = fs::read("/etc/passwd").unwrap();
    let (err, _) = import_layer(
        "through-symlink",
        Tar::default()
            .symlink("a", "/etc")
            .file("a/passwd", "root::0:0::/:/bin/sh\n"),
    );
    assert_eq!(
        entry_problem(&err),
        ("a/passwd", &EntryProblem::ThroughSymlink)
    );
    assert_eq!(fs::read("/etc/passwd").unwrap(), before);

    // A relative link to a sibling, then a directory through it.
    let (err, _) = import_layer(
        "through-symlink-dir",
        Tar::default()
            .dir("real")
            .symlink("link", "real")
            .dir("link/sub"),
    );
    assert_eq!(
        entry_problem(&err),
        ("link/sub", &EntryProblem::ThroughSymlink)
    );
}

#[test]
fn escaping_links_are_refused() {
    let (err, _) = import_layer(
        "hardlink-escape",
        Tar::default().file("x", "x").hardlink("y", "../../x"),
    );
    assert_eq!(
        entry_problem(&err),
        (
            "y",
            &EntryProblem::HardlinkEscapes {
                target: "../../x".into()
            }
        )
    );

    let (err, _) = import_layer(
        "symlink-escape",
        Tar::default()
            .dir("etc")
            .symlink("etc/shadow", "../../etc/shadow"),
    );
    assert_eq!(
        entry_problem(&err),
        (
            "etc/shadow",
            &EntryProblem::SymlinkEscapes {
                target: "../../etc/shadow".into()
            }
        )
    );

    let (err, _) = import_layer("hardlink-missing", Tar::default().hardlink("y", "not/here"));
    assert!(matches!(
        entry_problem(&err),
        ("y", EntryProblem::HardlinkTargetMissing { .. })
    ));
}

#[test]
fn device_nodes_and_fifos_are_refused() {
    for (kind, name, tag) in [
        (EntryType::Block, "block device", "block"),
        (EntryType::Char, "character device", "char"),
        (EntryType::Fifo, "fifo", "fifo"),
    ] {
        let (err, text) = import_layer(
            tag,
            Tar::default()
                .dir("dev")
                .raw(kind, "dev/sda", "", b"", 0o660, 0, 0),
        );
        assert_eq!(
            entry_problem(&err),
            ("dev/sda", &EntryProblem::Device { kind: name })
        );
        assert!(text.contains("dev/sda"), "{text}");
    }
}

/// An image whose only layer blob is then tampered with by `damage`.
fn damaged(tag: &str, lie_about_size: Option<u64>, damage: impl FnOnce(&Path)) -> Error {
    require_root();
    let tmp = TempDir::new(tag);
    let mut layer = Layer::new(Tar::default().file("a", "aaaa").bytes(), Comp::Gzip);
    if let Some(size) = lie_about_size {
        layer.size = size;
    }
    let layout = layout(&tmp.join("layout"), &[layer.clone()], json!({}));
    damage(&layout.join(format!("blobs/sha256/{}", layer.hex())));
    let store = Store::open(tmp.join("data")).unwrap();
    let err = store.import_oci("damaged", &layout).unwrap_err();
    assert_nothing_left(&tmp.join("data"));
    assert!(err.to_string().contains(&layer.digest()), "{err}");
    err
}

#[test]
fn a_corrupted_blob_is_refused() {
    let err = damaged("corrupt", None, |blob| {
        let mut bytes = fs::read(blob).unwrap();
        let last = bytes.len() - 5;
        bytes[last] ^= 0xff; // inside the gzip trailer's CRC
        fs::write(blob, bytes).unwrap();
    });
    assert!(
        matches!(
            err,
            Error::Blob {
                problem: BlobProblem::DigestMismatch { .. },
                ..
            }
        ),
        "{err}"
    );

    // Damage in the middle breaks the gzip stream first; the digest is
    // still what is reported.
    let err = damaged("corrupt-middle", None, |blob| {
        let mut bytes = fs::read(blob).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
        fs::write(blob, bytes).unwrap();
    });
    assert!(
        matches!(
            err,
            Error::Blob {
                problem: BlobProblem::DigestMismatch { .. },
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn a_size_mismatch_is_refused() {
    // The manifest says fewer bytes than the blob has.
    let err = damaged("short-claim", Some(10), |_| {});
    assert!(
        matches!(
            err,
            Error::Blob {
                problem: BlobProblem::TooLarge { expected: 10 },
                ..
            }
        ),
        "{err}"
    );
    // The blob was truncated: fewer bytes than the manifest says.
    let err = damaged("truncated", None, |blob| {
        let bytes = fs::read(blob).unwrap();
        fs::write(blob, &bytes[..bytes.len() - 1]).unwrap();
    });
    assert!(
        matches!(
            err,
            Error::Blob {
                problem: BlobProblem::SizeMismatch { .. },
                ..
            }
        ),
        "{err}"
    );
    let err = damaged("missing", None, |blob| fs::remove_file(blob).unwrap());
    assert!(
        matches!(
            err,
            Error::Blob {
                problem: BlobProblem::Missing,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn a_config_that_lies_about_diff_ids_is_refused() {
    require_root();
    let tmp = TempDir::new("diff-id");
    let mut layer = Layer::new(Tar::default().file("a", "a").bytes(), Comp::Gzip);
    layer.diff_id = format!("sha256:{}", "0".repeat(64));
    let layout = layout(&tmp.join("layout"), &[layer.clone()], json!({}));
    let store = Store::open(tmp.join("data")).unwrap();
    let err = store.import_oci("liar", &layout).unwrap_err();
    assert!(matches!(err, Error::Layer { .. }), "{err}");
    assert!(err.to_string().contains("diff_id") || err.to_string().contains("config says"));
    assert_nothing_left(&tmp.join("data"));
}

#[test]
fn a_failed_import_drops_the_layers_it_unpacked() {
    // The good first layer was whole and verified, but nothing references
    // it: the failed import removes it again. A layer another template
    // already uses stays.
    require_root();
    let tmp = TempDir::new("partial");
    let good = Layer::new(Tar::default().file("good", "g").bytes(), Comp::Gzip);
    let bad = Layer::new(Tar::default().file("../bad", "b").bytes(), Comp::Gzip);
    let layout = layout(&tmp.join("layout"), &[good.clone(), bad], json!({}));
    let store = Store::open(tmp.join("data")).unwrap();
    store.import_oci("partial", &layout).unwrap_err();
    assert_nothing_left(&tmp.join("data"));
    assert!(matches!(store.get("partial"), Err(Error::NotFound(_))));

    let fine = super::fixture::layout(&tmp.join("fine"), std::slice::from_ref(&good), json!({}));
    store.import_oci("fine", &fine).unwrap();
    store.import_oci("partial", &layout).unwrap_err();
    assert_eq!(names(&tmp.join("data/layers/sha256")), [good.hex()]);
    assert!(store.prune().unwrap().is_empty());
}

/// How a damaged image reaches the store.
#[derive(Debug, Clone, Copy)]
struct Route {
    compression: Comp,
    /// From a tar of the layout instead of the layout directory.
    archived: bool,
    /// The store already holds the layer (from a good copy of the image).
    warm: bool,
}

fn routes() -> Vec<Route> {
    let mut routes = Vec::new();
    for compression in [Comp::None, Comp::Gzip, Comp::Zstd] {
        for archived in [false, true] {
            for warm in [false, true] {
                routes.push(Route {
                    compression,
                    archived,
                    warm,
                });
            }
        }
    }
    routes
}

/// Imports the one-layer image of `layer` after `damage` changed its blob
/// file, along `route`; checks that the import failed naming the layer's
/// digest and left the store as it was. Returns the error.
fn import_along(route: Route, layer: &Layer, damage: impl FnOnce(&Path)) -> Error {
    require_root();
    let tmp = TempDir::new("route");
    let store = Store::open(tmp.join("data")).unwrap();
    if route.warm {
        let mut good = layer.clone();
        good.size = good.blob.len() as u64;
        let good = layout(&tmp.join("good"), &[good], json!({}));
        store.import_oci("good", &good).unwrap();
    }
    let dir = layout(&tmp.join("layout"), std::slice::from_ref(layer), json!({}));
    damage(&dir.join(format!("blobs/sha256/{}", layer.hex())));
    let source = if route.archived {
        archive(&dir, &tmp.join("image.tar"))
    } else {
        dir
    };
    let err = match store.import_oci("damaged", &source) {
        Ok(_) => panic!("{route:?}: the damaged image was imported"),
        Err(e) => e,
    };
    assert!(
        err.to_string().contains(&layer.digest()),
        "{route:?}: {err}"
    );
    let data = tmp.join("data");
    assert!(names(&data.join("layers/tmp")).is_empty(), "{route:?}");
    if route.warm {
        assert_eq!(names(&data.join("layers/sha256")), [layer.hex()]);
        assert_eq!(names(&data.join("templates")), ["good"], "{route:?}");
    } else {
        assert_nothing_left(&data);
    }
    err
}

fn blob_problem(route: Route, err: &Error) -> &BlobProblem {
    match err {
        Error::Blob { problem, .. } => problem,
        other => panic!("{route:?}: expected a blob error, got {other}"),
    }
}

fn small_layer(compression: Comp) -> Layer {
    Layer::new(
        Tar::default().file("a", "aaaa").file("b", "bbbb").bytes(),
        compression,
    )
}

#[test]
fn bytes_after_the_end_of_a_blob_are_refused_however_it_is_read() {
    // The manifest's digest and size are the blob's; the file has more.
    for route in routes() {
        let layer = small_layer(route.compression);
        let err = import_along(route, &layer, |blob| {
            let mut bytes = fs::read(blob).unwrap();
            bytes.extend_from_slice(b"trailing garbage after the stream");
            fs::write(blob, bytes).unwrap();
        });
        assert_eq!(
            blob_problem(route, &err),
            &BlobProblem::TooLarge {
                expected: layer.size
            },
            "{route:?}"
        );
    }
}

#[test]
fn a_blob_whose_size_differs_from_its_descriptor_is_refused() {
    for route in routes() {
        // The manifest claims one byte less than the blob has...
        let mut layer = small_layer(route.compression);
        layer.size -= 1;
        let err = import_along(route, &layer, |_| {});
        assert_eq!(
            blob_problem(route, &err),
            &BlobProblem::TooLarge {
                expected: layer.size
            },
            "{route:?}"
        );
        // ... one byte more ...
        let mut layer = small_layer(route.compression);
        layer.size += 1;
        let err = import_along(route, &layer, |_| {});
        assert_eq!(
            blob_problem(route, &err),
            &BlobProblem::SizeMismatch {
                expected: layer.size,
                actual: layer.size - 1
            },
            "{route:?}"
        );
        // ... or the blob lost its last byte.
        let layer = small_layer(route.compression);
        let err = import_along(route, &layer, |blob| {
            let bytes = fs::read(blob).unwrap();
            fs::write(blob, &bytes[..bytes.len() - 1]).unwrap();
        });
        assert_eq!(
            blob_problem(route, &err),
            &BlobProblem::SizeMismatch {
                expected: layer.size,
                actual: layer.size - 1
            },
            "{route:?}"
        );
    }
}

#[test]
fn garbage_after_the_stream_is_refused_even_when_the_digest_covers_it() {
    // A blob that is what its manifest says, but whose compressed stream
    // (or tar) ends before the blob does: the decompressor must not stop
    // at the stream's end and call the rest fine.
    for compression in [Comp::None, Comp::Gzip, Comp::Zstd] {
        let route = Route {
            compression,
            archived: false,
            warm: false,
        };
        let mut layer = small_layer(compression);
        layer.blob.extend_from_slice(b"garbage after the end");
        layer.size = layer.blob.len() as u64;
        let err = import_along(route, &layer, |_| {});
        assert!(matches!(err, Error::Layer { .. }), "{route:?}: {err}");
    }
}
