//! A child process of the real control plane (etcd, kube-apiserver, podcert-kubelet): its
//! output in a log file, an early exit reported with the log's tail, and stopped — SIGTERM,
//! then SIGKILL — when dropped, so no test leaves one behind whether it passes or fails.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct Process {
    pub name: String,
    pub child: Child,
    pub log: PathBuf,
}

impl Process {
    /// Starts `cmd` with stdout and stderr in a new `log` (stdin as `cmd` set it).
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> Process {
        let out = std::fs::File::create(log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
        cmd.stdout(out.try_clone().unwrap()).stderr(out);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("{name} does not start ({cmd:?}): {e}"));
        Process {
            name: name.to_string(),
            child,
            log: log.to_path_buf(),
        }
    }

    /// Starts `cmd` with a pipe for its stdout (the caller reads it) and stderr in `log`.
    pub fn spawn_piped(name: &str, mut cmd: Command, log: &Path) -> Process {
        let err = std::fs::File::create(log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(err);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("{name} does not start ({cmd:?}): {e}"));
        Process {
            name: name.to_string(),
            child,
            log: log.to_path_buf(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status, if it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// The last `lines` lines of the log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Panics, naming the process and showing its log, if it has exited.
    pub fn assert_running(&mut self, doing: &str) {
        if let Some(status) = self.exited() {
            panic!(
                "{} exited ({status}) while {doing}; the last of {}:\n{}",
                self.name,
                self.log.display(),
                self.log_tail(40)
            );
        }
    }

    /// SIGTERM, then SIGKILL if it has not exited within `grace`.
    pub fn stop(&mut self, grace: Duration) {
        if self.exited().is_some() {
            return;
        }
        signal(self.pid(), "TERM");
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if self.exited().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
    }

    /// SIGKILL: what `kill -9` does to a process, no chance to clean up.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(5));
    }
}

/// Sends `SIG<name>` to `pid` (the `kill` command: no unsafe code for a signal).
pub fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill")
        .args([format!("-{name}"), pid.to_string()])
        .stderr(Stdio::null())
        .status();
}
