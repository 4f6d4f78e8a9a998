//! Which cgroup version serves each controller: the ONE place that decides.
//!
//! The decision is made from what the kernel says, never from the mere
//! existence of a directory:
//! - `<proc_root>/mountinfo`: every `cgroup` (v1) mount names its
//!   controllers in its super options (`rw,cpu,cpuacct`), every `cgroup2`
//!   mount is the unified hierarchy;
//! - the cgroup2 mount's own `cgroup.controllers`: which controllers are
//!   bound to v2 (a controller is bound to at most one hierarchy);
//! - `<proc_root>/cgroup`: this process's cgroup in each hierarchy.
//!
//! Rules, per role ([`Controller`]):
//! - memory, pids, cpu (quota), cpuset: the v1 hierarchy that has the
//!   controller, else v2 when its `cgroup.controllers` lists it;
//! - cpu usage (cpuacct): v1 `cpuacct` when mounted, else v2 (`cpu.stat` is
//!   a core file of every v2 cgroup);
//! - freezer: v2 whenever a cgroup2 hierarchy is mounted — `cgroup.freeze`
//!   is a core file (5.2+), so it also works through the controller-less
//!   unified hierarchy of a hybrid host — else the v1 `freezer`.
//!   [`Layout::apply_v2_probe`] falls back to v1 when a created v2 cgroup
//!   turns out to have no `cgroup.freeze`.
//!
//! Named v1 hierarchies (`name=systemd`) carry no controller and are never
//! touched; they are not part of the layout.

use std::fmt;
use std::path::{Path, PathBuf};

use super::error::CgroupError;

/// A cgroup version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    V1,
    V2,
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Version::V1 => "v1",
            Version::V2 => "v2",
        })
    }
}

/// What sandlot uses cgroups for; each role is served by one hierarchy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Controller {
    /// Memory limit and usage.
    Memory,
    /// Process count limit.
    Pids,
    /// CPU quota.
    Cpu,
    /// CPU usage accounting (v1 `cpuacct`, v2 `cpu.stat`).
    CpuAcct,
    /// Freezing (v1 `freezer`, v2 `cgroup.freeze`).
    Freezer,
    /// CPU pinning, only for sandboxes that ask for it.
    Cpuset,
}

impl Controller {
    /// Every role, in a fixed order.
    pub const ALL: [Controller; 6] = [
        Controller::Memory,
        Controller::Pids,
        Controller::Cpu,
        Controller::CpuAcct,
        Controller::Freezer,
        Controller::Cpuset,
    ];

    /// The kernel's v1 controller name.
    pub fn v1_name(self) -> &'static str {
        match self {
            Controller::Memory => "memory",
            Controller::Pids => "pids",
            Controller::Cpu => "cpu",
            Controller::CpuAcct => "cpuacct",
            Controller::Freezer => "freezer",
            Controller::Cpuset => "cpuset",
        }
    }

    /// The v2 controller that must be enabled in `cgroup.subtree_control`,
    /// or `None` when v2 serves the role with core files.
    pub fn v2_name(self) -> Option<&'static str> {
        match self {
            Controller::Memory => Some("memory"),
            Controller::Pids => Some("pids"),
            Controller::Cpu => Some("cpu"),
            Controller::Cpuset => Some("cpuset"),
            Controller::CpuAcct | Controller::Freezer => None,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Controller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.v1_name())
    }
}

/// One mounted cgroup hierarchy and where this process sits in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchy {
    pub version: Version,
    /// Where it is mounted, e.g. `/sys/fs/cgroup/memory`.
    pub mount_point: PathBuf,
    /// Which cgroup of the hierarchy the mount shows at `mount_point`
    /// (usually `/`).
    pub mount_root: PathBuf,
    /// v1: the controllers bound to this hierarchy (`["cpu", "cpuacct"]`);
    /// v2: the controllers listed in the mount's `cgroup.controllers`.
    pub controllers: Vec<String>,
    /// This process's cgroup, relative to the hierarchy root
    /// (`/process_api/5362…`), as `/proc/self/cgroup` shows it.
    pub own_path: PathBuf,
}

impl Hierarchy {
    /// The directory of the cgroup at `path` (relative to the hierarchy
    /// root), or `None` when the mount does not show it.
    pub fn dir_of(&self, path: &Path) -> Option<PathBuf> {
        let abs = Path::new("/").join(path);
        let rel = abs.strip_prefix(&self.mount_root).ok()?;
        if rel
            .components()
            .any(|c| c == std::path::Component::ParentDir)
        {
            return None;
        }
        Some(self.mount_point.join(rel))
    }

    /// The directory of this process's own cgroup.
    pub fn own_dir(&self) -> Option<PathBuf> {
        self.dir_of(&self.own_path)
    }

    /// Does this hierarchy have the controller (v1: bound; v2: offered)?
    pub fn has(&self, name: &str) -> bool {
        self.controllers.iter().any(|c| c == name)
    }
}

/// The overall shape of the machine's cgroups, for people.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only cgroup v2 (controllers-wise).
    V2,
    /// v1 controllers plus a cgroup2 hierarchy.
    Hybrid,
    /// Only cgroup v1.
    V1,
}

/// The machine's cgroup layout and which hierarchy serves each role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    hierarchies: Vec<Hierarchy>,
    serving: [Option<usize>; 6],
    v2: Option<usize>,
    v2_kill: bool,
    notes: Vec<String>,
}

impl Layout {
    /// Detects the layout from `<proc_root>/mountinfo`, `<proc_root>/cgroup`
    /// and the cgroup2 mount's `cgroup.controllers`.
    pub fn detect(proc_root: &Path) -> Result<Layout, CgroupError> {
        let read = |name: &str| {
            let path = proc_root.join(name);
            std::fs::read_to_string(&path).map_err(|e| CgroupError::Read {
                errno: super::error::errno_of(&e),
                path,
            })
        };
        let mountinfo = read("mountinfo")?;
        let cgroup = read("cgroup")?;
        Layout::from_parts(&mountinfo, &cgroup, |mount_point| {
            std::fs::read_to_string(mount_point.join("cgroup.controllers")).ok()
        })
    }

    /// Detection from the contents of mountinfo and /proc/self/cgroup;
    /// `v2_controllers` reads `cgroup.controllers` at a cgroup2 mount point.
    pub fn from_parts(
        mountinfo: &str,
        proc_cgroup: &str,
        v2_controllers: impl Fn(&Path) -> Option<String>,
    ) -> Result<Layout, CgroupError> {
        let mounts: Vec<Mount> = mountinfo.lines().filter_map(parse_mountinfo_line).collect();
        let mut hierarchies = Vec::new();
        let mut notes = Vec::new();
        let mut v2 = None;
        for line in proc_cgroup.lines().filter(|l| !l.is_empty()) {
            let mut parts = line.splitn(3, ':');
            let (Some(id), Some(list), Some(path)) = (parts.next(), parts.next(), parts.next())
            else {
                return Err(CgroupError::Detect(format!(
                    "bad line {line:?} in /proc/self/cgroup"
                )));
            };
            let own_path = PathBuf::from(path);
            if id == "0" && list.is_empty() {
                // The unified hierarchy.
                let candidates = mounts.iter().filter(|m| m.fs_type == "cgroup2");
                let Some(m) = pick_mount(candidates, &own_path) else {
                    if mounts.iter().any(|m| m.fs_type == "cgroup2") {
                        notes.push(format!(
                            "cgroup2: own cgroup {} is not visible under any cgroup2 mount",
                            own_path.display()
                        ));
                    }
                    continue;
                };
                let controllers = v2_controllers(&m.mount_point)
                    .unwrap_or_default()
                    .split_whitespace()
                    .map(String::from)
                    .collect();
                v2 = Some(hierarchies.len());
                hierarchies.push(Hierarchy {
                    version: Version::V2,
                    mount_point: m.mount_point.clone(),
                    mount_root: m.root.clone(),
                    controllers,
                    own_path,
                });
                continue;
            }
            let names: Vec<&str> = list.split(',').filter(|s| !s.is_empty()).collect();
            if names.is_empty() || names.iter().all(|n| n.starts_with("name=")) {
                continue; // a named hierarchy (name=systemd): never ours to touch
            }
            let candidates = mounts.iter().filter(|m| {
                m.fs_type == "cgroup" && names.iter().all(|n| m.super_opts.iter().any(|o| o == n))
            });
            let Some(m) = pick_mount(candidates, &own_path) else {
                if mounts
                    .iter()
                    .any(|m| m.fs_type == "cgroup" && m.super_opts.iter().any(|o| o == names[0]))
                {
                    notes.push(format!(
                        "{list}: own cgroup {} is not visible under its mount",
                        own_path.display()
                    ));
                }
                continue;
            };
            hierarchies.push(Hierarchy {
                version: Version::V1,
                mount_point: m.mount_point.clone(),
                mount_root: m.root.clone(),
                controllers: names
                    .iter()
                    .filter(|n| !n.starts_with("name="))
                    .map(|n| n.to_string())
                    .collect(),
                own_path,
            });
        }
        if hierarchies.is_empty() {
            return Err(CgroupError::Detect(
                "no cgroup hierarchy is mounted where this process can see its own cgroup \
                 (mountinfo has no usable cgroup or cgroup2 entry)"
                    .into(),
            ));
        }

        let v1_with = |name: &str| {
            hierarchies
                .iter()
                .position(|h| h.version == Version::V1 && h.has(name))
        };
        let mut serving = [None; 6];
        for c in Controller::ALL {
            serving[c.index()] = match c {
                Controller::Memory | Controller::Pids | Controller::Cpu | Controller::Cpuset => {
                    v1_with(c.v1_name()).or_else(|| {
                        let name = c.v2_name().expect("these roles have v2 controllers");
                        v2.filter(|&i| hierarchies[i].has(name))
                    })
                }
                Controller::CpuAcct => v1_with("cpuacct").or(v2),
                Controller::Freezer => v2.or_else(|| v1_with("freezer")),
            };
        }
        Ok(Layout {
            hierarchies,
            serving,
            v2,
            v2_kill: v2.is_some(),
            notes,
        })
    }

    /// What a created v2 cgroup showed: without `cgroup.freeze` the freezer
    /// role moves to v1 (when mounted); without `cgroup.kill` kill is off.
    pub fn apply_v2_probe(&mut self, has_freeze: bool, has_kill: bool) {
        self.v2_kill = self.v2.is_some() && has_kill;
        if !has_freeze && self.version_of(Controller::Freezer) == Some(Version::V2) {
            let v1 = self
                .hierarchies
                .iter()
                .position(|h| h.version == Version::V1 && h.has("freezer"));
            self.serving[Controller::Freezer.index()] = v1;
            self.notes
                .push("cgroup2 has no cgroup.freeze (kernel before 5.2)".into());
        }
    }

    /// The overall shape.
    pub fn kind(&self) -> Kind {
        let v1 = self.hierarchies.iter().any(|h| h.version == Version::V1);
        match (v1, self.v2.is_some()) {
            (true, true) => Kind::Hybrid,
            (true, false) => Kind::V1,
            _ => Kind::V2,
        }
    }

    /// Which version serves a role, `None` when nothing does.
    pub fn version_of(&self, c: Controller) -> Option<Version> {
        self.hierarchy_of(c).map(|h| h.version)
    }

    /// The hierarchy that serves a role.
    pub fn hierarchy_of(&self, c: Controller) -> Option<&Hierarchy> {
        self.serving[c.index()].map(|i| &self.hierarchies[i])
    }

    /// Index (into [`Layout::hierarchies`]) of the hierarchy serving a role.
    pub(crate) fn index_of(&self, c: Controller) -> Option<usize> {
        self.serving[c.index()]
    }

    /// The cgroup2 hierarchy, if one is mounted.
    pub fn v2(&self) -> Option<&Hierarchy> {
        self.v2.map(|i| &self.hierarchies[i])
    }

    pub(crate) fn v2_index(&self) -> Option<usize> {
        self.v2
    }

    /// Is `cgroup.kill` available (a cgroup2 hierarchy on 5.14+)?
    pub fn has_kill(&self) -> bool {
        self.v2_kill
    }

    /// Every hierarchy that has a controller (named ones excluded) and the
    /// cgroup2 one.
    pub fn hierarchies(&self) -> &[Hierarchy] {
        &self.hierarchies
    }

    /// Things detection noticed but could not use (for `sandlot doctor`).
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    pub(crate) fn hierarchies_mut(&mut self) -> &mut [Hierarchy] {
        &mut self.hierarchies
    }
}

impl fmt::Display for Layout {
    /// One line per role: `memory: v1 /sys/fs/cgroup/memory/process_api/…`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind() {
            Kind::V2 => "cgroup v2",
            Kind::Hybrid => "hybrid (v1 controllers + cgroup2)",
            Kind::V1 => "cgroup v1",
        };
        writeln!(f, "layout: {kind}")?;
        for c in Controller::ALL {
            match self.hierarchy_of(c) {
                Some(h) => writeln!(f, "{c}: {} {}", h.version, h.mount_point.display())?,
                None => writeln!(f, "{c}: unavailable")?,
            }
        }
        writeln!(
            f,
            "kill: {}",
            if self.v2_kill {
                "cgroup.kill"
            } else {
                "unavailable"
            }
        )?;
        for n in &self.notes {
            writeln!(f, "note: {n}")?;
        }
        Ok(())
    }
}

/// The parts of one mountinfo line that matter here.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Mount {
    root: PathBuf,
    mount_point: PathBuf,
    fs_type: String,
    super_opts: Vec<String>,
}

/// Parses a `/proc/<pid>/mountinfo` line (see proc(5)):
/// `id parent maj:min root mount-point options [optional…] - fstype source super-options`.
fn parse_mountinfo_line(line: &str) -> Option<Mount> {
    let (left, right) = line.split_once(" - ")?;
    let mut l = left.split(' ');
    let (_id, _parent, _dev) = (l.next()?, l.next()?, l.next()?);
    let root = unescape(l.next()?);
    let mount_point = unescape(l.next()?);
    let mut r = right.split(' ');
    let fs_type = r.next()?.to_string();
    let _source = r.next()?;
    let super_opts = r
        .next()
        .unwrap_or("")
        .split(',')
        .map(String::from)
        .collect();
    Some(Mount {
        root: PathBuf::from(root),
        mount_point: PathBuf::from(mount_point),
        fs_type,
        super_opts,
    })
}

/// Undoes mountinfo's octal escapes (`\040` for a space, `\134` for `\`).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 4 <= b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Of the mounts of one hierarchy, the first that shows `own_path`
/// (bind mounts of subtrees show only part of a hierarchy).
fn pick_mount<'a>(mounts: impl Iterator<Item = &'a Mount>, own_path: &Path) -> Option<&'a Mount> {
    let abs = Path::new("/").join(own_path);
    let mut best: Option<&Mount> = None;
    for m in mounts {
        let shorter = match best {
            None => true,
            Some(b) => m.root.as_os_str().len() < b.root.as_os_str().len(),
        };
        if abs.starts_with(&m.root) && shorter {
            best = Some(m);
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Detection from literal file contents; `controllers` maps a cgroup2
    /// mount point to its cgroup.controllers.
    fn detect(mountinfo: &str, cgroup: &str, controllers: &[(&str, &str)]) -> Layout {
        let c: HashMap<PathBuf, String> = controllers
            .iter()
            .map(|(k, v)| (PathBuf::from(k), v.to_string()))
            .collect();
        Layout::from_parts(mountinfo, cgroup, |p| c.get(p).cloned()).unwrap()
    }

    fn served(l: &Layout, c: Controller) -> Option<(Version, String)> {
        l.hierarchy_of(c)
            .map(|h| (h.version, h.mount_point.display().to_string()))
    }

    /// This machine's layout, verbatim.
    const HYBRID_MOUNTINFO: &str = "\
22 1 253:1 / / rw,relatime - ext4 /dev/vda rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    const HYBRID_CGROUP: &str = "\
9:name=systemd:/
8:pids:/
7:blkio:/
6:freezer:/
5:devices:/
4:memory:/process_api/5362387ff2884cbc46255f142e524b55
3:cpuset:/
2:cpuacct:/
1:cpu:/
0::/
";

    #[test]
    fn hybrid_like_this_machine() {
        let l = detect(
            HYBRID_MOUNTINFO,
            HYBRID_CGROUP,
            &[("/sys/fs/cgroup/unified", "hugetlb\n")],
        );
        assert_eq!(l.kind(), Kind::Hybrid);
        let v1 = |m: &str| Some((Version::V1, format!("/sys/fs/cgroup/{m}")));
        assert_eq!(served(&l, Controller::Memory), v1("memory"));
        assert_eq!(served(&l, Controller::Pids), v1("pids"));
        assert_eq!(served(&l, Controller::Cpu), v1("cpu"));
        assert_eq!(served(&l, Controller::CpuAcct), v1("cpuacct"));
        assert_eq!(served(&l, Controller::Cpuset), v1("cpuset"));
        // freeze (and kill) go through the controller-less unified hierarchy
        assert_eq!(
            served(&l, Controller::Freezer),
            Some((Version::V2, "/sys/fs/cgroup/unified".into()))
        );
        assert!(l.has_kill());
        let mem = l.hierarchy_of(Controller::Memory).unwrap();
        assert_eq!(
            mem.own_dir().unwrap(),
            Path::new("/sys/fs/cgroup/memory/process_api/5362387ff2884cbc46255f142e524b55")
        );
        assert_eq!(
            l.v2().unwrap().own_dir().unwrap(),
            Path::new("/sys/fs/cgroup/unified")
        );
        assert_eq!(l.v2().unwrap().controllers, vec!["hugetlb".to_string()]);
        // name=systemd is not part of the layout: it is never touched
        assert!(l
            .hierarchies()
            .iter()
            .all(|h| !h.mount_point.ends_with("systemd")));
        // blkio and devices are listed but serve no role
        assert_eq!(l.hierarchies().len(), 9);
        let text = l.to_string();
        assert!(text.contains("memory: v1 /sys/fs/cgroup/memory"), "{text}");
        assert!(
            text.contains("freezer: v2 /sys/fs/cgroup/unified"),
            "{text}"
        );
    }

    #[test]
    fn hybrid_without_freeze_falls_back_to_v1_freezer() {
        let mut l = detect(HYBRID_MOUNTINFO, HYBRID_CGROUP, &[]);
        l.apply_v2_probe(false, false);
        assert_eq!(
            served(&l, Controller::Freezer),
            Some((Version::V1, "/sys/fs/cgroup/freezer".into()))
        );
        assert!(!l.has_kill());
    }

    #[test]
    fn pure_v2_under_systemd() {
        let l = detect(
            "25 20 0:22 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n\
             26 20 0:6 / /sys/kernel/debug rw - debugfs debugfs rw\n",
            "0::/user.slice/user-1000.slice/session-2.scope\n",
            &[("/sys/fs/cgroup", "cpuset cpu io memory hugetlb pids rdma misc\n")],
        );
        assert_eq!(l.kind(), Kind::V2);
        for c in Controller::ALL {
            assert_eq!(
                served(&l, c),
                Some((Version::V2, "/sys/fs/cgroup".into())),
                "{c}"
            );
        }
        assert_eq!(
            l.v2().unwrap().own_dir().unwrap(),
            Path::new("/sys/fs/cgroup/user.slice/user-1000.slice/session-2.scope")
        );
        assert_eq!(l.hierarchies().len(), 1);
    }

    #[test]
    fn pure_v2_without_memory_controller() {
        let l = detect(
            "25 20 0:22 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n",
            "0::/\n",
            &[("/sys/fs/cgroup", "cpu pids\n")],
        );
        assert_eq!(served(&l, Controller::Memory), None);
        assert_eq!(l.version_of(Controller::Cpu), Some(Version::V2));
        assert_eq!(l.to_string().lines().nth(1), Some("memory: unavailable"));
    }

    #[test]
    fn pure_v1_without_unified() {
        let l = detect(
            "30 25 0:26 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n\
             31 25 0:27 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids\n\
             32 25 0:28 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n\
             33 25 0:29 / /sys/fs/cgroup/freezer rw - cgroup cgroup rw,freezer\n\
             34 25 0:30 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd\n",
            "5:name=systemd:/user.slice\n4:freezer:/\n3:cpu,cpuacct:/user.slice\n2:pids:/user.slice\n1:memory:/user.slice\n",
            &[],
        );
        assert_eq!(l.kind(), Kind::V1);
        assert!(l.v2().is_none());
        assert!(!l.has_kill());
        assert_eq!(
            served(&l, Controller::Freezer),
            Some((Version::V1, "/sys/fs/cgroup/freezer".into()))
        );
        assert_eq!(served(&l, Controller::Cpuset), None);
        assert_eq!(
            l.hierarchy_of(Controller::Memory)
                .unwrap()
                .own_dir()
                .unwrap(),
            Path::new("/sys/fs/cgroup/memory/user.slice")
        );
    }

    #[test]
    fn comounted_cpu_cpuacct_share_one_hierarchy() {
        // systemd's hybrid: cpu,cpuacct comounted, net_cls,net_prio too,
        // unified with no controllers.
        let l = detect(
            "26 25 0:24 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw,nsdelegate\n\
             27 25 0:25 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd\n\
             30 25 0:28 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:12 - cgroup cgroup rw,cpu,cpuacct\n\
             31 25 0:29 / /sys/fs/cgroup/net_cls,net_prio rw - cgroup cgroup rw,net_cls,net_prio\n\
             32 25 0:30 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n\
             33 25 0:31 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids\n\
             34 25 0:32 / /sys/fs/cgroup/freezer rw - cgroup cgroup rw,freezer\n",
            "7:pids:/user.slice/user-1000.slice/session-1.scope\n6:memory:/user.slice/user-1000.slice/session-1.scope\n\
             5:freezer:/\n4:net_cls,net_prio:/\n3:cpu,cpuacct:/user.slice\n1:name=systemd:/user.slice/user-1000.slice/session-1.scope\n\
             0::/user.slice/user-1000.slice/session-1.scope\n",
            &[("/sys/fs/cgroup/unified", "")],
        );
        assert_eq!(l.kind(), Kind::Hybrid);
        let cpu = l.index_of(Controller::Cpu).unwrap();
        assert_eq!(l.index_of(Controller::CpuAcct), Some(cpu));
        assert_eq!(
            served(&l, Controller::Cpu),
            Some((Version::V1, "/sys/fs/cgroup/cpu,cpuacct".into()))
        );
        assert_eq!(
            l.hierarchy_of(Controller::Cpu).unwrap().controllers,
            vec!["cpu".to_string(), "cpuacct".to_string()]
        );
        assert_eq!(l.version_of(Controller::Freezer), Some(Version::V2));
        assert_eq!(
            l.v2().unwrap().own_dir().unwrap(),
            Path::new("/sys/fs/cgroup/unified/user.slice/user-1000.slice/session-1.scope")
        );
    }

    #[test]
    fn comounted_with_escaped_mount_point_and_subtree_mount() {
        // A container that sees a bind mount of its own subtree, with a
        // space in the mount point.
        let l = detect(
            "40 30 0:29 /docker/abc /sys/fs/cgroup/cpu\\040acct rw - cgroup cgroup rw,cpu,cpuacct\n\
             41 30 0:30 /docker/abc /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n\
             42 30 0:31 /docker/abc /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids\n",
            "3:cpu,cpuacct:/docker/abc\n2:memory:/docker/abc/inner\n1:pids:/elsewhere\n",
            &[],
        );
        assert_eq!(
            l.hierarchy_of(Controller::Cpu).unwrap().own_dir().unwrap(),
            Path::new("/sys/fs/cgroup/cpu acct")
        );
        assert_eq!(
            l.hierarchy_of(Controller::Memory)
                .unwrap()
                .own_dir()
                .unwrap(),
            Path::new("/sys/fs/cgroup/memory/inner")
        );
        // pids: own cgroup not visible under the mount -> unusable, noted
        assert_eq!(served(&l, Controller::Pids), None);
        assert_eq!(l.notes().len(), 1, "{:?}", l.notes());
    }

    #[test]
    fn nothing_mounted_is_an_error() {
        let e = Layout::from_parts("22 1 253:1 / / rw - ext4 /dev/vda rw\n", "0::/\n", |_| None)
            .unwrap_err();
        assert!(e.to_string().starts_with("detect cgroup layout: "), "{e}");
    }

    #[test]
    fn detect_reads_fixture_files() {
        let dir = std::env::temp_dir().join(format!("cgroups-layout-test-{}", std::process::id()));
        let cg = dir.join("cgroup2");
        std::fs::create_dir_all(&cg).unwrap();
        std::fs::write(cg.join("cgroup.controllers"), "cpu memory pids\n").unwrap();
        std::fs::write(
            dir.join("mountinfo"),
            format!("25 20 0:22 / {} rw - cgroup2 cgroup2 rw\n", cg.display()),
        )
        .unwrap();
        std::fs::write(dir.join("cgroup"), "0::/a/b\n").unwrap();
        let l = Layout::detect(&dir);
        std::fs::remove_dir_all(&dir).unwrap();
        let l = l.unwrap();
        assert_eq!(l.version_of(Controller::Memory), Some(Version::V2));
        assert_eq!(l.v2().unwrap().own_dir().unwrap(), cg.join("a/b"));
        let e = Layout::detect(Path::new("/nonexistent-sandlot")).unwrap_err();
        assert_eq!(e.to_string(), "read /nonexistent-sandlot/mountinfo: ENOENT");
    }

    #[test]
    fn unescape_octal() {
        assert_eq!(unescape("a\\040b\\134c"), "a b\\c");
        assert_eq!(unescape("trail\\04"), "trail\\04");
    }
}
