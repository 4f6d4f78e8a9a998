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

/// What creating a sandbox needs besides the runtime context: the
/// spawner, the cgroup parent, the templates, the compiled policies.
pub(crate) struct Factory {
    pub spawner: Spawner,
    pub cgroups: Cgroups,
    pub store: Store,
    /// Built (or checked) once at start; every other template is read from
    /// the store at create time, so an import is seen at once.
    pub base: Arc<Template>,
    pub caps: CapPlan,
    pub seccomp: SeccompCache,
    pub default_seccomp: CompiledSeccomp,
    pub max_sandboxes: Option<usize>,
    pub memory_overcommit: Option<f64>,
    pub ready_timeout: Duration,
}

impl Factory {
    pub fn template(&self, name: &str) -> Result<Arc<Template>> {
        if name == sandlot_rootfs::BASE_NAME {
            return Ok(self.base.clone());
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
