//! The scenario language of `vmlock-plugin-run`, which drives libvirt's
//! `lockd.so` the way libvirtd and QEMU would. One command per line, one
//! result line per command (`ok …` or `err <code> <message>`):
//!
//! ```text
//! init [CONFIG_FILE]                      drvInit (default config path: a missing file)
//! new <uuid> <name> <id> <pid|self|child> [running]
//!                                         drvNew; `child` = the QEMU stand-in's pid;
//!                                         flag NEW_STARTED unless `running` is given
//! disk <path> [shared] [readonly]         drvAddResource(DISK)
//! lease <key> <path> <lockspace|-> [off]  drvAddResource(LEASE)
//! acquire <none|restrict|register-only|restrict,register-only>
//!                                         → ok fd=<n|none>; the fd is kept open
//! release | inquire | free                → ok state=<none|text> (release, inquire)
//! close-fds                               close every fd kept by acquire
//! spawn-qemu                              → ok pid=<n>: a child process (this program)
//!                                           runs init+new(pid=self)+resources+
//!                                           acquire(restrict,register-only) and keeps the fd
//! qemu-close                              the stand-in closes its fd and stays alive;
//!                                         → ok died signal=<n> | ok died status=<n> | ok alive
//! kill-qemu                               SIGKILL the stand-in and reap it
//! sleep <ms>
//! ```
//!
//! Lines that are empty or start with `#` produce no output.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

use vmlock_sys::plugin::{
    ACQUIRE_REGISTER_ONLY, ACQUIRE_RESTRICT, Manager, NEW_STARTED, Plugin, PluginError,
};

/// libvirt's lockd plugin on Debian.
pub const LOCKD_SO: &str = "/usr/lib/x86_64-linux-gnu/libvirt/lock-driver/lockd.so";
/// The config path `init` passes when none is given (it does not exist, so
/// lockd uses its defaults, as with a missing `/etc/libvirt/qemu-lockd.conf`).
pub const MISSING_CONFIG: &str = "/nonexistent/qemu-lockd.conf";

/// Parses a UUID written as 32 hex digits, with or without dashes.
pub fn parse_uuid(s: &str) -> Option<[u8; 16]> {
    let hex: Vec<u8> = s.bytes().filter(|&b| b != b'-').collect();
    if hex.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, pair) in hex.chunks(2).enumerate() {
        let text = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(text, 16).ok()?;
    }
    Some(out)
}

/// Parses acquire flags: `none` or names joined by `,`.
pub fn parse_acquire_flags(s: &str) -> Option<u32> {
    let mut flags = 0;
    for word in s.split(',') {
        flags |= match word {
            "none" | "0" => 0,
            "restrict" => ACQUIRE_RESTRICT,
            "register-only" => ACQUIRE_REGISTER_ONLY,
            _ => return None,
        };
    }
    Some(flags)
}

fn err_line(e: &PluginError) -> String {
    format!("err {} {}", e.code, e.message)
}

struct StandIn {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl StandIn {
    fn send(&mut self, line: &str) -> Result<String, String> {
        writeln!(self.stdin, "{line}").map_err(|e| format!("stand-in stdin: {e}"))?;
        let mut out = String::new();
        match self.stdout.read_line(&mut out) {
            Ok(n) if n > 0 => Ok(out.trim_end().to_string()),
            _ => Err(format!("stand-in gave no answer to {line:?}")),
        }
    }
}

/// The interpreter state.
pub struct Runner {
    plugin_path: PathBuf,
    plugin: Option<&'static Plugin>,
    manager: Option<Manager<'static>>,
    config: String,
    domain: Option<(String, String, String)>,
    resources: Vec<String>,
    fds: Vec<OwnedFd>,
    qemu: Option<StandIn>,
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner")
            .field("plugin", &self.plugin_path)
            .finish_non_exhaustive()
    }
}

impl Runner {
    /// A runner for the plugin at `plugin_path` (loaded on first use).
    pub fn new(plugin_path: &Path) -> Runner {
        Runner {
            plugin_path: plugin_path.to_path_buf(),
            plugin: None,
            manager: None,
            config: MISSING_CONFIG.to_string(),
            domain: None,
            resources: Vec::new(),
            fds: Vec::new(),
            qemu: None,
        }
    }

    fn plugin(&mut self) -> Result<&'static Plugin, String> {
        if let Some(p) = self.plugin {
            return Ok(p);
        }
        let p = Plugin::load(&self.plugin_path).map_err(|e| err_line(&e))?;
        // The plugin stays loaded for the life of the process anyway.
        let p: &'static Plugin = Box::leak(Box::new(p));
        self.plugin = Some(p);
        Ok(p)
    }

    fn manager(&mut self) -> Result<&mut Manager<'static>, String> {
        self.manager
            .as_mut()
            .ok_or_else(|| "err 0 no manager: run `new` first".to_string())
    }

    /// Executes one line and returns its result line (None for comments).
    pub fn exec(&mut self, line: &str) -> Option<String> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let (&cmd, args) = words.split_first()?;
        if cmd.starts_with('#') {
            return None;
        }
        let result = match cmd {
            "init" => self.init(args),
            "new" => self.new_manager(args),
            "disk" | "lease" => self.add_resource(line, cmd, args),
            "acquire" => self.acquire(args),
            "release" | "inquire" => self.state(cmd),
            "free" => Ok(self.manager.take().map_or("ok", |_| "ok").to_string()),
            "close-fds" => Ok(format!("ok closed={}", std::mem::take(&mut self.fds).len())),
            "spawn-qemu" => self.spawn_qemu(),
            "qemu-close" => self.qemu_close(),
            "kill-qemu" => self.kill_qemu(),
            "sleep" => sleep(args),
            _ => Err(format!("err 0 unknown command {cmd:?}")),
        };
        Some(result.unwrap_or_else(|e| e))
    }

    fn init(&mut self, args: &[&str]) -> Result<String, String> {
        if let Some(c) = args.first() {
            self.config = (*c).to_string();
        }
        let conf = PathBuf::from(&self.config);
        let p = self.plugin()?;
        p.init(Some(&conf), 0).map_err(|e| err_line(&e))?;
        Ok("ok".to_string())
    }

    fn pid_arg(&self, s: &str) -> Result<u32, String> {
        match s {
            "self" => Ok(std::process::id()),
            "child" => self
                .qemu
                .as_ref()
                .map(|q| q.child.id())
                .ok_or_else(|| "err 0 no stand-in: run spawn-qemu first".to_string()),
            n => n.parse().map_err(|_| format!("err 0 bad pid {n:?}")),
        }
    }

    fn new_manager(&mut self, args: &[&str]) -> Result<String, String> {
        let (uuid, name, id, pid, flags) = match args {
            [uuid, name, id, pid] => (uuid, name, id, pid, NEW_STARTED),
            [uuid, name, id, pid, "running"] => (uuid, name, id, pid, 0),
            _ => {
                return Err(
                    "err 0 usage: new <uuid> <name> <id> <pid|self|child> [running]".to_string(),
                );
            }
        };
        let uuid_b = parse_uuid(uuid).ok_or_else(|| format!("err 0 bad uuid {uuid:?}"))?;
        let id_n: u32 = id.parse().map_err(|_| format!("err 0 bad id {id:?}"))?;
        let pid_n = self.pid_arg(pid)?;
        self.manager = None;
        self.resources.clear();
        self.domain = Some((uuid.to_string(), name.to_string(), id.to_string()));
        let p = self.plugin()?;
        let m = Manager::new(p, uuid_b, name, id_n, pid_n, flags).map_err(|e| err_line(&e))?;
        self.manager = Some(m);
        Ok("ok".to_string())
    }

    fn add_resource(&mut self, line: &str, cmd: &str, args: &[&str]) -> Result<String, String> {
        let m = self.manager()?;
        let r = if cmd == "disk" {
            let path = args
                .first()
                .ok_or("err 0 usage: disk <path> [shared] [readonly]")?;
            let has = |w: &str| args[1..].contains(&w);
            m.add_disk(path, has("readonly"), has("shared"))
        } else {
            let [key, path, ls, rest @ ..] = args else {
                return Err("err 0 usage: lease <key> <path> <lockspace|-> [offset]".into());
            };
            let off = rest.first().and_then(|o| o.parse().ok()).unwrap_or(0);
            m.add_lease(key, path, off, Some(*ls).filter(|l| *l != "-"))
        };
        r.map_err(|e| err_line(&e))?;
        self.resources.push(line.trim().to_string());
        Ok("ok".to_string())
    }

    fn acquire(&mut self, args: &[&str]) -> Result<String, String> {
        let word = args.first().copied().unwrap_or("none");
        let flags = parse_acquire_flags(word).ok_or_else(|| format!("err 0 bad flags {word:?}"))?;
        let fd = self.manager()?.acquire(flags).map_err(|e| err_line(&e))?;
        let shown = fd
            .as_ref()
            .map_or("none".to_string(), |f| f.as_raw_fd().to_string());
        self.fds.extend(fd);
        Ok(format!("ok fd={shown}"))
    }

    fn state(&mut self, cmd: &str) -> Result<String, String> {
        let m = self.manager()?;
        let r = if cmd == "release" {
            m.release()
        } else {
            m.inquire()
        };
        let st = r.map_err(|e| err_line(&e))?;
        Ok(format!("ok state={}", st.as_deref().unwrap_or("none")))
    }
}

fn sleep(args: &[&str]) -> Result<String, String> {
    let ms: u64 = args
        .first()
        .and_then(|a| a.parse().ok())
        .ok_or("err 0 usage: sleep <ms>")?;
    std::thread::sleep(Duration::from_millis(ms));
    Ok("ok".to_string())
}

impl Runner {
    fn stand_in_script(&self) -> Result<Vec<String>, String> {
        let (uuid, name, id) = self
            .domain
            .clone()
            .ok_or_else(|| "err 0 spawn-qemu needs a `new` first".to_string())?;
        let mut lines = vec![
            format!("init {}", self.config),
            format!("new {uuid} {name} {id} self"),
        ];
        lines.extend(self.resources.iter().cloned());
        lines.push("acquire restrict,register-only".to_string());
        Ok(lines)
    }

    fn spawn_qemu(&mut self) -> Result<String, String> {
        if self.qemu.is_some() {
            return Err("err 0 a stand-in is already running".to_string());
        }
        let script = self.stand_in_script()?;
        let exe = std::env::current_exe().map_err(|e| format!("err 0 current_exe: {e}"))?;
        let mut child = Command::new(exe)
            .arg("--plugin")
            .arg(&self.plugin_path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("err 0 spawn: {e}"))?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err("err 0 stand-in pipes missing".to_string());
        };
        let pid = child.id();
        let mut q = StandIn {
            child,
            stdin,
            stdout: BufReader::new(stdout),
        };
        for line in &script {
            let answer = q.send(line).unwrap_or_else(|e| format!("err 0 {e}"));
            if !answer.starts_with("ok") {
                let _ = q.child.kill();
                let _ = q.child.wait();
                return Err(answer);
            }
        }
        self.qemu = Some(q);
        Ok(format!("ok pid={pid}"))
    }

    fn qemu_close(&mut self) -> Result<String, String> {
        let q = self.qemu.as_mut().ok_or("err 0 no stand-in")?;
        // The daemon may kill the stand-in before it answers: an EOF here
        // is expected, so the answer is not required.
        let _ = q.send("close-fds");
        let mut status = None;
        crate::wait_until(Duration::from_secs(8), || {
            status = q.child.try_wait().ok().flatten();
            status.is_some()
        });
        let Some(st) = status else {
            return Ok("ok alive".to_string());
        };
        self.qemu = None;
        Ok(match st.signal() {
            Some(sig) => format!("ok died signal={sig}"),
            None => format!("ok died status={}", st.code().unwrap_or(-1)),
        })
    }

    fn kill_qemu(&mut self) -> Result<String, String> {
        let mut q = self.qemu.take().ok_or("err 0 no stand-in")?;
        let _ = q.child.kill();
        q.child.wait().map_err(|e| format!("err 0 wait: {e}"))?;
        Ok("ok".to_string())
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        if let Some(q) = self.qemu.as_mut() {
            let _ = q.child.kill();
            let _ = q.child.wait();
        }
    }
}

/// Runs every line of `input`, writing one result line per command to
/// `out` (flushed after each line, so a parent can talk to it).
pub fn run(runner: &mut Runner, input: impl BufRead, mut out: impl Write) -> std::io::Result<()> {
    for line in input.lines() {
        if let Some(result) = runner.exec(&line?) {
            writeln!(out, "{result}")?;
            out.flush()?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_uuids_and_flags() {
        let u = parse_uuid("c7a5fdbd-edaf-9455-926a-d65c16db1809").expect("uuid");
        assert_eq!(u[0], 0xc7);
        assert_eq!(u[15], 0x09);
        assert_eq!(parse_uuid("c7a5fdbdedaf9455926ad65c16db1809"), Some(u));
        assert_eq!(parse_uuid("c7a5"), None);
        assert_eq!(parse_uuid("zz a5fdbdedaf9455926ad65c16db1809"), None);
        assert_eq!(parse_acquire_flags("none"), Some(0));
        assert_eq!(parse_acquire_flags("restrict,register-only"), Some(3));
        assert_eq!(parse_acquire_flags("register-only"), Some(1));
        assert_eq!(parse_acquire_flags("bogus"), None);
    }

    #[test]
    fn commands_without_state_report_errors() {
        let mut r = Runner::new(Path::new("/nonexistent/lockd.so"));
        assert_eq!(r.exec("# comment"), None);
        assert_eq!(r.exec(""), None);
        assert!(
            r.exec("acquire none")
                .is_some_and(|l| l.contains("run `new` first"))
        );
        assert!(
            r.exec("frobnicate")
                .is_some_and(|l| l.starts_with("err 0 unknown"))
        );
        assert!(
            r.exec("kill-qemu")
                .is_some_and(|l| l == "err 0 no stand-in")
        );
        let init = r.exec("init").unwrap_or_default();
        assert!(
            init.starts_with("err 0 dlopen /nonexistent/lockd.so"),
            "{init}"
        );
        assert_eq!(r.exec("sleep 1").as_deref(), Some("ok"));
    }
}

/// An interactive `vmlock-plugin-run` (or any line-per-command) session in
/// a child process: one line in, one line out. Killed on drop.
#[derive(Debug)]
pub struct Session {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Session {
    /// Spawns `cmd` with piped stdin and stdout.
    pub fn spawn(mut cmd: Command) -> Session {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn session");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        Session {
            child,
            stdin,
            stdout,
        }
    }

    /// Sends one command and returns its one-line answer.
    pub fn cmd(&mut self, line: &str) -> String {
        writeln!(self.stdin, "{line}").expect("write to session");
        self.stdin.flush().expect("flush session");
        let mut out = String::new();
        self.stdout.read_line(&mut out).expect("read from session");
        out.trim_end().to_owned()
    }

    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
