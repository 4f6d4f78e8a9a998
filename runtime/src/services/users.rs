//! Who a command runs as: a name looked up in the sandbox's own
//! /etc/passwd (read host-side through the sandbox root, so a user added
//! inside with useradd is found), or a numeric `uid[:gid]`.

use std::io::Read;
use std::os::fd::AsFd;

use crate::engine::error::{Error, Result};
use crate::engine::sandbox::SandboxShared;
use crate::sys::resolve::open_in_root;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
    pub shell: Option<String>,
}

fn root_user() -> User {
    User {
        name: "root".into(),
        uid: 0,
        gid: 0,
        home: "/root".into(),
        shell: None,
    }
}

/// Parses passwd lines into users, skipping malformed ones.
fn parse_passwd(text: &str) -> impl Iterator<Item = User> + '_ {
    text.lines().filter_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        if fields.len() < 7 {
            return None;
        }
        Some(User {
            name: fields[0].to_string(),
            uid: fields[2].parse().ok()?,
            gid: fields[3].parse().ok()?,
            home: fields[5].to_string(),
            shell: Some(fields[6].to_string()).filter(|s| !s.is_empty()),
        })
    })
}

fn read_passwd(sandbox: &SandboxShared) -> Option<String> {
    let live = sandbox.live()?;
    let fd = open_in_root(live.root.as_fd(), c"/etc/passwd", libc::O_RDONLY, 0).ok()?;
    let mut text = String::new();
    std::fs::File::from(fd)
        .take(1 << 20)
        .read_to_string(&mut text)
        .ok()?;
    Some(text)
}

/// Resolves `requested` (or the template's default user).
pub(crate) fn resolve(sandbox: &SandboxShared, requested: Option<&str>) -> Result<User> {
    let wanted = requested.unwrap_or(&sandbox.template.config.user);
    let passwd = read_passwd(sandbox);
    let users = || parse_passwd(passwd.as_deref().unwrap_or(""));
    let user = if let Some(numeric) = parse_numeric(wanted)? {
        let (uid, gid) = numeric;
        let known = users().find(|u| u.uid == uid);
        User {
            name: known
                .as_ref()
                .map_or_else(|| uid.to_string(), |u| u.name.clone()),
            uid,
            gid: gid.or(known.as_ref().map(|u| u.gid)).unwrap_or(uid),
            home: known
                .as_ref()
                .map_or_else(|| "/".into(), |u| u.home.clone()),
            shell: known.and_then(|u| u.shell),
        }
    } else if let Some(user) = users().find(|u| u.name == wanted) {
        user
    } else if wanted == "root" {
        root_user()
    } else {
        return Err(Error::invalid(
            "user",
            format!("no user {wanted:?} in the sandbox's /etc/passwd"),
        ));
    };
    let count = sandbox.ctx.range.count;
    if user.uid >= count || user.gid >= count {
        return Err(Error::invalid(
            "user",
            format!(
                "uid {} / gid {} is outside the sandbox's {count} mapped ids",
                user.uid, user.gid
            ),
        ));
    }
    Ok(user)
}

/// `"1000"` or `"1000:100"`; `None` for a name.
fn parse_numeric(text: &str) -> Result<Option<(u32, Option<u32>)>> {
    let (uid, gid) = match text.split_once(':') {
        Some((uid, gid)) => (uid, Some(gid)),
        None => (text, None),
    };
    if uid.is_empty() || !uid.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(None);
    }
    let bad = || Error::invalid("user", format!("{text:?} is not a valid uid[:gid]"));
    let uid = uid.parse().map_err(|_| bad())?;
    let gid = gid.map(|g| g.parse().map_err(|_| bad())).transpose()?;
    Ok(Some((uid, gid)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwd_lines_parse_and_malformed_ones_are_skipped() {
        let text = "root:x:0:0:root:/root:/bin/bash\nbroken line\nuser:x:1000:1001::/home/user:\n";
        let users: Vec<User> = parse_passwd(text).collect();
        assert_eq!(users.len(), 2);
        assert_eq!(users[1].uid, 1000);
        assert_eq!(users[1].gid, 1001);
        assert_eq!(users[1].home, "/home/user");
        assert_eq!(users[1].shell, None);
    }

    #[test]
    fn numeric_users_parse() {
        assert_eq!(parse_numeric("1000").unwrap(), Some((1000, None)));
        assert_eq!(parse_numeric("1000:5").unwrap(), Some((1000, Some(5))));
        assert_eq!(parse_numeric("user").unwrap(), None);
        assert!(parse_numeric("1000:x").is_err());
        assert!(parse_numeric("99999999999").is_err());
    }
}
