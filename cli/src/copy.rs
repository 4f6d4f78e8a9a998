//! `sandlot run --copy-in HOST:SANDBOX --copy-out SANDBOX:HOST`: files in
//! before the command and out after it, as tar streams through the files
//! API (modes, symlinks, empty directories and mtimes kept).
//!
//! Naming follows `cp -r`: the copy is called like the destination, unless
//! the destination is an existing directory or ends in `/` — then the copy
//! goes inside it under its own name.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use sandlot::{Error, FileKind, Sandbox};

#[derive(Debug, Clone)]
pub struct CopyIn {
    pub host: PathBuf,
    pub sandbox: String,
}

#[derive(Debug, Clone)]
pub struct CopyOut {
    pub sandbox: String,
    pub host: PathBuf,
}

/// `HOST:SANDBOX`, split at the last `:` (sandbox paths rarely hold one).
pub fn parse_copy_in(text: &str) -> Result<CopyIn, String> {
    let (host, sandbox) = text
        .rsplit_once(':')
        .filter(|(h, s)| !h.is_empty() && !s.is_empty())
        .ok_or_else(|| format!("{text:?} is not HOST:SANDBOX"))?;
    if !sandbox.starts_with('/') {
        return Err(format!("{text:?}: the sandbox path must be absolute"));
    }
    Ok(CopyIn {
        host: host.into(),
        sandbox: sandbox.into(),
    })
}

/// `SANDBOX:HOST`, split at the first `:`.
pub fn parse_copy_out(text: &str) -> Result<CopyOut, String> {
    let (sandbox, host) = text
        .split_once(':')
        .filter(|(s, h)| !s.is_empty() && !h.is_empty())
        .ok_or_else(|| format!("{text:?} is not SANDBOX:HOST"))?;
    if !sandbox.starts_with('/') {
        return Err(format!("{text:?}: the sandbox path must be absolute"));
    }
    Ok(CopyOut {
        sandbox: sandbox.into(),
        host: host.into(),
    })
}

fn io_error(context: String) -> impl FnOnce(io::Error) -> Error {
    move |source| Error::Io { context, source }
}

fn base_name(path: &str) -> Option<&str> {
    path.trim_end_matches('/')
        .rsplit('/')
        .next()
        .filter(|n| !n.is_empty() && *n != "." && *n != "..")
}

/// Copies a host file or directory into the sandbox.
pub fn copy_in(sandbox: &Sandbox, copy: &CopyIn) -> Result<(), Error> {
    let files = sandbox.files();
    let host = &copy.host;
    let meta =
        fs::symlink_metadata(host).map_err(io_error(format!("copy-in {}", host.display())))?;
    let host_name =
        host.file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| Error::InvalidOptions {
                option: "copy-in",
                reason: format!("{} has no usable file name", host.display()),
            })?;
    let into_dir = copy.sandbox.ends_with('/')
        || files
            .stat(&copy.sandbox)
            .is_ok_and(|info| info.kind == FileKind::Dir);
    let (dest, name) = if into_dir {
        (copy.sandbox.clone(), host_name.to_string())
    } else {
        let name = base_name(&copy.sandbox).ok_or_else(|| Error::InvalidOptions {
            option: "copy-in",
            reason: format!("{} names no file", copy.sandbox),
        })?;
        let parent = &copy.sandbox[..copy.sandbox.len() - name.len()];
        let parent = if parent.is_empty() { "/" } else { parent };
        (parent.to_string(), name.to_string())
    };

    // The archive is written by a thread into a pipe the import reads:
    // nothing is held in memory whatever the size.
    let (reader, writer) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|errno| io_error("create a pipe".into())(errno.into()))?;
    let (reader, writer) = (fs::File::from(reader), fs::File::from(writer));
    let source = host.clone();
    let is_dir = meta.is_dir();
    let writer_thread = std::thread::spawn(move || -> io::Result<()> {
        let mut builder = tar::Builder::new(writer);
        builder.follow_symlinks(false);
        if is_dir {
            builder.append_dir_all(&name, &source)?;
        } else {
            builder.append_path_with_name(&source, &name)?;
        }
        builder.finish()
    });
    let imported = files.import_tar(&dest, reader);
    let written = writer_thread.join().expect("the archive writer panicked");
    imported?;
    written.map_err(io_error(format!("archive {}", host.display())))?;
    Ok(())
}

/// Copies a sandbox file or directory out to the host.
pub fn copy_out(sandbox: &Sandbox, copy: &CopyOut) -> Result<(), Error> {
    let host = &copy.host;
    let target_is_dir = host.to_string_lossy().ends_with('/') || host.is_dir();
    let export = sandbox.files().export_tar(&copy.sandbox)?;
    let Some(name) = base_name(&copy.sandbox) else {
        // The whole root: its members go straight into the host directory.
        fs::create_dir_all(host).map_err(io_error(format!("create {}", host.display())))?;
        return unpack(export, host);
    };
    if target_is_dir {
        fs::create_dir_all(host).map_err(io_error(format!("create {}", host.display())))?;
        return unpack(export, host);
    }
    // Unpack beside the destination, then give the copy its name.
    let parent = match host.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let staging = parent.join(format!(".sandlot-copy-{}", std::process::id()));
    fs::create_dir_all(&staging).map_err(io_error(format!("create {}", staging.display())))?;
    let result = unpack(export, &staging).and_then(|()| {
        fs::rename(staging.join(name), host).map_err(io_error(format!(
            "move the copy of {} to {}",
            copy.sandbox,
            host.display()
        )))
    });
    let _ = fs::remove_dir_all(&staging);
    result
}

/// Unpacks an exported tree below `dir`. Device nodes and FIFOs are
/// skipped: the host must not get device nodes from a sandbox.
fn unpack(export: impl io::Read, dir: &Path) -> Result<(), Error> {
    let mut archive = tar::Archive::new(export);
    archive.set_preserve_permissions(true);
    archive.set_preserve_mtime(true);
    archive.set_overwrite(true);
    let context = || format!("unpack into {}", dir.display());
    for entry in archive.entries().map_err(io_error(context()))? {
        let mut entry = entry.map_err(io_error(context()))?;
        let kind = entry.header().entry_type();
        if kind.is_character_special() || kind.is_block_special() || kind.is_fifo() {
            eprintln!(
                "sandlot: copy-out skips {} (device nodes and FIFOs are not copied)",
                entry
                    .path()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            );
            continue;
        }
        entry.unpack_in(dir).map_err(io_error(context()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_flags_split_where_the_sandbox_path_is() {
        let c = parse_copy_in("./data:v2:/work/in").unwrap();
        assert_eq!(
            (c.host, c.sandbox.as_str()),
            (PathBuf::from("./data:v2"), "/work/in")
        );
        let c = parse_copy_out("/work/out:./res:ults").unwrap();
        assert_eq!(
            (c.sandbox.as_str(), c.host),
            ("/work/out", PathBuf::from("./res:ults"))
        );
        assert!(parse_copy_in("data:relative").is_err());
        assert!(parse_copy_in("no-colon").is_err());
        assert!(parse_copy_out(":/x").is_err());
        assert_eq!(base_name("/work/out/"), Some("out"));
        assert_eq!(base_name("/"), None);
    }
}
