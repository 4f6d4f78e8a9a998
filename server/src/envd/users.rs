//! Who an envd request acts as. The SDK names the user in an
//! `Authorization: Basic base64("<user>:")` header (Connect calls) or a
//! `username` query parameter (`/files`); without one, envd's default
//! user applies: `user` (uid 1000, home /home/user) when the sandbox has
//! that account, as the reference's templates do, else the template's own
//! user. Names are looked up in the sandbox's own /etc/passwd and
//! /etc/group, read through the files API.

use std::collections::HashMap;

use axum::http::{header, HeaderMap};
use base64::Engine;
use sandlot::Sandbox;

use crate::error::ApiError;

/// envd's default user.
pub const DEFAULT_USER: &str = "user";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
}

/// The sandbox's accounts and group names.
#[derive(Debug, Default)]
pub struct Accounts {
    users: Vec<Account>,
    groups: HashMap<u32, String>,
}

impl Accounts {
    /// Reads /etc/passwd and /etc/group of the sandbox (blocking; small).
    pub fn load(sandbox: &Sandbox) -> Accounts {
        let read = |path: &str| {
            sandbox
                .files()
                .max_file_size(1 << 20)
                .read_to_string(path)
                .unwrap_or_default()
        };
        Accounts::parse(&read("/etc/passwd"), &read("/etc/group"))
    }

    pub fn parse(passwd: &str, group: &str) -> Accounts {
        let users = passwd
            .lines()
            .filter_map(|line| {
                let f: Vec<&str> = line.split(':').collect();
                (f.len() >= 7).then_some(())?;
                Some(Account {
                    name: f[0].to_string(),
                    uid: f[2].parse().ok()?,
                    gid: f[3].parse().ok()?,
                    home: f[5].to_string(),
                })
            })
            .collect();
        let groups = group
            .lines()
            .filter_map(|line| {
                let f: Vec<&str> = line.split(':').collect();
                (f.len() >= 3).then_some(())?;
                Some((f[2].parse().ok()?, f[0].to_string()))
            })
            .collect();
        Accounts { users, groups }
    }

    pub fn by_name(&self, name: &str) -> Option<&Account> {
        self.users.iter().find(|u| u.name == name)
    }

    pub fn user_name(&self, uid: u32) -> String {
        self.users
            .iter()
            .find(|u| u.uid == uid)
            .map_or_else(|| uid.to_string(), |u| u.name.clone())
    }

    pub fn group_name(&self, gid: u32) -> String {
        self.groups
            .get(&gid)
            .cloned()
            .unwrap_or_else(|| gid.to_string())
    }

    /// The account a request acts as: the one it names, or the default.
    /// `None` means the template's own user (a template without `user`).
    pub fn resolve(&self, requested: Option<&str>) -> Result<Option<Account>, ApiError> {
        match requested {
            Some(name) => self.by_name(name).cloned().map(Some).ok_or_else(|| {
                ApiError::bad_request(format!("user {name:?} does not exist in the sandbox"))
            }),
            None => Ok(self.by_name(DEFAULT_USER).cloned()),
        }
    }
}

/// The user named by `Authorization: Basic base64("<user>:")`, if any.
pub fn from_basic_auth(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let bad = || ApiError::bad_request("Authorization is not Basic base64(\"<user>:\")");
    let value = value.to_str().map_err(|_| bad())?;
    let encoded = value.strip_prefix("Basic ").ok_or_else(bad)?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| bad())?;
    let text = String::from_utf8(decoded).map_err(|_| bad())?;
    let name = text.split(':').next().unwrap_or("");
    Ok((!name.is_empty()).then(|| name.to_string()))
}

/// `path` made absolute: relative paths start at the account's home.
pub fn absolute(path: &str, account: Option<&Account>, fallback_home: &str) -> String {
    if path.starts_with('/') {
        return path.to_string();
    }
    let home = account.map_or(fallback_home, |a| a.home.as_str());
    let path = path.trim_start_matches("./");
    if path.is_empty() || path == "." {
        home.to_string()
    } else {
        format!("{}/{path}", home.trim_end_matches('/'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str =
        "root:x:0:0:root:/root:/bin/bash\nuser:x:1000:1000:user:/home/user:/bin/bash\nbroken\n";
    const GROUP: &str = "root:x:0:\nuser:x:1000:\n";

    #[test]
    fn default_user_and_named_users() {
        let accounts = Accounts::parse(PASSWD, GROUP);
        assert_eq!(accounts.resolve(None).unwrap().unwrap().home, "/home/user");
        assert_eq!(accounts.resolve(Some("root")).unwrap().unwrap().uid, 0);
        assert!(accounts.resolve(Some("nobody")).is_err());
        assert_eq!(accounts.user_name(1000), "user");
        assert_eq!(accounts.group_name(7), "7");
        let without_user = Accounts::parse("root:x:0:0:root:/root:/bin/sh\n", "");
        assert_eq!(without_user.resolve(None).unwrap(), None);
    }

    #[test]
    fn basic_auth_names_the_user() {
        let mut headers = HeaderMap::new();
        assert_eq!(from_basic_auth(&headers).unwrap(), None);
        // base64("root:")
        headers.insert(header::AUTHORIZATION, "Basic cm9vdDo=".parse().unwrap());
        assert_eq!(from_basic_auth(&headers).unwrap().as_deref(), Some("root"));
        headers.insert(header::AUTHORIZATION, "Bearer x".parse().unwrap());
        assert!(from_basic_auth(&headers).is_err());
    }

    #[test]
    fn relative_paths_start_at_home() {
        let user = Account {
            name: "user".into(),
            uid: 1000,
            gid: 1000,
            home: "/home/user".into(),
        };
        assert_eq!(absolute("a/b", Some(&user), "/"), "/home/user/a/b");
        assert_eq!(absolute("/etc", Some(&user), "/"), "/etc");
        assert_eq!(absolute("", Some(&user), "/"), "/home/user");
        assert_eq!(absolute("x", None, "/root"), "/root/x");
    }
}
