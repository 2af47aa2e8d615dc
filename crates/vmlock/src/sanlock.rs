//! The `sanlock` driver: disk-paxos leases on shared storage, held by the
//! sanlock daemon for each VM process, as libvirt's `sanlock.so` does.
//!
//! ```text
//! load      read qemu-sanlock.conf; with auto_disk_leases: host_id required,
//!           lockspace __LIBVIRT__DISKS__ in DISK_LEASE_DIR created (align, zero,
//!           write_lockspace) and joined (add_lockspace as host_id)
//! new       inquire(pid): a pid the daemon knows is "registered"
//! add       read-only: nothing. disk: with auto leases, a lease DIR/<md5(path)>
//!           (created and initialised if missing); without, remember r/w disks.
//!           lease: LOCKSPACE:KEY:PATH:OFFSET
//! acquire   [no leases + r/w disks + require_lease_for_disks -> error 67]
//!           pid == own pid: register (the VM's own connection) ... acquire on it
//!           ... restrict; the descriptor goes to the VM without close-on-exec
//!           another pid: acquire for it only if the daemon knows it, else nothing
//! release   inquire(pid) -> state; release(pid, leases)
//! inquire   inquire(pid) -> state ("LS:NAME:PATH:OFFSET:LVER ...")
//! ```
//!
//! The leases live as long as the registered connection: when the VM exits,
//! the daemon releases them. If the host loses its lockspace lease (storage
//! unreachable for the I/O timeout), the daemon kills the VM.
//!
//! Where libvirt 9.0's plugin is wrong, this driver differs (see
//! docs/compatibility.md): a migration state given to acquire is used, not
//! ignored; release releases the leases it added, not a count taken from the
//! daemon; a failure to set up the automatic lockspace at load is reported at
//! acquire (and set-up is tried again) instead of being swallowed.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::{Arc, Mutex};

use md5::{Digest, Md5};
use vmlock_conf::SanlockConfig;
use vmlock_sys::sanlock::{self as sl, Sanlock, SanlockError};

use crate::driver::{LockDriver, LockManager};
use crate::error::{
    LockError, Result, VIR_ERR_CONFIG_UNSUPPORTED, VIR_ERR_INTERNAL_ERROR, VIR_ERR_RESOURCE_BUSY,
};
use crate::types::{AcquireFlags, Domain, Resource};

/// The lockspace of automatic disk leases.
pub const AUTO_DISK_LOCKSPACE: &str = "__LIBVIRT__DISKS__";

/// `VIR_ERR_SYSTEM_ERROR`.
const VIR_ERR_SYSTEM_ERROR: i32 = 38;

/// libvirt's error for a failed sanlock call: sanlock's own codes by name
/// (with `code`), anything else as a system error with the errno text.
fn sanlock_error(code: i32, what: &str, e: &SanlockError) -> LockError {
    if e.is_sanlock_code() {
        let prefix = match code {
            VIR_ERR_RESOURCE_BUSY => "resource busy",
            _ => "internal error",
        };
        LockError::Local {
            code,
            message: format!("{prefix}: {what}: {}", e.message),
        }
    } else {
        LockError::Local {
            code: VIR_ERR_SYSTEM_ERROR,
            message: format!("{what}: {}", e.message),
        }
    }
}

fn system_error(what: String, e: &std::io::Error) -> LockError {
    let errno = e.raw_os_error().unwrap_or(libc::EIO);
    LockError::Local {
        code: VIR_ERR_SYSTEM_ERROR,
        message: format!("{what}: {}", vmlock_sys::strerror(errno)),
    }
}

/// A user or group as libvirt's `virGetUserID` reads it: `+N` is the number N,
/// otherwise a name, otherwise a plain number.
fn resolve_id(text: &str, lookup: fn(&str) -> Option<u32>, kind: &str) -> Result<u32> {
    let parsed = match text.strip_prefix('+') {
        Some(num) => num.parse().ok(),
        None => lookup(text).or_else(|| text.parse().ok()),
    };
    parsed.ok_or_else(|| LockError::internal(&format!("Failed to parse {kind} '{text}'")))
}

/// The automatic lease name of a disk: the MD5 of its path, in hex.
pub fn auto_lease_name(disk_path: &str) -> String {
    let digest = Md5::digest(disk_path.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Debug)]
struct Inner {
    config: SanlockConfig,
    user: Option<u32>,
    group: Option<u32>,
    lib: &'static Sanlock,
    /// Whether the automatic lockspace is joined (only with auto leases).
    lockspace_ready: Mutex<bool>,
}

/// The sanlock driver.
#[derive(Debug, Clone)]
pub struct SanlockDriver {
    inner: Arc<Inner>,
}

impl SanlockDriver {
    /// `drvInit`: reads `config_path` (a missing file gives libvirt's
    /// defaults), loads `libsanlock_client.so.1` and, with automatic disk
    /// leases, sets up their lockspace. A lockspace that cannot be set up yet
    /// (daemon not running) is logged and tried again at the next acquire.
    pub fn load(config_path: Option<&Path>) -> Result<SanlockDriver> {
        let config = match config_path {
            Some(p) => {
                SanlockConfig::load_optional(p)
                    .map_err(LockError::Config)?
                    .0
            }
            None => SanlockConfig::default(),
        };
        Self::new(config)
    }

    /// [`SanlockDriver::load`] with a config already read.
    pub fn new(config: SanlockConfig) -> Result<SanlockDriver> {
        let user = config
            .user
            .as_deref()
            .map(|u| resolve_id(u, vmlock_sys::user::user_id, "user"))
            .transpose()?;
        let group = config
            .group
            .as_deref()
            .map(|g| resolve_id(g, vmlock_sys::user::group_id, "group"))
            .transpose()?;
        if config.auto_disk_leases && config.host_id == 0 {
            return Err(LockError::internal(
                "Automatic disk lease mode enabled, but no host ID is set",
            ));
        }
        let lib = sl::library().map_err(|e| {
            LockError::internal(&format!("sanlock client library unavailable: {e}"))
        })?;
        let driver = SanlockDriver {
            inner: Arc::new(Inner {
                config,
                user,
                group,
                lib,
                lockspace_ready: Mutex::new(false),
            }),
        };
        if driver.inner.config.auto_disk_leases
            && let Err(e) = driver.ensure_lockspace()
        {
            tracing::warn!("sanlock lockspace not set up yet, will retry at acquire: {e}");
        }
        Ok(driver)
    }

    /// The config in use.
    pub fn config(&self) -> &SanlockConfig {
        &self.inner.config
    }

    /// The automatic lockspace, as this host joins it.
    pub fn auto_lockspace(&self) -> sl::Lockspace {
        sl::Lockspace {
            name: AUTO_DISK_LOCKSPACE.to_owned(),
            host_id: u64::from(self.inner.config.host_id),
            flags: 0,
            disk: sl::Disk {
                path: format!("{}/{AUTO_DISK_LOCKSPACE}", self.inner.config.disk_lease_dir),
                offset: 0,
            },
        }
    }

    fn chown_needed(&self) -> bool {
        self.inner.user.is_some() || self.inner.group.is_some()
    }

    /// libvirt's error for a failed chown to sanlock's user and group (-1: unchanged).
    fn chown_error(&self, path: &str, e: &std::io::Error) -> LockError {
        let (user, group) = (self.inner.user, self.inner.group);
        system_error(
            format!(
                "cannot chown '{path}' to ({}, {})",
                user.map_or(-1, i64::from),
                group.map_or(-1, i64::from)
            ),
            e,
        )
    }

    /// Creates a lease area file (`O_EXCL`, 0600 or 0660 with a group),
    /// hands it to sanlock's user, zeroes one aligned area and lets `init`
    /// write the lease; removes the file again if any step fails. Callers
    /// check first that the file is missing; one made meanwhile by someone
    /// else is left alone.
    fn create_area(
        &self,
        path: &str,
        kind: &str,
        group_perms: bool,
        init: impl FnOnce() -> std::result::Result<(), SanlockError>,
    ) -> Result<()> {
        let mode = if group_perms && self.inner.group.is_some() {
            0o660
        } else {
            0o600
        };
        let file = match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                tracing::debug!("someone else just created {kind} {path}");
                return Ok(());
            }
            Err(e) => return Err(system_error(format!("Unable to create {kind} {path}"), &e)),
        };
        let result = self.fill_area(file, path, kind).and_then(|()| {
            init().map_err(|e| {
                sanlock_error(
                    VIR_ERR_INTERNAL_ERROR,
                    &format!("Unable to initialize {kind} {path}"),
                    &e,
                )
            })
        });
        if result.is_err() {
            let _ = std::fs::remove_file(path);
        }
        result
    }

    fn fill_area(&self, mut file: File, path: &str, kind: &str) -> Result<()> {
        if self.chown_needed() {
            std::os::unix::fs::fchown(&file, self.inner.user, self.inner.group)
                .map_err(|e| self.chown_error(path, &e))?;
        }
        let align = self
            .inner
            .lib
            .align(&sl::Disk {
                path: path.to_owned(),
                offset: 0,
            })
            .map_err(|e| {
                sanlock_error(
                    VIR_ERR_INTERNAL_ERROR,
                    &format!("Unable to query sector size {path}"),
                    &e,
                )
            })?;
        let zeros = vec![0u8; 1 << 20];
        let mut left = align;
        while left > 0 {
            let n = left.min(zeros.len() as u64) as usize;
            file.write_all(&zeros[..n])
                .map_err(|e| system_error(format!("Unable to allocate {kind} {path}"), &e))?;
            left -= n as u64;
        }
        file.sync_all()
            .map_err(|e| system_error(format!("Unable to save {kind} {path}"), &e))
    }

    /// Makes sure the automatic lockspace exists on disk and is joined.
    fn ensure_lockspace(&self) -> Result<()> {
        let mut ready = self
            .inner
            .lockspace_ready
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if *ready {
            return Ok(());
        }
        let ls = self.auto_lockspace();
        let path = ls.disk.path.clone();
        match std::fs::metadata(&path) {
            Err(_) => {
                let dir = Path::new(&self.inner.config.disk_lease_dir);
                if !dir.is_dir() {
                    return Err(LockError::internal(&format!(
                        "Unable to create lockspace {path}: parent directory does not exist or is not a directory"
                    )));
                }
                let init = sl::Lockspace {
                    host_id: 0,
                    ..ls.clone()
                };
                let io_timeout = self.inner.config.io_timeout;
                self.create_area(&path, "lockspace", true, || {
                    self.inner.lib.write_lockspace(&init, 0, 0, io_timeout)
                })?;
            }
            Ok(m) if m.is_file() => self.fix_ownership(&path, &m)?,
            Ok(_) => {}
        }
        let mut retries = 10;
        loop {
            match self
                .inner
                .lib
                .add_lockspace(&ls, 0, self.inner.config.io_timeout)
            {
                Ok(()) => break,
                Err(e) if e.errno() == Some(libc::EEXIST) => break,
                Err(e) if e.errno() == Some(libc::EINPROGRESS) && retries > 1 => {
                    retries -= 1;
                    let _ = self.inner.lib.inq_lockspace(&ls, sl::INQ_WAIT);
                }
                Err(e) => {
                    return Err(sanlock_error(
                        VIR_ERR_INTERNAL_ERROR,
                        &format!("Unable to add lockspace {path}"),
                        &e,
                    ));
                }
            }
        }
        *ready = true;
        Ok(())
    }

    fn fix_ownership(&self, path: &str, m: &std::fs::Metadata) -> Result<()> {
        use std::os::unix::fs::MetadataExt;
        let (user, group) = (self.inner.user, self.inner.group);
        if user.is_some_and(|u| u != m.uid()) || group.is_some_and(|g| g != m.gid()) {
            std::os::unix::fs::chown(path, user, group).map_err(|e| self.chown_error(path, &e))?;
        }
        if group.is_some() && m.mode() & 0o060 != 0o060 {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
                .map_err(|e| system_error(format!("cannot chmod '{path}' to 0660"), &e))?;
        }
        Ok(())
    }
}

impl LockDriver for SanlockDriver {
    fn name(&self) -> &'static str {
        "sanlock"
    }

    fn uses_state(&self) -> bool {
        true
    }

    fn new_manager(&self, domain: &Domain) -> Result<Box<dyn LockManager>> {
        // The only way to learn whether the daemon knows a pid is to ask for
        // its leases: ESRCH means it has never registered.
        let registered = domain.pid != 0 && self.inner.lib.inquire(None, domain.pid as i32).is_ok();
        Ok(Box::new(SanlockManager {
            driver: self.clone(),
            domain: domain.clone(),
            resources: Vec::new(),
            has_rw_disks: false,
            registered,
        }))
    }
}

/// One domain's leases with the sanlock driver.
#[derive(Debug)]
pub struct SanlockManager {
    driver: SanlockDriver,
    domain: Domain,
    resources: Vec<sl::Resource>,
    has_rw_disks: bool,
    registered: bool,
}

impl SanlockManager {
    /// The leases that acquire will take, in the order they were added.
    pub fn resources(&self) -> &[sl::Resource] {
        &self.resources
    }

    fn lib(&self) -> &'static Sanlock {
        self.driver.inner.lib
    }

    fn pid(&self) -> i32 {
        self.domain.pid as i32
    }

    fn inquire_state(&self) -> Result<Option<String>> {
        let (_, state) = self
            .lib()
            .inquire(None, self.pid())
            .map_err(|e| sanlock_error(VIR_ERR_INTERNAL_ERROR, "Failed to inquire lock", &e))?;
        Ok((!state.is_empty()).then_some(state))
    }

    fn add_disk(&mut self, path: &str, shared: bool) -> Result<()> {
        let config = &self.driver.inner.config;
        let name = auto_lease_name(path);
        let lease_path = format!("{}/{name}", config.disk_lease_dir);
        if lease_path.len() >= sl::PATH_LEN {
            return Err(LockError::internal(&format!(
                "Lease path '{lease_path}' exceeds {} characters",
                sl::PATH_LEN
            )));
        }
        let res = sl::Resource {
            lockspace: AUTO_DISK_LOCKSPACE.to_owned(),
            name,
            disks: vec![sl::Disk {
                path: lease_path.clone(),
                offset: 0,
            }],
            lver: 0,
            flags: if shared { sl::RES_SHARED } else { 0 },
        };
        if std::fs::metadata(&lease_path).is_err() {
            let lib = self.lib();
            self.driver
                .create_area(&lease_path, "lease", false, || lib.write_resource(&res))?;
        }
        self.resources.push(res);
        Ok(())
    }
}

fn checked_name(kind: &str, text: &str) -> Result<String> {
    if text.len() >= sl::NAME_LEN {
        return Err(LockError::internal(&format!(
            "{kind} '{text}' exceeds {} characters",
            sl::NAME_LEN
        )));
    }
    Ok(text.to_owned())
}

impl LockManager for SanlockManager {
    fn add_resource(&mut self, resource: &Resource) -> Result<()> {
        if self.resources.len() == sl::MAX_RESOURCES {
            return Err(LockError::internal(&format!(
                "Too many resources {} for object",
                sl::MAX_RESOURCES
            )));
        }
        match resource {
            Resource::Disk(d) if d.readonly => Ok(()),
            Resource::Disk(d) => {
                if self.driver.inner.config.auto_disk_leases {
                    self.add_disk(&d.path, d.shared)
                } else {
                    if !d.shared {
                        self.has_rw_disks = true;
                    }
                    Ok(())
                }
            }
            Resource::Lease(l) => {
                let name = checked_name("Resource name", &l.key)?;
                let lockspace = match &l.lockspace {
                    Some(ls) => checked_name("Resource lockspace", ls)?,
                    None => String::new(),
                };
                let path = l.path.clone().unwrap_or_default();
                if path.len() >= sl::PATH_LEN {
                    return Err(LockError::internal(&format!(
                        "Lease path '{path}' exceeds {} characters",
                        sl::PATH_LEN
                    )));
                }
                self.resources.push(sl::Resource {
                    lockspace,
                    name,
                    disks: vec![sl::Disk {
                        path,
                        offset: l.offset,
                    }],
                    lver: 0,
                    flags: 0,
                });
                Ok(())
            }
        }
    }

    fn acquire(&mut self, flags: AcquireFlags, state: Option<&str>) -> Result<Option<OwnedFd>> {
        if self.resources.is_empty()
            && self.has_rw_disks
            && self.driver.inner.config.require_lease_for_disks
        {
            return Err(LockError::Local {
                code: VIR_ERR_CONFIG_UNSUPPORTED,
                message: "unsupported configuration: Read/write, exclusive access, disks were present, but no leases specified".into(),
            });
        }
        if self.driver.inner.config.auto_disk_leases && !self.resources.is_empty() {
            self.driver.ensure_lockspace()?;
        }
        let lib = self.lib();
        let sock = if self.pid() == vmlock_sys::getpid() {
            let sock = lib.register().map_err(|e| {
                sanlock_error(
                    VIR_ERR_INTERNAL_ERROR,
                    "Failed to open socket to sanlock daemon",
                    &e,
                )
            })?;
            self.registered = true;
            Some(sock)
        } else if !self.registered {
            tracing::debug!(
                pid = self.pid(),
                "process not registered, not acquiring lock"
            );
            return Ok(None);
        } else {
            None
        };
        // A state from a migration names the leases with the version the
        // source held; acquiring exactly that version proves nobody took
        // them in between.
        let from_state;
        let resources = match state.filter(|s| !s.is_empty()) {
            Some(s) => {
                from_state = lib.state_to_resources(s).map_err(|e| {
                    sanlock_error(
                        VIR_ERR_INTERNAL_ERROR,
                        &format!("Unable to parse lock state {s}"),
                        &e,
                    )
                })?;
                &from_state
            }
            None => &self.resources,
        };
        if !flags.register_only {
            let fd = sock.as_ref().map(|s| s.as_fd());
            lib.acquire(fd, self.pid(), 0, resources, &self.domain.name)
                .map_err(|e| sanlock_error(VIR_ERR_RESOURCE_BUSY, "Failed to acquire lock", &e))?;
        }
        let Some(sock) = sock else {
            return Ok(None);
        };
        // The VM process keeps the connection: its exit releases the leases.
        vmlock_sys::fd::set_cloexec(sock.as_fd(), false)
            .map_err(|e| system_error("Failed to hand the sanlock connection on".into(), &e))?;
        if flags.restrict {
            lib.restrict(sock.as_fd(), sl::RESTRICT_ALL).map_err(|e| {
                sanlock_error(VIR_ERR_INTERNAL_ERROR, "Failed to restrict process", &e)
            })?;
        }
        Ok(Some(sock))
    }

    fn release(&mut self) -> Result<Option<String>> {
        if !self.registered {
            tracing::debug!(pid = self.pid(), "process not registered, skipping release");
            return Ok(None);
        }
        let state = self.inquire_state()?;
        if !self.resources.is_empty() {
            self.lib()
                .release(None, self.pid(), 0, &self.resources)
                .map_err(|e| sanlock_error(VIR_ERR_INTERNAL_ERROR, "Failed to release lock", &e))?;
        }
        Ok(state)
    }

    fn inquire(&mut self) -> Result<Option<String>> {
        if !self.registered {
            return Ok(None);
        }
        self.inquire_state()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_lease_names_are_the_md5_of_the_path() {
        // RFC 1321 test vectors.
        assert_eq!(auto_lease_name(""), "d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!(auto_lease_name("abc"), "900150983cd24fb0d6963f7d28e17f72");
        assert_eq!(auto_lease_name("/a").len(), 32);
    }

    #[test]
    fn users_and_groups_read_as_libvirt_reads_them() {
        let u = vmlock_sys::user::user_id;
        assert_eq!(resolve_id("root", u, "user").unwrap(), 0);
        assert_eq!(resolve_id("+107", u, "user").unwrap(), 107);
        assert_eq!(resolve_id("4242", u, "user").unwrap(), 4242);
        let e = resolve_id("no-such-user-here", u, "user").unwrap_err();
        assert_eq!(
            e.to_string(),
            "internal error: Failed to parse user 'no-such-user-here'"
        );
        assert!(resolve_id("+x", u, "user").is_err());
    }

    #[test]
    fn sanlock_codes_and_errno_give_libvirts_errors() {
        let busy = SanlockError {
            rv: -243,
            message: "lease owner is alive".into(),
        };
        let e = sanlock_error(VIR_ERR_RESOURCE_BUSY, "Failed to acquire lock", &busy);
        assert_eq!(e.code(), Some(VIR_ERR_RESOURCE_BUSY));
        assert_eq!(
            e.to_string(),
            "resource busy: Failed to acquire lock: lease owner is alive"
        );
        let sys = SanlockError {
            rv: -libc::EEXIST,
            message: "File exists".into(),
        };
        let e = sanlock_error(VIR_ERR_RESOURCE_BUSY, "Failed to acquire lock", &sys);
        assert_eq!(e.code(), Some(VIR_ERR_SYSTEM_ERROR));
        assert_eq!(e.to_string(), "Failed to acquire lock: File exists");
    }
}
