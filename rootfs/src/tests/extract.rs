//! The extractor's policy knobs, one by one, on a real directory (root:
//! it chowns). The image-layer policy is exercised end to end by
//! `import.rs` and `hostile.rs`; the files API's by tests/files.rs.

use std::fs;
use std::os::fd::AsFd;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::Path;

use tar::EntryType;

use super::fixture::*;
use crate::error::EntryProblem;
use crate::extract::{
    extract, AbsoluteNames, ExtractError, Owners, Policy, SpecialFiles, Stats, SymlinkTargets,
};

/// The files API's policy, with ids of its own.
fn import_policy() -> Policy {
    Policy {
        absolute_names: AbsoluteNames::Strip,
        owners: Owners::Fixed {
            uid: 101_000,
            gid: 101_001,
        },
        symlink_targets: SymlinkTargets::Any,
        special_files: SpecialFiles::Refuse,
        whiteouts: false,
        xattrs: false,
        replace_full_directories: false,
        max_file_size: Some(16),
    }
}

fn run(dest: &Path, tar: Tar, policy: &Policy) -> Result<Stats, ExtractError> {
    let dir = fs::File::open(dest).unwrap();
    extract(dir.as_fd(), &tar.bytes()[..], policy)
}

fn refused(result: Result<Stats, ExtractError>) -> (String, EntryProblem) {
    match result {
        Err(ExtractError::Refused { entry, problem }) => (entry, problem),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn fixed_owners_strip_slashes_and_store_any_symlink() {
    require_root();
    let tmp = TempDir::new("extract-fixed");
    let dest = tmp.join("dest");
    fs::create_dir(&dest).unwrap();
    fs::create_dir(dest.join("kept")).unwrap();
    let stats = run(
        &dest,
        Tar::default()
            .owned("/abs/file", "x", 0o640, 7, 7)
            .raw(EntryType::Directory, "kept", "", b"", 0o750, 7, 7)
            .symlink("up", "../../../../etc/shadow")
            .file(".wh.not-a-whiteout", "")
            .raw(EntryType::Fifo, "pipe", "", b"", 0o644, 0, 0),
        &Policy {
            special_files: SpecialFiles::Skip,
            ..import_policy()
        },
    )
    .unwrap();
    assert_eq!(stats.entries, 4, "the FIFO is skipped, not made");
    let file = fs::metadata(dest.join("abs/file")).unwrap();
    assert_eq!((file.uid(), file.gid()), (101_000, 101_001));
    assert_eq!(file.mode() & 0o7777, 0o640);
    let implied = fs::metadata(dest.join("abs")).unwrap();
    assert_eq!(
        (implied.uid(), implied.gid(), implied.mode() & 0o7777),
        (101_000, 101_001, 0o755)
    );
    let kept = fs::metadata(dest.join("kept")).unwrap();
    assert_eq!(kept.uid(), 0, "an existing directory keeps its owner");
    assert_eq!(kept.mode() & 0o7777, 0o750);
    let link = fs::symlink_metadata(dest.join("up")).unwrap();
    assert_eq!(link.uid(), 101_000);
    assert_eq!(
        fs::read_link(dest.join("up")).unwrap(),
        Path::new("../../../../etc/shadow")
    );
    assert!(dest.join(".wh.not-a-whiteout").is_file());
    assert!(!dest.join("pipe").exists());
}

#[test]
fn limits_of_the_import_policy() {
    require_root();
    let tmp = TempDir::new("extract-limits");
    let dest = tmp.join("dest");
    fs::create_dir_all(dest.join("full/inner")).unwrap();
    fs::write(dest.join("full/inner/keep"), "keep").unwrap();
    fs::create_dir(tmp.join("outside")).unwrap();
    // A symlink the destination already held: never followed either.
    symlink(tmp.join("outside"), dest.join("planted")).unwrap();
    symlink("full", dest.join("relative")).unwrap();
    let policy = import_policy();

    let (entry, problem) = refused(run(&dest, Tar::default().file("full", "x"), &policy));
    assert_eq!(
        (entry.as_str(), problem),
        ("full", EntryProblem::DirectoryNotEmpty)
    );
    assert_eq!(
        fs::read_to_string(dest.join("full/inner/keep")).unwrap(),
        "keep"
    );

    let big = "y".repeat(17);
    let (_, problem) = refused(run(&dest, Tar::default().file("big", &big), &policy));
    assert_eq!(problem, EntryProblem::TooLarge { size: 17, max: 16 });
    assert!(!dest.join("big").exists(), "nothing written");

    for through in ["planted/owned", "relative/owned"] {
        let (_, problem) = refused(run(&dest, Tar::default().file(through, "x"), &policy));
        assert_eq!(problem, EntryProblem::ThroughSymlink, "{through}");
    }
    assert!(fs::read_dir(tmp.join("outside")).unwrap().next().is_none());
    assert!(!dest.join("full/owned").exists());

    let (_, problem) = refused(run(
        &dest,
        Tar::default().raw(EntryType::Char, "tty", "", b"", 0o666, 0, 0),
        &policy,
    ));
    assert_eq!(
        problem,
        EntryProblem::Device {
            kind: "character device"
        }
    );
    // A hard link may not reach through a symlink or above the root.
    for target in ["planted/x", "../x", "relative/inner/keep"] {
        let (_, problem) = refused(run(&dest, Tar::default().hardlink("h", target), &policy));
        assert!(
            matches!(problem, EntryProblem::HardlinkEscapes { .. }),
            "{target}: {problem:?}"
        );
    }
}

#[test]
fn the_image_layer_policy_refuses_what_imports_strip() {
    require_root();
    let tmp = TempDir::new("extract-layer");
    let dest = tmp.join("dest");
    fs::create_dir(&dest).unwrap();
    let layer = Policy::image_layer();
    let (_, problem) = refused(run(&dest, Tar::default().file("/abs", "x"), &layer));
    assert_eq!(problem, EntryProblem::Absolute);
    let (_, problem) = refused(run(&dest, Tar::default().symlink("up", "../x"), &layer));
    assert!(matches!(problem, EntryProblem::SymlinkEscapes { .. }));
    // A full directory in the way of a file goes, as tar does.
    run(
        &dest,
        Tar::default()
            .dir("d")
            .file("d/inner", "x")
            .file("d", "now a file"),
        &layer,
    )
    .unwrap();
    assert_eq!(fs::read_to_string(dest.join("d")).unwrap(), "now a file");
}

#[test]
fn absurd_times_do_not_panic() {
    require_root();
    let tmp = TempDir::new("extract-times");
    let dest = tmp.join("dest");
    fs::create_dir(&dest).unwrap();
    for policy in [Policy::image_layer(), import_policy()] {
        let tar = Tar::default()
            .pax(&[("mtime", b"9223372036854775807.999999999")])
            .file("late", "x")
            .pax(&[("mtime", b"-9223372036854775808.5")])
            .dir("early");
        run(&dest, tar, &policy).unwrap();
        assert!(
            fs::metadata(dest.join("late"))
                .unwrap()
                .permissions()
                .mode()
                > 0
        );
        fs::remove_file(dest.join("late")).unwrap();
        fs::remove_dir(dest.join("early")).unwrap();
    }
}

// ---- properties: whatever the archive, nothing lands outside ----

mod props {
    use std::collections::BTreeSet;
    use std::path::PathBuf;

    use proptest::prelude::*;

    use super::*;

    /// Names from a small alphabet, so that members collide, nest, climb
    /// and point at each other.
    fn member_name() -> impl Strategy<Value = String> {
        let part = prop::sample::select(vec![
            "a",
            "b",
            "link",
            "..",
            ".",
            "",
            ".wh.a",
            ".wh..wh..opq",
            "dir",
        ]);
        (any::<bool>(), prop::collection::vec(part, 1..4)).prop_map(|(slash, parts)| {
            let name = parts.join("/");
            if slash {
                format!("/{name}")
            } else {
                name
            }
        })
    }

    fn member() -> impl Strategy<Value = (EntryType, String, String)> {
        let kind = prop::sample::select(vec![
            EntryType::Regular,
            EntryType::Directory,
            EntryType::Symlink,
            EntryType::Link,
            EntryType::Fifo,
            EntryType::Char,
            EntryType::new(b'V'),
        ]);
        let target = prop_oneof![
            member_name(),
            Just("/".to_string()),
            Just("../../../outside".to_string()),
        ];
        (kind, member_name(), target)
    }

    /// Every path under `dir`, relative, without following symlinks.
    fn tree(dir: &Path) -> BTreeSet<PathBuf> {
        let mut seen = BTreeSet::new();
        let mut todo = vec![dir.to_path_buf()];
        while let Some(next) = todo.pop() {
            for entry in fs::read_dir(&next).into_iter().flatten().flatten() {
                let path = entry.path();
                seen.insert(path.strip_prefix(dir).unwrap().to_path_buf());
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    todo.push(path);
                }
            }
        }
        seen
    }

    fn policies() -> [Policy; 2] {
        [Policy::image_layer(), import_policy()]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn hostile_archives_never_reach_outside_the_destination(
            members in prop::collection::vec(member(), 1..12)
        ) {
            require_root();
            let tmp = TempDir::new("extract-prop");
            let outside = tmp.join("outside");
            fs::create_dir(&outside).unwrap();
            fs::write(outside.join("victim"), "intact").unwrap();
            for policy in policies() {
                let dest = tmp.join("dest");
                let _ = fs::remove_dir_all(&dest);
                fs::create_dir(&dest).unwrap();
                // A symlink out that the destination already holds.
                symlink(&outside, dest.join("dir")).unwrap();
                let mut tar = Tar::default();
                for (kind, name, target) in &members {
                    tar = tar.raw(*kind, name, target, b"data", 0o644, 0, 0);
                }
                let _ = run(&dest, tar, &policy);
                let before: BTreeSet<PathBuf> =
                    [PathBuf::from("outside"), PathBuf::from("outside/victim"), PathBuf::from("dest")]
                        .into_iter()
                        .collect();
                let now: BTreeSet<PathBuf> = tree(&tmp.join(""))
                    .into_iter()
                    .filter(|p| !p.starts_with("dest") || p == Path::new("dest"))
                    .collect();
                prop_assert_eq!(now, before);
                prop_assert_eq!(fs::read_to_string(outside.join("victim")).unwrap(), "intact");
            }
        }

        #[test]
        fn arbitrary_bytes_are_refused_or_extracted_never_a_panic(
            bytes in prop::collection::vec(any::<u8>(), 0..2048),
            valid_prefix in any::<bool>(),
        ) {
            require_root();
            let tmp = TempDir::new("extract-bytes");
            let dest = tmp.join("dest");
            fs::create_dir(&dest).unwrap();
            // Half of the inputs start like a real archive, so the parser
            // gets past the first header.
            let mut input = if valid_prefix {
                let mut real = Tar::default().file("x", "y").bytes();
                real.truncate(512);
                real
            } else {
                Vec::new()
            };
            input.extend(bytes);
            for policy in policies() {
                let dir = fs::File::open(&dest).unwrap();
                let _ = extract(dir.as_fd(), &input[..], &policy);
            }
        }
    }
}
