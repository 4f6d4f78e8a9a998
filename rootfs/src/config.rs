//! What a template tells the runtime besides its files: the image's own
//! configuration ([`TemplateConfig`], from the OCI config), and the
//! settings an image carries in its [`SETTINGS_LABEL`] label.

use oci_spec::image::ImageConfiguration;

use crate::error::SettingsOrigin;
use crate::settings::{Settings, SETTINGS_LABEL};
use crate::{Error, TemplateConfig};

/// The PATH a sandbox gets when its template does not set one (the same
/// default Docker applies to images without PATH).
pub(crate) const DEFAULT_PATH: &str =
    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The defaults a directory template gets: nothing but a PATH.
pub(crate) fn plain_config() -> TemplateConfig {
    TemplateConfig {
        env: vec![("PATH".into(), DEFAULT_PATH.into())],
        cmd: Vec::new(),
        entrypoint: Vec::new(),
        working_dir: None,
        user: "root".into(),
        shell: "/bin/sh".into(),
    }
}

/// Maps an image config onto a template config. Unset or empty fields get
/// what Docker gives them: PATH defaults, the user is root, no working dir.
pub(crate) fn from_image(image: &ImageConfiguration) -> TemplateConfig {
    let mut config = plain_config();
    let Some(c) = image.config() else {
        return config;
    };
    if let Some(env) = c.env() {
        config.env = env
            .iter()
            .map(|entry| match entry.split_once('=') {
                Some((key, value)) => (key.to_string(), value.to_string()),
                None => (entry.clone(), String::new()),
            })
            .collect();
        if !config.env.iter().any(|(key, _)| key == "PATH") {
            config.env.insert(0, ("PATH".into(), DEFAULT_PATH.into()));
        }
    }
    config.cmd = c.cmd().clone().unwrap_or_default();
    config.entrypoint = c.entrypoint().clone().unwrap_or_default();
    config.working_dir = c.working_dir().clone().filter(|dir| !dir.is_empty());
    if let Some(user) = c.user().as_deref().filter(|user| !user.is_empty()) {
        config.user = user.to_string();
    }
    config
}

/// Settings an image carries in its [`SETTINGS_LABEL`] label.
pub(crate) fn settings_from_image(image: &ImageConfiguration) -> Result<Option<Settings>, Error> {
    let label = image
        .config()
        .as_ref()
        .and_then(|c| c.labels().as_ref())
        .and_then(|labels| labels.get(SETTINGS_LABEL));
    match label {
        Some(json) => Settings::parse(json)
            .map(Some)
            .map_err(|error| Error::InvalidSettings {
                origin: SettingsOrigin::Label,
                error: Box::new(error),
            }),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_config_maps_onto_template_config() {
        let image: ImageConfiguration = serde_json::from_str(
            r#"{"architecture":"amd64","os":"linux",
                "config":{"Env":["LANG=C.UTF-8","EMPTY="],"Cmd":["-c","print(1)"],
                          "Entrypoint":["python3"],"WorkingDir":"/srv","User":"1000:1000",
                          "Labels":{"dev.sandlot.settings":"{\"timeout_secs\":60}"}},
                "rootfs":{"type":"layers","diff_ids":[]}}"#,
        )
        .unwrap();
        let config = from_image(&image);
        assert_eq!(config.env[0], ("PATH".into(), DEFAULT_PATH.into()));
        assert!(config.env.contains(&("EMPTY".into(), String::new())));
        assert_eq!(config.entrypoint, ["python3"]);
        assert_eq!(config.cmd, ["-c", "print(1)"]);
        assert_eq!(config.working_dir.as_deref(), Some("/srv"));
        assert_eq!(config.user, "1000:1000");
        assert_eq!(
            settings_from_image(&image).unwrap().unwrap().timeout_secs,
            Some(60)
        );

        let bare: ImageConfiguration = serde_json::from_str(
            r#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#,
        )
        .unwrap();
        assert_eq!(from_image(&bare), plain_config());
        assert_eq!(settings_from_image(&bare).unwrap(), None);
    }
}
