//! `filesystem.Filesystem`: stat, list, make, move and remove entries of
//! the sandbox, and watch directories (a stream, or a watcher polled by
//! id), over the library's files API.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::Path;
use axum::http::HeaderMap;
use axum::response::Response;
use http_body_util::{BodyExt, Limited};
use sandlot::{EntryInfo, FileKind, FsEvent, Sandbox, Watch};
use tokio::sync::mpsc;

use super::users::{self, Accounts};
use super::{blocking, unknown_method, Target};
use crate::connect::{self, StreamWriter};
use crate::error::{ApiError, Code};
use crate::proto::filesystem as pb;
use crate::state::SandboxRecord;

/// Watchers one sandbox may hold at once (each is an inotify instance and
/// a thread).
const MAX_WATCHERS: usize = 64;
/// Events one `GetWatcherEvents` returns at most (the rest wait for the
/// next call; the library's queue holds 4096 and then reports overflow).
const MAX_EVENTS_PER_POLL: usize = 4096;
/// Events queued for a `WatchDir` stream before its bridge waits.
const STREAM_BUFFER: usize = 256;

/// A sandbox's watchers created by `CreateWatcher`, by id.
#[derive(Default)]
pub struct Watchers {
    next: AtomicU64,
    map: Mutex<HashMap<String, Arc<Watcher>>>,
}

pub struct Watcher {
    watch: Watch,
    root: String,
}

/// Go's `os.FileMode.String()`, which envd reports as `permissions`.
fn permissions(kind: FileKind, mode: u32) -> String {
    let mut s = String::new();
    match kind {
        FileKind::Dir => s.push('d'),
        FileKind::Symlink => s.push('L'),
        FileKind::BlockDevice => s.push('D'),
        FileKind::CharDevice => {
            s.push('D');
            s.push('c')
        }
        FileKind::Fifo => s.push('p'),
        FileKind::Socket => s.push('S'),
        FileKind::File => {}
    }
    if mode & 0o4000 != 0 {
        s.push('u');
    }
    if mode & 0o2000 != 0 {
        s.push('g');
    }
    if mode & 0o1000 != 0 {
        s.push('t');
    }
    if s.is_empty() {
        s.push('-');
    }
    for (bit, c) in [
        (0o400, 'r'),
        (0o200, 'w'),
        (0o100, 'x'),
        (0o040, 'r'),
        (0o020, 'w'),
        (0o010, 'x'),
        (0o004, 'r'),
        (0o002, 'w'),
        (0o001, 'x'),
    ] {
        s.push(if mode & bit != 0 { c } else { '-' });
    }
    s
}

fn file_type(kind: FileKind) -> pb::FileType {
    match kind {
        FileKind::Dir => pb::FileType::Directory,
        FileKind::Symlink => pb::FileType::Symlink,
        _ => pb::FileType::File,
    }
}

pub fn entry_info(entry: &EntryInfo, accounts: &Accounts) -> pb::EntryInfo {
    let modified = entry
        .modified
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    pb::EntryInfo {
        name: entry.name.clone(),
        r#type: file_type(entry.kind) as i32,
        path: entry.path.clone(),
        size: entry.size as i64,
        mode: entry.mode & 0o777,
        permissions: permissions(entry.kind, entry.mode),
        owner: accounts.user_name(entry.uid),
        group: accounts.group_name(entry.gid),
        modified_time: Some(pbjson_types::Timestamp {
            seconds: modified.as_secs() as i64,
            nanos: modified.subsec_nanos() as i32,
        }),
        symlink_target: entry.symlink_target.clone(),
        metadata: HashMap::new(),
        is_symlink: entry.kind == FileKind::Symlink,
    }
}

/// The files API of `sandbox` acting as the request's user, and that
/// user's account (for relative paths and ownership).
fn files_as<'a>(
    sandbox: &'a Sandbox,
    accounts: &Accounts,
    user: Option<&str>,
) -> Result<(sandlot::Files<'a>, Option<users::Account>), ApiError> {
    let account = accounts.resolve(user)?;
    let files = match &account {
        Some(a) => sandbox.files().user(a.name.clone()),
        None => sandbox.files(),
    };
    Ok((files, account))
}

pub async fn call(
    Path(method): Path<String>,
    axum::Extension(record): Target,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let bytes = match Limited::new(body, connect::MAX_MESSAGE).collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) => {
            let e = ApiError::bad_request(format!("reading the request: {e}"));
            return if method == "WatchDir" {
                connect::stream_error(&e)
            } else {
                connect::unary_error(&e)
            };
        }
    };
    let user = match users::from_basic_auth(&headers) {
        Ok(user) => user,
        Err(e) => return connect::unary_error(&e),
    };
    macro_rules! unary {
        ($req:ty, $f:expr) => {{
            match connect::decode_unary::<$req>(&headers, &bytes) {
                Ok(request) => {
                    let record = record.clone();
                    connect::unary_response(
                        blocking(move || $f(&record, user.as_deref(), request)).await,
                    )
                }
                Err(e) => connect::unary_error(&e),
            }
        }};
    }
    match method.as_str() {
        "Stat" => unary!(pb::StatRequest, stat),
        "MakeDir" => unary!(pb::MakeDirRequest, make_dir),
        "Move" => unary!(pb::MoveRequest, move_entry),
        "ListDir" => unary!(pb::ListDirRequest, list_dir),
        "Remove" => unary!(pb::RemoveRequest, remove),
        "CreateWatcher" => unary!(pb::CreateWatcherRequest, create_watcher),
        "GetWatcherEvents" => unary!(pb::GetWatcherEventsRequest, get_watcher_events),
        "RemoveWatcher" => unary!(pb::RemoveWatcherRequest, remove_watcher),
        "WatchDir" => watch_dir(record, &headers, &bytes, user).await,
        other => connect::unary_error(&unknown_method("filesystem.Filesystem", other)),
    }
}

fn stat(
    record: &SandboxRecord,
    user: Option<&str>,
    request: pb::StatRequest,
) -> Result<pb::StatResponse, ApiError> {
    let accounts = Accounts::load(&record.sandbox);
    let (files, _) = files_as(&record.sandbox, &accounts, user)?;
    let entry = files.stat(&request.path)?;
    Ok(pb::StatResponse {
        entry: Some(entry_info(&entry, &accounts)),
    })
}

fn make_dir(
    record: &SandboxRecord,
    user: Option<&str>,
    request: pb::MakeDirRequest,
) -> Result<pb::MakeDirResponse, ApiError> {
    let accounts = Accounts::load(&record.sandbox);
    let (files, _) = files_as(&record.sandbox, &accounts, user)?;
    if !files.make_dir(&request.path)? {
        return Err(ApiError::new(
            axum::http::StatusCode::CONFLICT,
            Code::AlreadyExists,
            format!("directory {} already exists", request.path),
        ));
    }
    let entry = files.stat(&request.path)?;
    Ok(pb::MakeDirResponse {
        entry: Some(entry_info(&entry, &accounts)),
    })
}

fn move_entry(
    record: &SandboxRecord,
    user: Option<&str>,
    request: pb::MoveRequest,
) -> Result<pb::MoveResponse, ApiError> {
    let accounts = Accounts::load(&record.sandbox);
    let (files, _) = files_as(&record.sandbox, &accounts, user)?;
    let entry = files.rename(&request.source, &request.destination)?;
    Ok(pb::MoveResponse {
        entry: Some(entry_info(&entry, &accounts)),
    })
}

fn list_dir(
    record: &SandboxRecord,
    user: Option<&str>,
    request: pb::ListDirRequest,
) -> Result<pb::ListDirResponse, ApiError> {
    let accounts = Accounts::load(&record.sandbox);
    let (files, _) = files_as(&record.sandbox, &accounts, user)?;
    // envd: depth 0 means 1 (the directory's children).
    let depth = request.depth.max(1) as usize;
    let entry = files.stat(&request.path)?;
    if entry.kind != FileKind::Dir {
        return Err(ApiError::bad_request(format!(
            "{} is not a directory",
            entry.path
        )));
    }
    let entries = files.list(&request.path, depth)?;
    Ok(pb::ListDirResponse {
        entries: entries.iter().map(|e| entry_info(e, &accounts)).collect(),
    })
}

fn remove(
    record: &SandboxRecord,
    user: Option<&str>,
    request: pb::RemoveRequest,
) -> Result<pb::RemoveResponse, ApiError> {
    let accounts = Accounts::load(&record.sandbox);
    let (files, _) = files_as(&record.sandbox, &accounts, user)?;
    files.remove(&request.path)?;
    Ok(pb::RemoveResponse {})
}

/// Starts a library watch on a directory; the watched root comes back
/// absolute, for naming events relative to it.
fn start_watch(
    record: &SandboxRecord,
    user: Option<&str>,
    path: &str,
    recursive: bool,
) -> Result<(Watch, String), ApiError> {
    let accounts = Accounts::load(&record.sandbox);
    let (files, _) = files_as(&record.sandbox, &accounts, user)?;
    let entry = files.stat(path)?;
    if entry.kind != FileKind::Dir {
        return Err(ApiError::bad_request(format!(
            "{} is not a directory",
            entry.path
        )));
    }
    let watch = files.watch(&entry.path, recursive)?;
    Ok((watch, entry.path))
}

/// envd's events: names relative to the watched directory; a rename is
/// the old name's RENAME and the new name's CREATE.
fn fs_events(root: &str, event: FsEvent) -> Vec<pb::FilesystemEvent> {
    let relative = |path: &str| -> String {
        path.strip_prefix(root)
            .map(|rest| rest.trim_start_matches('/'))
            .filter(|rest| !rest.is_empty())
            .unwrap_or(path)
            .to_string()
    };
    let one = |path: &str, t: pb::EventType| pb::FilesystemEvent {
        name: relative(path),
        r#type: t as i32,
        entry: None,
    };
    match event {
        FsEvent::Create { path, .. } => vec![one(&path, pb::EventType::Create)],
        FsEvent::Modify { path } => vec![one(&path, pb::EventType::Write)],
        FsEvent::Metadata { path } => vec![one(&path, pb::EventType::Chmod)],
        FsEvent::Delete { path, .. } => vec![one(&path, pb::EventType::Remove)],
        FsEvent::Rename { from, to, .. } => {
            let mut out = Vec::new();
            if let Some(from) = from {
                out.push(one(&from, pb::EventType::Rename));
            }
            if let Some(to) = to {
                out.push(one(&to, pb::EventType::Create));
            }
            out
        }
        // Lost events have no name; envd has no event for them either.
        _ => Vec::new(),
    }
}

fn create_watcher(
    record: &SandboxRecord,
    user: Option<&str>,
    request: pb::CreateWatcherRequest,
) -> Result<pb::CreateWatcherResponse, ApiError> {
    if request.include_entry || request.allow_network_mounts {
        return Err(ApiError::not_yet(
            "entry info in watch events and watches on network mounts",
            "envd 0.6.3/0.6.4 features",
        ));
    }
    if record.watchers.map.lock().unwrap().len() >= MAX_WATCHERS {
        return Err(ApiError::new(
            axum::http::StatusCode::TOO_MANY_REQUESTS,
            Code::ResourceExhausted,
            format!("a sandbox holds at most {MAX_WATCHERS} watchers; remove one first"),
        ));
    }
    let (watch, root) = start_watch(record, user, &request.path, request.recursive)?;
    let id = format!(
        "w{}",
        record.watchers.next.fetch_add(1, Ordering::Relaxed) + 1
    );
    record
        .watchers
        .map
        .lock()
        .unwrap()
        .insert(id.clone(), Arc::new(Watcher { watch, root }));
    Ok(pb::CreateWatcherResponse { watcher_id: id })
}

fn watcher(record: &SandboxRecord, id: &str) -> Result<Arc<Watcher>, ApiError> {
    record
        .watchers
        .map
        .lock()
        .unwrap()
        .get(id)
        .cloned()
        .ok_or_else(|| ApiError::not_found(format!("watcher {id:?} not found")))
}

fn get_watcher_events(
    record: &SandboxRecord,
    _user: Option<&str>,
    request: pb::GetWatcherEventsRequest,
) -> Result<pb::GetWatcherEventsResponse, ApiError> {
    let watcher = watcher(record, &request.watcher_id)?;
    let events = watcher
        .watch
        .try_iter()
        .take(MAX_EVENTS_PER_POLL)
        .flat_map(|e| fs_events(&watcher.root, e))
        .collect();
    Ok(pb::GetWatcherEventsResponse { events })
}

fn remove_watcher(
    record: &SandboxRecord,
    _user: Option<&str>,
    request: pb::RemoveWatcherRequest,
) -> Result<pb::RemoveWatcherResponse, ApiError> {
    let removed = record
        .watchers
        .map
        .lock()
        .unwrap()
        .remove(&request.watcher_id);
    // Dropping the last reference stops the watch (joins its thread).
    drop(removed.ok_or_else(|| {
        ApiError::not_found(format!("watcher {:?} not found", request.watcher_id))
    })?);
    Ok(pb::RemoveWatcherResponse {})
}

fn watch_response(event: pb::watch_dir_response::Event) -> pb::WatchDirResponse {
    pb::WatchDirResponse { event: Some(event) }
}

async fn watch_dir(
    record: Arc<SandboxRecord>,
    headers: &HeaderMap,
    bytes: &[u8],
    user: Option<String>,
) -> Response {
    let prepared = async {
        let request: pb::WatchDirRequest = connect::decode_stream_request(headers, bytes)?;
        if request.include_entry || request.allow_network_mounts {
            return Err(ApiError::not_yet(
                "entry info in watch events and watches on network mounts",
                "envd 0.6.3/0.6.4 features",
            ));
        }
        let timeout = connect::timeout(headers)?.filter(|t| !t.is_zero());
        let watch_record = record.clone();
        let (watch, root) = blocking(move || {
            start_watch(
                &watch_record,
                user.as_deref(),
                &request.path,
                request.recursive,
            )
        })
        .await?;
        Ok((watch, root, timeout))
    };
    let (watch, root, timeout) = match prepared.await {
        Ok(v) => v,
        Err(e) => return connect::stream_error(&e),
    };
    let (tx, rx) = mpsc::channel(STREAM_BUFFER);
    // The bridge: the library's blocking receiver → the stream's bounded
    // channel; it ends (dropping the watch) when the client is gone or the
    // watched directory or the sandbox is.
    let spawned = std::thread::Builder::new()
        .name("sandlot-srv-watch".into())
        .spawn(move || loop {
            match watch.recv_timeout(Duration::from_secs(1)) {
                Ok(event) => {
                    for e in fs_events(&root, event) {
                        if tx.blocking_send(e).is_err() {
                            return;
                        }
                    }
                }
                Err(crossbeam_channel::RecvTimeoutError::Timeout) if !tx.is_closed() => {}
                Err(_) => return,
            }
        });
    if let Err(e) = spawned {
        return connect::stream_error(&ApiError::internal(format!("start the watch bridge: {e}")));
    }
    let (response, writer) = connect::server_stream(timeout);
    tokio::spawn(forward_watch(
        writer,
        rx,
        connect::keepalive_interval(headers),
    ));
    response
}

async fn forward_watch(
    writer: StreamWriter,
    mut events: mpsc::Receiver<pb::FilesystemEvent>,
    keepalive: Option<Duration>,
) {
    use pb::watch_dir_response::{Event, KeepAlive, StartEvent};
    if writer
        .send(&watch_response(Event::Start(StartEvent {})))
        .await
        .is_err()
    {
        return;
    }
    let mut ticker =
        keepalive.map(|every| tokio::time::interval_at(tokio::time::Instant::now() + every, every));
    loop {
        let tick = async {
            match ticker.as_mut() {
                Some(t) => {
                    t.tick().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            event = events.recv() => match event {
                Some(e) => {
                    if writer.send(&watch_response(Event::Filesystem(e))).await.is_err() {
                        return;
                    }
                }
                // The directory or the sandbox went away.
                None => {
                    writer.finish(None).await;
                    return;
                }
            },
            _ = tick => {
                if writer.send(&watch_response(Event::Keepalive(KeepAlive {}))).await.is_err() {
                    return;
                }
            }
            _ = writer.deadline() => {
                writer.finish(Some(StreamWriter::deadline_error())).await;
                return;
            }
            _ = writer.closed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permissions_read_as_go_prints_them() {
        assert_eq!(permissions(FileKind::File, 0o644), "-rw-r--r--");
        assert_eq!(permissions(FileKind::Dir, 0o755), "drwxr-xr-x");
        assert_eq!(permissions(FileKind::Symlink, 0o777), "Lrwxrwxrwx");
        assert_eq!(permissions(FileKind::Dir, 0o1777), "dtrwxrwxrwx");
    }

    #[test]
    fn events_are_named_relative_to_the_watched_directory() {
        let events = fs_events(
            "/home/user/w",
            FsEvent::Rename {
                from: Some("/home/user/w/a".into()),
                to: Some("/home/user/w/sub/b".into()),
                is_dir: false,
            },
        );
        let names: Vec<(&str, i32)> = events.iter().map(|e| (e.name.as_str(), e.r#type)).collect();
        assert_eq!(
            names,
            vec![
                ("a", pb::EventType::Rename as i32),
                ("sub/b", pb::EventType::Create as i32)
            ]
        );
    }
}
