//! The running kernel's version, for the checks that depend on it
//! (overlayfs on idmapped layers needs 5.19; sandlot is tested on 6.1+).

/// The kernel release string (`uname -r`), empty if uname fails.
pub(crate) fn release() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// `major.minor` of a kernel release string (`6.18.44-foo` → (6, 18)).
pub(crate) fn parse(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn parses_release_strings() {
        assert_eq!(parse("6.18.44-fc-v669"), Some((6, 18)));
        assert_eq!(parse("5.19.0"), Some((5, 19)));
        assert_eq!(parse("6.1"), Some((6, 1)));
        assert_eq!(parse("linux"), None);
    }
}
