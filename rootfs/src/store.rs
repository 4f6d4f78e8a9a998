//! The named template registry.
//!
//! ```text
//! <data_dir>/store.lock                     serialises commits and removals
//! <data_dir>/templates/base/                the built-in base (see base.rs)
//! <data_dir>/templates/<name>/template.json what the template is (kind,
//!                                           layers, config, size, created)
//! <data_dir>/templates/<name>/sandlot.json  its Settings
//! <data_dir>/layers/…                       the shared layer cache (layers.rs)
//! ```
//!
//! `template.json` is the template: written to a temporary file and renamed
//! over the old one, so a re-import replaces a template atomically and a
//! reader sees the old one or the new one. Unpacking happens outside the
//! lock (it is slow, and the layer cache is safe for concurrent writers);
//! the lock covers only "check the layers are there, write the record" and
//! "delete the record, delete layers nothing references", so a removal
//! never deletes a layer an import is about to reference.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::error::SettingsOrigin;
use crate::layers::Layers;
use crate::oci::{self, Source};
use crate::{base, config, dir, sys, Error, Settings, Template, TemplateConfig, TemplateKind};
use crate::{BASE_NAME, MAX_SETTINGS_JSON};

const RECORD: &str = "template.json";
const SETTINGS: &str = "sandlot.json";
const RECORD_VERSION: u32 = 1;

/// One line of [`Store::list`].
#[derive(Debug, Clone, PartialEq)]
pub struct TemplateSummary {
    pub name: String,
    pub kind: TemplateKind,
    /// Number of lower layers.
    pub layers: usize,
    /// Bytes of regular-file content in its layers (layers shared with
    /// other templates count for each), measured at import.
    pub size: u64,
    pub created: SystemTime,
}

/// `template.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    version: u32,
    name: String,
    kind: TemplateKind,
    /// Layer blob digests (`sha256:<hex>`), uppermost first like
    /// [`Template::layers`]; empty for directory templates.
    layers: Vec<String>,
    config: TemplateConfig,
    size: u64,
    /// Seconds since the epoch.
    created: u64,
}

/// The template registry under a data dir.
pub struct Store {
    data_dir: PathBuf,
    layers: Layers,
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Template names: `[a-z0-9][a-z0-9._-]{0,62}`, so a name is always a
/// plain directory name and fits in a DNS label.
pub fn validate_name(name: &str) -> Result<(), Error> {
    let invalid = |reason| {
        Err(Error::InvalidName {
            name: name.to_string(),
            reason,
        })
    };
    let bytes = name.as_bytes();
    match bytes.first() {
        None => return invalid("empty"),
        Some(b) if !(b.is_ascii_lowercase() || b.is_ascii_digit()) => {
            return invalid("must start with a lowercase letter or a digit")
        }
        _ => {}
    }
    if bytes.len() > 63 {
        return invalid("longer than 63 characters");
    }
    if !bytes
        .iter()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(b))
    {
        return invalid("only a-z, 0-9, '.', '_' and '-' are allowed");
    }
    Ok(())
}

impl Store {
    /// Opens (creating) the registry under `data_dir`.
    pub fn open(data_dir: impl AsRef<Path>) -> Result<Store, Error> {
        let data_dir = data_dir.as_ref().to_path_buf();
        let templates = data_dir.join("templates");
        fs::create_dir_all(&templates).map_err(Error::io("create", &templates))?;
        let layers = Layers::open(&data_dir)?;
        Ok(Store { data_dir, layers })
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    fn template_dir(&self, name: &str) -> PathBuf {
        self.data_dir.join("templates").join(name)
    }

    /// Imports an OCI image layout directory, or a `.tar` of one, as
    /// template `name` (replacing a template of that name). Its settings
    /// are the image's [`crate::SETTINGS_LABEL`] label, if it has one.
    pub fn import_oci(&self, name: &str, path: impl AsRef<Path>) -> Result<Template, Error> {
        self.import_oci_inner(name, path.as_ref(), None)
    }

    /// [`Store::import_oci`] with the template's settings given.
    pub fn import_oci_with(
        &self,
        name: &str,
        path: impl AsRef<Path>,
        settings: Settings,
    ) -> Result<Template, Error> {
        self.import_oci_inner(name, path.as_ref(), Some(settings))
    }

    fn import_oci_inner(
        &self,
        name: &str,
        path: &Path,
        settings: Option<Settings>,
    ) -> Result<Template, Error> {
        check_importable(name)?;
        if let Some(settings) = &settings {
            settings.validate()?;
        }
        let source = Source::open(path)?;
        let image = oci::read_image(&source)?;
        let settings = match settings {
            Some(settings) => settings,
            None => config::settings_from_image(&image.config)?.unwrap_or_default(),
        };
        let mut created = Vec::new();
        let result = self.import_image(name, path, &source, &image, &settings, &mut created);
        if result.is_err() && !created.is_empty() {
            // A failed import leaves the store as it found it: layers this
            // import unpacked go again unless a template uses them by now.
            if let Ok(_lock) = self.lock() {
                let _ = self.drop_unreferenced(&created);
            }
        }
        result
    }

    fn import_image(
        &self,
        name: &str,
        path: &Path,
        source: &Source,
        image: &oci::Image,
        settings: &Settings,
        created: &mut Vec<String>,
    ) -> Result<Template, Error> {
        let mut ensure = |layer: &oci::Layer| -> Result<u64, Error> {
            let (meta, new) = self.layers.ensure(source, layer)?;
            if new {
                created.push(layer.blob.digest.clone());
            }
            Ok(meta.unpacked_size)
        };
        let mut size = 0;
        for layer in &image.layers {
            size += ensure(layer)?;
        }
        let record = Record {
            version: RECORD_VERSION,
            name: name.to_string(),
            kind: TemplateKind::Oci {
                manifest: image.manifest_digest.clone(),
                source: fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf()),
            },
            layers: image
                .layers
                .iter()
                .rev()
                .map(|l| l.blob.digest.clone())
                .collect(),
            config: config::from_image(&image.config),
            size,
            created: now_secs(),
        };
        let _lock = self.lock()?;
        // A removal may have deleted a shared layer between our unpack and
        // the lock; bring it back before the record points at it.
        for layer in &image.layers {
            if self.layers.meta(layer.blob.hex())?.is_none() {
                ensure(layer)?;
            }
        }
        self.commit(record, settings)
    }

    /// Registers an existing root filesystem directory, used in place, as
    /// template `name` (replacing a template of that name).
    pub fn import_dir(&self, name: &str, path: impl AsRef<Path>) -> Result<Template, Error> {
        self.import_dir_with(name, path, Settings::default())
    }

    /// [`Store::import_dir`] with the template's settings given.
    pub fn import_dir_with(
        &self,
        name: &str,
        path: impl AsRef<Path>,
        settings: Settings,
    ) -> Result<Template, Error> {
        check_importable(name)?;
        settings.validate()?;
        let root = dir::validate(path.as_ref())?;
        let record = Record {
            version: RECORD_VERSION,
            name: name.to_string(),
            size: dir::content_size(&root),
            kind: TemplateKind::Dir(root),
            layers: Vec::new(),
            config: config::plain_config(),
            created: now_secs(),
        };
        let _lock = self.lock()?;
        self.commit(record, &settings)
    }

    /// Writes a template's settings, then its record (the commit point),
    /// and drops layers the template it replaced no longer needs. Called
    /// with the lock held.
    fn commit(&self, record: Record, settings: &Settings) -> Result<Template, Error> {
        let dir = self.template_dir(&record.name);
        fs::create_dir_all(&dir).map_err(Error::io("create", &dir))?;
        let old = self.read_record(&record.name).ok();
        write_json(&dir.join(SETTINGS), settings)?;
        write_json(&dir.join(RECORD), &record)?;
        if let Some(old) = old {
            self.drop_unreferenced(&old.layers)?;
        }
        self.template(record, settings.clone())
    }

    /// The template called `name`; `base` is always the built-in base.
    pub fn get(&self, name: &str) -> Result<Template, Error> {
        validate_name(name)?;
        if name == BASE_NAME {
            let mut template = base(&self.data_dir)?;
            template.settings = self.read_settings(name)?;
            return Ok(template);
        }
        let record = self.read_record(name)?;
        let settings = self.read_settings(name)?;
        self.template(record, settings)
    }

    fn template(&self, record: Record, settings: Settings) -> Result<Template, Error> {
        let layers = match &record.kind {
            TemplateKind::Dir(root) => {
                if !root.is_dir() {
                    return Err(Error::NotARootfs {
                        path: root.clone(),
                        reason: format!("template {:?}: no longer a directory", record.name),
                    });
                }
                vec![root.clone()]
            }
            _ => record
                .layers
                .iter()
                .map(|digest| {
                    let hex = digest.trim_start_matches("sha256:");
                    match self.layers.meta(hex)? {
                        Some(_) => Ok(self.layers.root(hex)),
                        None => Err(Error::Layer {
                            layer: digest.clone(),
                            problem: format!(
                                "missing from the layer cache (template {:?}); import it again",
                                record.name
                            ),
                        }),
                    }
                })
                .collect::<Result<_, Error>>()?,
        };
        Ok(Template {
            name: record.name,
            kind: record.kind,
            layers,
            binds: Vec::new(),
            config: record.config,
            settings,
        })
    }

    /// Every template, `base` first, then by name.
    pub fn list(&self) -> Result<Vec<TemplateSummary>, Error> {
        let base = base(&self.data_dir)?;
        let base_created = fs::metadata(&base.layers[0])
            .and_then(|m| m.modified())
            .unwrap_or(UNIX_EPOCH);
        let mut summaries = vec![TemplateSummary {
            name: BASE_NAME.into(),
            kind: TemplateKind::HostBind,
            layers: base.layers.len(),
            size: dir::content_size(&base.layers[0]),
            created: base_created,
        }];
        let mut records = self.records()?;
        records.sort_by(|a, b| a.name.cmp(&b.name));
        summaries.extend(records.into_iter().map(|r| TemplateSummary {
            layers: match r.kind {
                TemplateKind::Dir(_) => 1,
                _ => r.layers.len(),
            },
            name: r.name,
            kind: r.kind,
            size: r.size,
            created: UNIX_EPOCH + Duration::from_secs(r.created),
        }));
        Ok(summaries)
    }

    /// Removes template `name`, and the layers no other template uses.
    ///
    /// Sandboxes still running from it must be gone first: their overlay
    /// mounts read from these layer dirs.
    pub fn remove(&self, name: &str) -> Result<(), Error> {
        validate_name(name)?;
        if name == BASE_NAME {
            return Err(Error::InvalidName {
                name: name.into(),
                reason: "the built-in base template cannot be removed",
            });
        }
        let _lock = self.lock()?;
        let record = self.read_record(name)?;
        let dir = self.template_dir(name);
        // Without its record the template is gone for get() and list().
        let path = dir.join(RECORD);
        fs::remove_file(&path).map_err(Error::io("remove", &path))?;
        fs::remove_dir_all(&dir).map_err(Error::io("remove", &dir))?;
        self.drop_unreferenced(&record.layers)
    }

    /// Removes every cached layer no template references (left behind by a
    /// crash between an unpack and its commit, say). Returns their digests.
    pub fn prune(&self) -> Result<Vec<String>, Error> {
        let _lock = self.lock()?;
        let cached: Vec<String> = self
            .layers
            .list()?
            .into_iter()
            .map(|hex| format!("sha256:{hex}"))
            .collect();
        let referenced = self.referenced()?;
        let mut removed = Vec::new();
        for digest in cached {
            if !referenced.contains(&digest) {
                self.layers.remove(digest.trim_start_matches("sha256:"))?;
                removed.push(digest);
            }
        }
        Ok(removed)
    }

    /// The settings of template `name` (defaults when none were set).
    pub fn settings(&self, name: &str) -> Result<Settings, Error> {
        self.get(name).map(|t| t.settings)
    }

    /// Replaces the settings of template `name` (`base` included).
    pub fn set_settings(&self, name: &str, settings: Settings) -> Result<Template, Error> {
        validate_name(name)?;
        settings.validate()?;
        let _lock = self.lock()?;
        let dir = self.template_dir(name);
        if name == BASE_NAME {
            fs::create_dir_all(&dir).map_err(Error::io("create", &dir))?;
        } else {
            self.read_record(name)?;
        }
        write_json(&dir.join(SETTINGS), &settings)?;
        drop(_lock);
        self.get(name)
    }

    /// Deletes those of `candidates` no remaining template references.
    /// Called with the lock held.
    fn drop_unreferenced(&self, candidates: &[String]) -> Result<(), Error> {
        let referenced = self.referenced()?;
        for digest in candidates {
            if !referenced.contains(digest) {
                self.layers.remove(digest.trim_start_matches("sha256:"))?;
            }
        }
        Ok(())
    }

    /// Layer digests the current templates use, from their records.
    fn referenced(&self) -> Result<BTreeSet<String>, Error> {
        Ok(self.records()?.into_iter().flat_map(|r| r.layers).collect())
    }

    fn records(&self) -> Result<Vec<Record>, Error> {
        let dir = self.data_dir.join("templates");
        let mut records = Vec::new();
        for entry in fs::read_dir(&dir).map_err(Error::io("list", &dir))? {
            let entry = entry.map_err(Error::io("list", &dir))?;
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            if name == BASE_NAME || validate_name(&name).is_err() {
                continue;
            }
            match self.read_record(&name) {
                Ok(record) => records.push(record),
                // A directory whose record is gone or not yet written.
                Err(Error::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(records)
    }

    fn read_record(&self, name: &str) -> Result<Record, Error> {
        let path = self.template_dir(name).join(RECORD);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Error::NotFound(name.to_string()))
            }
            Err(e) => return Err(Error::io("read", path)(e)),
        };
        serde_json::from_slice(&bytes).map_err(|source| Error::Json {
            what: "template record".into(),
            path,
            source,
        })
    }

    fn read_settings(&self, name: &str) -> Result<Settings, Error> {
        let path = self.template_dir(name).join(SETTINGS);
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Settings::default()),
            Err(e) => return Err(Error::io("read", path)(e)),
        };
        // One byte past the limit is enough to refuse a file that is too
        // large without reading all of it.
        let mut json = String::new();
        file.take(MAX_SETTINGS_JSON as u64 + 1)
            .read_to_string(&mut json)
            .map_err(Error::io("read", &path))?;
        Settings::from_json(&json).map_err(|e| match e {
            Error::InvalidSettings { error, .. } => Error::InvalidSettings {
                origin: SettingsOrigin::File(path),
                error,
            },
            other => other,
        })
    }

    /// An exclusive lock on `<data_dir>/store.lock` until the file drops.
    fn lock(&self) -> Result<File, Error> {
        let path = self.data_dir.join("store.lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(Error::io("open", &path))?;
        sys::flock_exclusive(file.as_fd()).map_err(Error::io("lock", &path))?;
        Ok(file)
    }
}

fn check_importable(name: &str) -> Result<(), Error> {
    validate_name(name)?;
    if name == BASE_NAME {
        return Err(Error::InvalidName {
            name: name.into(),
            reason: "base is the built-in host template",
        });
    }
    Ok(())
}

/// Writes JSON to a temporary file beside `path`, flushes it to disk and
/// renames it over `path`: readers see the old content or the new.
fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), Error> {
    let tmp = path.with_extension(format!(
        "tmp-{}-{}",
        std::process::id(),
        TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let json = serde_json::to_vec_pretty(value).expect("template metadata serializes");
    let result = File::create(&tmp)
        .and_then(|mut file| {
            file.write_all(&json)?;
            file.write_all(b"\n")?;
            file.sync_all()
        })
        .map_err(Error::io("write", &tmp))
        .and_then(|()| fs::rename(&tmp, path).map_err(Error::io("rename into", path)));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_validated() {
        for good in [
            "python",
            "py3.11",
            "a",
            "0day",
            "my_template-2",
            &"a".repeat(63),
        ] {
            validate_name(good).unwrap();
        }
        for bad in [
            "",
            "Python",
            ".hidden",
            "-x",
            "_x",
            "a/b",
            "..",
            "a b",
            "naïve",
            &"a".repeat(64),
        ] {
            assert!(
                matches!(validate_name(bad), Err(Error::InvalidName { .. })),
                "{bad:?} was accepted"
            );
        }
    }
}
