//! The files API against real sandboxes: content both ways, ownership,
//! symlinks and races that must never lead to the host, tar round trips,
//! listings, watches, limits and the errors that name the path.

use std::collections::BTreeSet;
use std::fs;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sandlot::{Error, FileKind, FilesError, FsEvent, RunOptions, SandboxOptions};
use sandlot_tests::{eventually, runtime, sandbox, sh};

fn files_error(result: Result<impl std::fmt::Debug, Error>) -> FilesError {
    match result {
        Err(Error::Files(e)) => e,
        other => panic!("expected a files error, got {other:?}"),
    }
}

/// A host directory removed when the test ends, passed or failed.
struct HostDir(PathBuf);

impl HostDir {
    fn new(tag: &str) -> HostDir {
        let dir = std::env::temp_dir().join(format!("sandlot-files-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        HostDir(dir)
    }
}

impl Drop for HostDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[test]
fn written_files_are_read_by_commands_and_back() {
    let rt = runtime();
    let sb = sandbox(&rt);
    let files = sb.files();
    let info = files
        .write("/work/deep/er/hello.txt", "hello from the host")
        .unwrap();
    assert_eq!(info.path, "/work/deep/er/hello.txt");
    assert_eq!(info.name, "hello.txt");
    assert_eq!(info.kind, FileKind::File);
    assert_eq!(info.size, 19);
    assert_eq!(info.mode, 0o644);
    assert_eq!(
        sh(&sb, "cat /work/deep/er/hello.txt"),
        "hello from the host"
    );
    // Parents were created, as root's, 0755.
    assert_eq!(
        sh(
            &sb,
            "stat -c '%u:%g %a' /work /work/deep/er /work/deep/er/hello.txt"
        ),
        "0:0 755\n0:0 755\n0:0 644\n"
    );

    sh(&sb, "printf 'from inside\\n' > /tmp/in.txt");
    assert_eq!(
        files.read_to_string("/tmp/in.txt").unwrap(),
        "from inside\n"
    );
    assert_eq!(files.read("/tmp/in.txt").unwrap(), b"from inside\n");
    let mut streamed = String::new();
    let mut reader = files.open("/tmp/in.txt").unwrap();
    assert_eq!(reader.len(), 12);
    reader.read_to_string(&mut streamed).unwrap();
    assert_eq!(streamed, "from inside\n");

    // Overwrite keeps the inode and its owner and mode.
    sh(&sb, "chown 1000:1000 /tmp/in.txt && chmod 600 /tmp/in.txt");
    files.write("/tmp/in.txt", "short").unwrap();
    assert_eq!(
        sh(&sb, "cat /tmp/in.txt; stat -c ' %u:%g %a' /tmp/in.txt"),
        "short 1000:1000 600\n"
    );

    // Relative paths start at the user's home; write_many writes in order.
    let written = files
        .write_many([("notes/a.txt", "a"), ("notes/b.txt", "bb")])
        .unwrap();
    assert_eq!(written[1].path, "/root/notes/b.txt");
    assert_eq!(sh(&sb, "cat /root/notes/a.txt /root/notes/b.txt"), "abb");

    // A reader as the source, large enough to take several chunks.
    let big: Vec<u8> = (0..3 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    files.write_from("/tmp/big.bin", &big[..]).unwrap();
    assert_eq!(
        sh(&sb, "wc -c < /tmp/big.bin").trim(),
        (3 * 1024 * 1024).to_string()
    );
    assert_eq!(files.read("/tmp/big.bin").unwrap(), big);
}

#[test]
fn api_files_belong_to_root_inside_and_to_the_range_on_the_host() {
    let rt = runtime();
    let sb = sandbox(&rt);
    sb.files().write("/tmp/owned/f", "x").unwrap();
    assert_eq!(
        sh(&sb, "stat -c %u:%g /tmp/owned /tmp/owned/f"),
        "0:0\n0:0\n"
    );
    let pid = sb.info().init_pid.unwrap();
    for path in ["tmp/owned", "tmp/owned/f"] {
        let meta = fs::metadata(format!("/proc/{pid}/root/{path}")).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (100_000, 100_000), "{path}");
    }
    // Root inside may change and give away what the API wrote.
    sh(
        &sb,
        "echo more >> /tmp/owned/f && chown 1000:1000 /tmp/owned/f && chmod 640 /tmp/owned/f",
    );
    let info = sb.files().stat("/tmp/owned/f").unwrap();
    assert_eq!((info.uid, info.gid, info.mode), (1000, 1000, 0o640));
    assert_eq!(
        sb.files().read_to_string("/tmp/owned/f").unwrap(),
        "xmore\n"
    );

    // Written as another user: theirs, parents included.
    let as_user = sb.files().user("1000:1000");
    as_user.write("/tmp/theirs/g", "y").unwrap();
    assert!(as_user.make_dir("/tmp/theirs/sub").unwrap());
    assert_eq!(
        sh(
            &sb,
            "stat -c %u:%g /tmp/theirs /tmp/theirs/g /tmp/theirs/sub"
        ),
        "1000:1000\n1000:1000\n1000:1000\n"
    );
    let meta = fs::metadata(format!("/proc/{pid}/root/tmp/theirs/g")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (101_000, 101_000));
    // A user the sandbox does not know by name is refused.
    assert!(matches!(
        sb.files().user("nobody-here").write("/tmp/x", "x"),
        Err(Error::InvalidOptions { option: "user", .. })
    ));
}

#[test]
fn symlinks_to_host_files_resolve_inside_the_sandbox() {
    let rt = runtime();
    let sb = sandbox(&rt);
    let host_shadow = fs::read("/etc/shadow").unwrap_or_default();
    sh(
        &sb,
        "ln -s /etc/shadow /tmp/abs && ln -s ../../../../../../../../etc/shadow /tmp/rel \
         && mkdir -p /tmp/d && ln -s / /tmp/d/root",
    );
    let inside = sb
        .commands()
        .run("cat /etc/shadow", RunOptions::default())
        .unwrap();
    for path in [
        "/tmp/abs",
        "/tmp/rel",
        "/tmp/d/root/etc/shadow",
        "/../../etc/shadow",
    ] {
        match sb.files().read(path) {
            Ok(data) => {
                assert!(
                    inside.success(),
                    "{path}: read although the sandbox has no /etc/shadow"
                );
                assert_eq!(data, inside.stdout, "{path}: not the sandbox's file");
            }
            Err(Error::Files(FilesError::NotFound { .. })) => assert!(!inside.success()),
            Err(e) => panic!("{path}: {e}"),
        }
        if !host_shadow.is_empty() {
            assert_ne!(
                sb.files().read(path).ok(),
                Some(host_shadow.clone()),
                "{path}"
            );
        }
    }
    // Magic links never lead out either.
    let pid = sb.info().init_pid.unwrap();
    for path in [
        "/proc/1/root/etc/hostname".to_string(),
        format!("/proc/{pid}/root/etc/hostname"),
        "/proc/self/root/etc/hostname".into(),
    ] {
        assert!(sb.files().read(&path).is_err(), "{path}");
    }
    // Writing through a link to a host path creates the sandbox's file.
    let probe = format!("/tmp/sandlot-probe-{}", std::process::id());
    sh(&sb, &format!("ln -s {probe} /tmp/to-host"));
    sb.files().write("/tmp/to-host", "inside").unwrap();
    assert!(
        !std::path::Path::new(&probe).exists(),
        "the host got {probe}"
    );
    assert_eq!(sh(&sb, &format!("cat {probe}")), "inside");
}

#[test]
fn a_rename_race_never_reaches_the_host() {
    let rt = runtime();
    let sb = sandbox(&rt);
    // On the host, a directory a naive implementation would reach through
    // the sandbox's symlink; the same absolute path inside is the sandbox's.
    let host = HostDir::new("race");
    fs::write(host.0.join("secret"), "HOST").unwrap();
    let host_path = host.0.display().to_string();
    sh(&sb, "mkdir -p /race/d && echo REAL > /race/d/secret");
    sh(
        &sb,
        &format!("mkdir -p {host_path} && echo SANDBOX > {host_path}/secret"),
    );
    // Inside: d flips between a real directory and symlinks that point at
    // the host path, absolute and climbing.
    let flipper = sb
        .commands()
        .spawn(
            [
                "python3",
                "-c",
                &format!(
                    "import os\nos.chdir('/race')\nlinks = ['{host_path}', '../../../../../..{host_path}', '/']\n\
                     i = 0\nwhile True:\n    os.rename('d', 'real')\n    os.symlink(links[i % 3], 'd')\n    \
                     os.unlink('d')\n    os.rename('real', 'd')\n    i += 1\n"
                ),
            ],
            RunOptions::default(),
        )
        .unwrap();
    let files = sb.files();
    let mut seen = BTreeSet::new();
    let end = Instant::now() + Duration::from_secs(3);
    let mut rounds = 0;
    while Instant::now() < end || rounds < 300 {
        match files.read_to_string("/race/d/secret") {
            Ok(text) => {
                seen.insert(text.trim().to_string());
            }
            Err(Error::Files(_)) => {}
            Err(e) => panic!("{e}"),
        }
        let _ = files.write(&format!("/race/d/out-{rounds}"), "x");
        let _ = files.make_dir(&format!("/race/d/dir-{rounds}"));
        rounds += 1;
    }
    flipper.kill().unwrap();
    assert!(!seen.contains("HOST"), "read the host's file: {seen:?}");
    let leaked: Vec<_> = fs::read_dir(&host.0)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|name| name != "secret")
        .collect();
    assert!(leaked.is_empty(), "the host got {leaked:?}");
    assert_eq!(fs::read_to_string(host.0.join("secret")).unwrap(), "HOST");
    eprintln!("{rounds} rounds, read {seen:?}");
}

#[test]
fn tar_export_and_import_round_trip() {
    let rt = runtime();
    let sb = sandbox(&rt);
    let long = "n".repeat(120);
    sh(
        &sb,
        &format!(
            "set -e; mkdir -p /src/empty /src/private /src/{long}; cd /src
             echo data > file; chmod 640 file; : > empty-file; : > zero; chmod 600 zero
             printf '#!/bin/sh\\necho run\\n' > tool; chmod 755 tool
             echo secret > private/key; chmod 700 private; chmod 600 private/key
             chmod 1777 empty
             ln -s file rel-link; ln -s /etc/passwd abs-link; ln -s missing dangling
             ln file hard
             echo long > {long}/{long}
             touch -d '2001-02-03 04:05:06' file empty
             mkfifo fifo"
        ),
    );
    let listing = "cd DIR && find . -printf '%P %y %m %l %s %n\\n' | sort";
    let export = sb.files().export_tar("/src").unwrap();
    let mut archive = Vec::new();
    let mut export = export;
    export.read_to_end(&mut archive).unwrap();
    // The archive names members from the exported directory's name, with
    // inside ids.
    let mut names = Vec::new();
    for entry in tar::Archive::new(&archive[..]).entries().unwrap() {
        let entry = entry.unwrap();
        assert_eq!(entry.header().uid().unwrap(), 0);
        names.push(entry.path().unwrap().display().to_string());
    }
    assert!(names.contains(&"src".to_string()), "{names:?}");
    assert!(names.contains(&format!("src/{long}/{long}")), "{names:?}");
    assert!(names.contains(&"src/fifo".to_string()));
    let refused = files_error(sb.files().import_tar("/dst", &archive[..]));
    assert!(matches!(refused, FilesError::Tar { .. }), "{refused}");
    assert!(refused.path().ends_with("src/fifo"), "{refused}");

    // FIFOs are exported but never imported.
    sh(&sb, "rm /src/fifo");
    let before = sh(&sb, &listing.replace("DIR", "/src"));
    let mut archive = Vec::new();
    sb.files()
        .export_tar("/src")
        .unwrap()
        .read_to_end(&mut archive)
        .unwrap();
    let imported = sb.files().import_tar("/dst", &archive[..]).unwrap();
    assert!(imported.entries >= 10, "{imported:?}");
    let after = sh(&sb, &listing.replace("DIR", "/dst/src"));
    assert_eq!(after, before);
    let times = "cd DIR && find . -exec stat -c '%n %Y %u:%g' {} + | sort";
    assert_eq!(
        sh(&sb, &times.replace("DIR", "/dst/src")),
        sh(&sb, &times.replace("DIR", "/src"))
    );
    assert_eq!(sh(&sb, "/dst/src/tool"), "run\n");

    // And through a second sandbox: the archive is all it takes.
    let other = sandbox(&rt);
    other.files().import_tar("/", &archive[..]).unwrap();
    assert_eq!(sh(&other, &listing.replace("DIR", "/src")), before);
}

#[test]
fn hostile_tar_members_are_refused_and_stay_inside() {
    let rt = runtime();
    let sb = sandbox(&rt);
    let raw = |entries: &[(&str, tar::EntryType, &str)]| {
        let mut builder = tar::Builder::new(Vec::new());
        for (name, kind, link) in entries {
            let mut header = tar::Header::new_gnu();
            {
                // Raw names: the tar crate's setters refuse `..`.
                let old = header.as_old_mut();
                old.name[..name.len()].copy_from_slice(name.as_bytes());
                old.linkname[..link.len()].copy_from_slice(link.as_bytes());
            }
            let data: &[u8] = if *kind == tar::EntryType::Regular {
                b"x\n"
            } else {
                b""
            };
            header.set_entry_type(*kind);
            header.set_mode(0o644);
            header.set_size(data.len() as u64);
            header.set_cksum();
            builder.append(&header, data).unwrap();
        }
        builder.into_inner().unwrap()
    };
    let climbing = raw(&[("../../escape", tar::EntryType::Regular, "")]);
    let e = files_error(sb.files().import_tar("/in/a", &climbing[..]));
    assert!(matches!(e, FilesError::PathEscape { .. }), "{e}");
    assert_eq!(
        sh(&sb, "ls -A /in/a; test ! -e /escape && echo none"),
        "none\n"
    );

    let through_link = raw(&[
        ("evil", tar::EntryType::Symlink, "/"),
        ("evil/etc/owned", tar::EntryType::Regular, ""),
    ]);
    let e = files_error(sb.files().import_tar("/in/b", &through_link[..]));
    assert!(matches!(e, FilesError::PathEscape { .. }), "{e}");
    assert_eq!(e.path(), "/in/b/evil/etc/owned");
    assert_eq!(sh(&sb, "test ! -e /etc/owned && echo none"), "none\n");

    let hard_out = raw(&[("h", tar::EntryType::Link, "../../etc/passwd")]);
    let e = files_error(sb.files().import_tar("/in/c", &hard_out[..]));
    assert!(matches!(e, FilesError::PathEscape { .. }), "{e}");

    // No symlink is followed on a member's way: not a relative one the
    // archive made, not one the sandbox planted in the destination.
    let relative = raw(&[
        ("real", tar::EntryType::Directory, ""),
        ("link", tar::EntryType::Symlink, "real"),
        ("link/x", tar::EntryType::Regular, ""),
    ]);
    let e = files_error(sb.files().import_tar("/in/d", &relative[..]));
    assert!(matches!(e, FilesError::PathEscape { .. }), "{e}");
    assert_eq!(e.path(), "/in/d/link/x");
    sh(&sb, "mkdir -p /in/e && ln -s /etc /in/e/etc");
    let planted = raw(&[("etc/owned", tar::EntryType::Regular, "")]);
    let e = files_error(sb.files().import_tar("/in/e", &planted[..]));
    assert!(matches!(e, FilesError::PathEscape { .. }), "{e}");
    assert_eq!(
        sh(
            &sb,
            "test ! -e /etc/owned && test ! -e /in/d/real/x && echo none"
        ),
        "none\n"
    );

    // A member never deletes a directory that holds something.
    sh(&sb, "mkdir -p /in/f/full && echo keep > /in/f/full/keep");
    let over = raw(&[("full", tar::EntryType::Regular, "")]);
    let e = files_error(sb.files().import_tar("/in/f", &over[..]));
    assert!(matches!(e, FilesError::IsADirectory { .. }), "{e}");
    assert_eq!(sh(&sb, "cat /in/f/full/keep"), "keep\n");
}

#[test]
fn list_goes_as_deep_as_asked() {
    let rt = runtime();
    let sb = sandbox(&rt);
    sh(
        &sb,
        "mkdir -p /t/a/b/c && echo 12345 > /t/a/file && ln -s a/file /t/link && chmod 700 /t/a/b \
         && chown 1000:1000 /t/a/file",
    );
    let paths = |depth| -> Vec<String> {
        sb.files()
            .list("/t", depth)
            .unwrap()
            .into_iter()
            .map(|e| e.path)
            .collect()
    };
    assert_eq!(paths(1), ["/t/a", "/t/link"]);
    assert_eq!(paths(2), ["/t/a", "/t/a/b", "/t/a/file", "/t/link"]);
    assert_eq!(
        paths(10),
        ["/t/a", "/t/a/b", "/t/a/b/c", "/t/a/file", "/t/link"]
    );
    let entries = sb.files().list("/t", 3).unwrap();
    let file = entries.iter().find(|e| e.name == "file").unwrap();
    assert_eq!(
        (file.kind, file.size, file.uid, file.gid),
        (FileKind::File, 6, 1000, 1000)
    );
    let b = entries.iter().find(|e| e.name == "b").unwrap();
    assert_eq!((b.kind, b.mode), (FileKind::Dir, 0o700));
    let link = entries.iter().find(|e| e.name == "link").unwrap();
    assert_eq!(link.kind, FileKind::Symlink);
    assert_eq!(link.symlink_target.as_deref(), Some("a/file"));
    assert!(file.modified.elapsed().unwrap() < Duration::from_secs(600));
    // The root lists, and /proc is listed but not entered.
    let top = sb.files().list("/", 2).unwrap();
    assert!(top.iter().any(|e| e.path == "/proc"));
    assert!(!top.iter().any(|e| e.path.starts_with("/proc/")));
    assert!(matches!(
        sb.files().list("/t", 0),
        Err(Error::InvalidOptions {
            option: "depth",
            ..
        })
    ));
}

#[test]
fn stat_exists_make_dir_rename_and_remove() {
    let rt = runtime();
    let sb = sandbox(&rt);
    let files = sb.files();
    assert!(!files.exists("/m").unwrap());
    assert!(files.make_dir("/m/n/o").unwrap());
    assert!(!files.make_dir("/m/n/o").unwrap(), "already a directory");
    assert!(files.exists("/m/n/o").unwrap());
    assert_eq!(files.stat("/m/n").unwrap().kind, FileKind::Dir);
    files.write("/m/n/o/f", "f").unwrap();
    sh(&sb, "ln -s /m/n /m/link");
    let link = files.stat("/m/link").unwrap();
    assert_eq!(
        (link.kind, link.symlink_target.as_deref()),
        (FileKind::Symlink, Some("/m/n"))
    );

    let moved = files.rename("/m/n", "/m/moved").unwrap();
    assert_eq!(
        (moved.path.as_str(), moved.kind),
        ("/m/moved", FileKind::Dir)
    );
    assert_eq!(sh(&sb, "cat /m/moved/o/f"), "f");
    assert!(!files.exists("/m/n").unwrap());
    assert!(
        files.exists("/m/link").unwrap(),
        "a dangling link still exists"
    );

    // Removing a link removes the link, not its target.
    sh(&sb, "ln -sfn /m/moved /m/link");
    files.remove("/m/link").unwrap();
    assert_eq!(sh(&sb, "cat /m/moved/o/f"), "f");
    files.remove("/m").unwrap();
    assert_eq!(sh(&sb, "test ! -e /m && echo gone"), "gone\n");
}

/// Watches share a process-wide thread and descriptor count: one at a time.
static WATCH_LOCK: Mutex<()> = Mutex::new(());

fn watch_threads() -> usize {
    fs::read_dir("/proc/self/task")
        .unwrap()
        .filter(|task| {
            let comm = task.as_ref().unwrap().path().join("comm");
            fs::read_to_string(comm).is_ok_and(|c| c.trim() == "sandlot-watch")
        })
        .count()
}

fn inotify_fds() -> usize {
    fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter(|fd| {
            fs::read_link(fd.as_ref().unwrap().path())
                .is_ok_and(|target| target.to_string_lossy().contains("inotify"))
        })
        .count()
}

/// Receives until `want` matched every expected event or time runs out.
fn collect(
    watch: &sandlot::Watch,
    mut want: Vec<FsEvent>,
    limit: Duration,
) -> (Vec<FsEvent>, Vec<FsEvent>) {
    let end = Instant::now() + limit;
    let mut got = Vec::new();
    while !want.is_empty() {
        let left = end.saturating_duration_since(Instant::now());
        match watch.recv_timeout(left) {
            Ok(event) => {
                want.retain(|w| *w != event);
                got.push(event);
            }
            Err(_) => break,
        }
    }
    (got, want)
}

#[test]
fn watch_sees_create_modify_delete_and_rename() {
    let _serial = WATCH_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let rt = runtime();
    let sb = sandbox(&rt);
    let (threads, fds) = (watch_threads(), inotify_fds());
    sh(&sb, "mkdir -p /w/old");
    let watch = sb.files().watch("/w", true).unwrap();
    // A thread names itself once it runs.
    assert!(eventually(Duration::from_secs(5), || watch_threads() == threads + 1));
    sh(
        &sb,
        "echo a > /w/f; echo b >> /w/f; mkdir -p /w/new/deeper; echo c > /w/new/deeper/g; \
         echo d > /w/old/h; mv /w/f /w/renamed; rm /w/renamed; chmod 600 /w/old/h",
    );
    sb.files().write("/w/by-api", "e").unwrap();
    let s = |p: &str| p.to_string();
    let want = vec![
        FsEvent::Create {
            path: s("/w/f"),
            is_dir: false,
        },
        FsEvent::Modify { path: s("/w/f") },
        FsEvent::Create {
            path: s("/w/new"),
            is_dir: true,
        },
        FsEvent::Create {
            path: s("/w/new/deeper/g"),
            is_dir: false,
        },
        FsEvent::Create {
            path: s("/w/old/h"),
            is_dir: false,
        },
        FsEvent::Rename {
            from: Some(s("/w/f")),
            to: Some(s("/w/renamed")),
            is_dir: false,
        },
        FsEvent::Delete {
            path: s("/w/renamed"),
            is_dir: false,
        },
        FsEvent::Metadata {
            path: s("/w/old/h"),
        },
        FsEvent::Create {
            path: s("/w/by-api"),
            is_dir: false,
        },
    ];
    let (got, missing) = collect(&watch, want, Duration::from_secs(10));
    assert!(missing.is_empty(), "missing {missing:?}, got {got:?}");

    // Not recursive: only the directory itself.
    let flat = sb.files().watch("/w", false).unwrap();
    sh(&sb, "touch /w/old/quiet /w/top");
    let (got, missing) = collect(
        &flat,
        vec![FsEvent::Create {
            path: s("/w/top"),
            is_dir: false,
        }],
        Duration::from_secs(10),
    );
    assert!(missing.is_empty(), "{got:?}");
    assert!(!got
        .iter()
        .any(|e| matches!(e, FsEvent::Create { path, .. } if path == "/w/old/quiet")));

    // Dropping a watch ends its thread and closes its instance.
    drop(flat);
    drop(watch);
    assert_eq!(watch_threads(), threads);
    assert_eq!(inotify_fds(), fds);

    // The end of the sandbox ends a watch too: the channel disconnects.
    let watch = sb.files().watch("/w", true).unwrap();
    sb.kill().unwrap();
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        match watch.recv_timeout(end.saturating_duration_since(Instant::now())) {
            Ok(_) => continue,
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
            Err(e) => panic!("the watch outlived its sandbox: {e:?}"),
        }
    }
    assert!(eventually(Duration::from_secs(5), || watch_threads() == threads));
    drop(watch);
    assert_eq!(inotify_fds(), fds);
    assert!(matches!(
        sb.files().watch("/w", true),
        Err(Error::SandboxNotRunning { .. })
    ));
}

#[test]
fn writes_past_the_disk_limit_get_no_space() {
    let rt = runtime();
    let sb = rt.create(SandboxOptions::default().disk(4 << 20)).unwrap();
    let data = vec![7u8; 8 << 20];
    let e = files_error(sb.files().write("/tmp/fill", &data));
    assert_eq!(
        e,
        FilesError::NoSpace {
            path: "/tmp/fill".into()
        }
    );
    // What this call created is gone again, and the space with it.
    assert!(!sb.files().exists("/tmp/fill").unwrap());
    sb.files().write("/tmp/small", vec![1u8; 1 << 20]).unwrap();
    let e = files_error(sb.files().write_from("/tmp/streamed", &data[..]));
    assert!(matches!(e, FilesError::NoSpace { .. }), "{e}");
}

#[test]
fn the_file_size_maximum_is_enforced_both_ways() {
    let rt = runtime();
    let sb = sandbox(&rt);
    let small = sb.files().max_file_size(1000);
    let e = files_error(small.write("/tmp/big", vec![0u8; 1001]));
    assert_eq!(
        e,
        FilesError::FileTooLarge {
            path: "/tmp/big".into(),
            max: 1000
        }
    );
    let e = files_error(small.write_from("/tmp/big", &vec![0u8; 5000][..]));
    assert!(matches!(e, FilesError::FileTooLarge { .. }), "{e}");
    assert!(!sb.files().exists("/tmp/big").unwrap());
    small.write("/tmp/ok", vec![0u8; 1000]).unwrap();
    sh(&sb, "head -c 2000 /dev/zero > /tmp/large");
    let e = files_error(small.read("/tmp/large"));
    assert_eq!(
        e,
        FilesError::FileTooLarge {
            path: "/tmp/large".into(),
            max: 1000
        }
    );
    assert_eq!(sb.files().read("/tmp/large").unwrap().len(), 2000);
}

#[test]
fn errors_name_the_path() {
    let rt = runtime();
    let sb = sandbox(&rt);
    sh(&sb, "mkdir -p /e/dir && echo x > /e/file && mkfifo /e/fifo");
    let files = sb.files();
    let cases: Vec<(Result<(), Error>, FilesError)> = vec![
        (
            files.read("/e/none").map(drop),
            FilesError::NotFound {
                path: "/e/none".into(),
            },
        ),
        (
            files.read("/e/dir").map(drop),
            FilesError::IsADirectory {
                path: "/e/dir".into(),
            },
        ),
        (
            files.write("/e/dir", "x").map(drop),
            FilesError::IsADirectory {
                path: "/e/dir".into(),
            },
        ),
        (
            files.write("/e/file/sub", "x").map(drop),
            FilesError::NotADirectory {
                path: "/e/file".into(),
            },
        ),
        (
            files.make_dir("/e/file").map(drop),
            FilesError::AlreadyExists {
                path: "/e/file".into(),
            },
        ),
        (
            files.read("/e/fifo").map(drop),
            FilesError::NotAFile {
                path: "/e/fifo".into(),
                kind: "fifo",
            },
        ),
        (
            files.write("/e/fifo", "x").map(drop),
            FilesError::NotAFile {
                path: "/e/fifo".into(),
                kind: "fifo",
            },
        ),
        (
            files.read("/dev/null").map(drop),
            FilesError::NotAFile {
                path: "/dev/null".into(),
                kind: "character device",
            },
        ),
        (
            files.read("/proc/kallsyms").map(drop),
            FilesError::SpecialFilesystem {
                path: "/proc/kallsyms".into(),
                filesystem: "proc",
            },
        ),
        (
            files.remove("/e/none"),
            FilesError::NotFound {
                path: "/e/none".into(),
            },
        ),
        (
            files.rename("/e/none", "/e/x").map(drop),
            FilesError::NotFound {
                path: "/e/none".into(),
            },
        ),
    ];
    for (result, want) in cases {
        assert_eq!(files_error(result), want);
    }
    assert!(matches!(
        files_error(files.remove("/")),
        FilesError::InvalidPath { .. }
    ));
    // The host's terminal is never opened through the sandbox's /dev/tty.
    assert!(matches!(
        files_error(files.read("/dev/tty")),
        FilesError::NotAFile { .. }
    ));
    assert!(files.write("/proc/sys/kernel/hostname", "x").is_err());

    sb.kill().unwrap();
    for result in [
        files.read("/e/file").map(drop),
        files.write("/e/file", "x").map(drop),
        files.list("/", 1).map(drop),
    ] {
        assert!(
            matches!(result, Err(Error::SandboxNotRunning { .. })),
            "{result:?}"
        );
    }
}

#[test]
fn concurrent_api_use_is_safe() {
    let rt = runtime();
    let sb = Arc::new(sandbox(&rt));
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..4)
        .map(|i| {
            let sb = sb.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) && n < 200 {
                    let path = format!("/c/{i}/{n}");
                    sb.files().write(&path, path.as_bytes()).unwrap();
                    assert_eq!(sb.files().read(&path).unwrap(), path.as_bytes());
                    n += 1;
                }
                n
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let total: usize = workers.into_iter().map(|w| w.join().unwrap()).sum();
    assert!(total > 0);
    assert_eq!(sh(&sb, "find /c -type f | wc -l").trim(), total.to_string());
}
