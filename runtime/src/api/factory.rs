//! What creating a sandbox needs besides the runtime context
//! ([`Factory`]: the spawner, the cgroups, the templates, the compiled
//! policies), shared by the create sequence and adoption.

use std::fs;
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Arc;
use std::time::Duration;

use sandlot_rootfs::{Store, Template};

use crate::engine::error::{Error, Result};
use crate::kernel::caps::CapPlan;
use crate::kernel::cgroups::Cgroups;
use crate::kernel::seccomp::{CompiledSeccomp, SeccompCache};
use crate::kernel::spawn::Spawner;

/// What creating (and adopting) a sandbox needs besides the runtime
/// context: the cgroups, the templates, and what only creating needs.
pub(crate) struct Factory {
    /// `None` on an attach-only runtime, which never creates.
    pub makers: Option<Makers>,
    pub cgroups: Cgroups,
    pub store: Store,
    pub max_sandboxes: Option<usize>,
    pub memory_overcommit: Option<f64>,
    pub ready_timeout: Duration,
}

/// What only creating a sandbox needs: the spawner thread, the base
/// template, the capability plan and the compiled seccomp policies.
pub(crate) struct Makers {
    pub spawner: Spawner,
    /// Built (or checked) once at start; every other template is read from
    /// the store at create time, so an import is seen at once.
    pub base: Arc<Template>,
    pub caps: CapPlan,
    pub seccomp: SeccompCache,
    pub default_seccomp: CompiledSeccomp,
}

impl Factory {
    /// What creating needs; an attach-only runtime has none of it.
    pub fn makers(&self) -> Result<&Makers> {
        self.makers.as_ref().ok_or_else(|| Error::Unsupported {
            feature: "create",
            reason: "this runtime was built attach_only: it takes over sandboxes of its state \
                     dir but makes none"
                .into(),
        })
    }

    pub fn template(&self, name: &str) -> Result<Arc<Template>> {
        if name == sandlot_rootfs::BASE_NAME {
            return Ok(self.makers()?.base.clone());
        }
        match self.store.get(name) {
            Ok(template) => Ok(Arc::new(template)),
            Err(sandlot_rootfs::Error::NotFound(_))
            | Err(sandlot_rootfs::Error::InvalidName { .. }) => {
                Err(Error::TemplateNotFound(name.to_string()))
            }
            Err(source) => Err(Error::Template {
                name: name.to_string(),
                source,
            }),
        }
    }
}

/// The sandbox's root as its init sees it, for host-side file access.
pub(crate) fn open_root(pid: i32) -> Result<OwnedFd> {
    let path = format!("/proc/{pid}/root");
    let root = fs::File::options()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
        .open(&path)
        .map_err(|e| Error::io(format!("open {path}"), e))?;
    Ok(root.into())
}
