//! Launchers: how the manager starts and stops a storage server of its own
//! when every application server is full (issue 9, part 4).
//!
//! A launched server's id is chosen by the manager (`launch-<hex>`) and
//! written to the new server's `data/node_id` before it starts, so the
//! manager recognises its first heartbeat by id, whatever address it gets.
//!
//! * `local` starts `dupla-server` on this machine as its own process, in
//!   `<manager data>/launched/<id>/` (node.toml copied from the template
//!   node directory, a fresh `data/`, a free loopback port). Stopping sends
//!   SIGTERM (the server finishes its chunk and exits), then SIGKILL if it
//!   has not exited within [`STOP_GRACE`].
//! * `command` runs the operator's program as `PROGRAM launch ID` and
//!   `PROGRAM retire ID`, with `DUPLA_MANAGER` set to the manager's
//!   address: the hook for a cloud CLI, systemd or a container scheduler.
//!   The program must start a server whose `data/node_id` holds ID (see
//!   docs/social.md, "Elastic application servers").

use crate::config::{Elastic, LauncherKind};
use dupla::{Error, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;
use tokio::process::{Child, Command};

/// How long a stopped server has to exit after SIGTERM before SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(10);

/// How the manager's launcher starts and stops servers.
pub struct Launcher {
    config: Elastic,
    /// The manager's address as launched servers dial it.
    manager_addr: String,
    /// Cluster secret, handed to `local` servers in their environment (not
    /// on the command line, where every user of the machine could read it).
    secret: String,
    /// Plain text cluster: launched servers get `--insecure` too.
    insecure: bool,
    /// The manager's data directory: `local` servers live under
    /// `launched/` in it.
    data: PathBuf,
    /// `local` children started by this manager process, by server id.
    children: Mutex<HashMap<String, Child>>,
}

/// The name `dupla-server` is started as, to check a pid before signalling it.
const SERVER_BINARY: &str = "dupla-server";

impl Launcher {
    /// A launcher for `config`, for the manager reached at `manager_addr`.
    pub fn new(
        config: Elastic,
        manager_addr: String,
        secret: String,
        insecure: bool,
        data: PathBuf,
    ) -> Launcher {
        Launcher {
            config,
            manager_addr,
            secret,
            insecure,
            data,
            children: Mutex::new(HashMap::new()),
        }
    }

    /// Which launcher this is.
    pub fn kind(&self) -> &LauncherKind {
        &self.config.launcher
    }

    /// Start server `id`. Returns the process id of a `local` server.
    pub async fn launch(&self, id: &str) -> Result<Option<u32>> {
        match self.config.launcher {
            LauncherKind::None => Err(Error::InvalidInput(
                "no launcher is configured (launcher = \"none\"): set launcher = \"local\" or \"command\" in the manager's node.toml".into(),
            )),
            LauncherKind::Local => self.launch_local(id).map(Some),
            LauncherKind::Command => self.run_command("launch", id).await.map(|()| None),
        }
    }

    /// Stop server `id` (its `pid`, for a `local` server this manager
    /// process did not start itself, e.g. before a restart).
    pub async fn stop(&self, id: &str, pid: Option<u32>) -> Result<()> {
        match self.config.launcher {
            LauncherKind::None => Ok(()),
            LauncherKind::Local => self.stop_local(id, pid).await,
            LauncherKind::Command => self.run_command("retire", id).await,
        }
    }

    /// Directory of local server `id`.
    pub fn local_dir(&self, id: &str) -> PathBuf {
        self.data.join("launched").join(id)
    }

    fn launch_local(&self, id: &str) -> Result<u32> {
        let template = self.config.launch_template.as_deref().ok_or_else(|| {
            Error::InvalidInput("launcher = \"local\" needs launch_template".into())
        })?;
        let dir = self.local_dir(id);
        let data = dir.join("data");
        std::fs::create_dir_all(&data)?;
        let toml = template.join("node.toml");
        if toml.exists() {
            std::fs::copy(&toml, dir.join("node.toml"))?;
        } else {
            std::fs::write(dir.join("node.toml"), "")?;
        }
        std::fs::write(data.join("node_id"), format!("{id}\n"))?;
        let addr = free_loopback_addr()?;
        let binary = self.server_binary()?;
        let log = std::fs::File::create(dir.join("server.log"))?;
        let mut command = Command::new(&binary);
        command
            .current_dir(&dir)
            .args(["--config", "node.toml", "--data", "data"])
            .args(["--listen", &addr, "--advertise", &addr])
            .args(["--manager", &self.manager_addr])
            .env("DUPLA_SECRET", &self.secret)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(false);
        if self.insecure {
            command.arg("--insecure");
        }
        let child = command.spawn().map_err(|e| {
            Error::Unavailable(format!(
                "cannot start {} for server {id}: {e}",
                binary.display()
            ))
        })?;
        let pid = child.id().unwrap_or(0);
        tracing::info!(%id, %addr, pid, dir = %dir.display(), "local server started");
        self.children
            .lock()
            .expect("launcher children lock poisoned")
            .insert(id.to_string(), child);
        Ok(pid)
    }

    /// The `dupla-server` binary: configured, or beside the manager's own.
    fn server_binary(&self) -> Result<PathBuf> {
        if let Some(path) = &self.config.server_binary {
            return Ok(path.clone());
        }
        let exe = std::env::current_exe()?;
        let dir = exe.parent().unwrap_or(Path::new("."));
        Ok(dir.join(SERVER_BINARY))
    }

    async fn stop_local(&self, id: &str, pid: Option<u32>) -> Result<()> {
        let child = self
            .children
            .lock()
            .expect("launcher children lock poisoned")
            .remove(id);
        match child {
            Some(mut child) => {
                if let Some(pid) = child.id() {
                    terminate(pid);
                }
                if tokio::time::timeout(STOP_GRACE, child.wait())
                    .await
                    .is_err()
                {
                    tracing::warn!(%id, "server ignored SIGTERM; killing it");
                    child.kill().await?;
                }
            }
            // Started by an earlier run of the manager: signal the pid if it
            // is still a dupla-server (a pid may have been reused).
            None => {
                if let Some(pid) = pid.filter(|&p| is_server_process(p)) {
                    terminate(pid);
                    let deadline = tokio::time::Instant::now() + STOP_GRACE;
                    while is_server_process(pid) && tokio::time::Instant::now() < deadline {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        }
        tracing::info!(%id, "local server stopped");
        Ok(())
    }

    async fn run_command(&self, action: &str, id: &str) -> Result<()> {
        let program = self.config.launch_command.as_deref().ok_or_else(|| {
            Error::InvalidInput("launcher = \"command\" needs launch_command".into())
        })?;
        let run = Command::new(program)
            .args([action, id])
            .env("DUPLA_MANAGER", &self.manager_addr)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output();
        let output = tokio::time::timeout(self.config.launch_timeout, run)
            .await
            .map_err(|_| {
                Error::Unavailable(format!(
                    "`{} {action} {id}` did not finish within {:?}",
                    program.display(),
                    self.config.launch_timeout
                ))
            })?
            .map_err(|e| Error::Unavailable(format!("cannot run {}: {e}", program.display())))?;
        if !output.status.success() {
            return Err(Error::Unavailable(format!(
                "`{} {action} {id}` failed ({}): {}",
                program.display(),
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            )));
        }
        tracing::info!(%action, %id, program = %program.display(), "launch command ran");
        Ok(())
    }
}

/// A free loopback address: bind port 0, read the port, release it.
fn free_loopback_addr() -> Result<String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.to_string())
}

/// Ask process `pid` to shut down gracefully.
fn terminate(pid: u32) {
    // SAFETY: kill(2) with a plain pid and signal has no memory effects.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGTERM);
    }
}

/// Whether `pid` is alive and runs `dupla-server`.
fn is_server_process(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|cmd| String::from_utf8_lossy(&cmd).contains(SERVER_BINARY))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command_launcher(dir: &Path, script: &str) -> Launcher {
        let program = dir.join("launch.sh");
        std::fs::write(&program, script).unwrap();
        let mut permissions = std::fs::metadata(&program).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o755);
        std::fs::set_permissions(&program, permissions).unwrap();
        let config = Elastic {
            launcher: LauncherKind::Command,
            launch_command: Some(program),
            ..Elastic::default()
        };
        Launcher::new(config, "127.0.0.1:1".into(), "s".into(), true, dir.into())
    }

    #[tokio::test]
    async fn the_command_gets_the_action_the_id_and_the_manager() {
        let dir = tempfile::tempdir().unwrap();
        let calls = dir.path().join("calls");
        let script = format!(
            "#!/bin/sh\necho \"$1 $2 $DUPLA_MANAGER\" >> {}\n",
            calls.display()
        );
        let launcher = command_launcher(dir.path(), &script);
        assert_eq!(launcher.launch("launch-1").await.unwrap(), None);
        launcher.stop("launch-1", None).await.unwrap();
        assert_eq!(
            std::fs::read_to_string(&calls).unwrap(),
            "launch launch-1 127.0.0.1:1\nretire launch-1 127.0.0.1:1\n"
        );
    }

    #[tokio::test]
    async fn a_failing_command_fails_the_launch_with_its_message() {
        let dir = tempfile::tempdir().unwrap();
        let launcher =
            command_launcher(dir.path(), "#!/bin/sh\necho 'quota exceeded' >&2\nexit 3\n");
        let error = launcher.launch("launch-2").await.unwrap_err().to_string();
        assert!(error.contains("quota exceeded"), "{error}");
    }

    #[tokio::test]
    async fn no_launcher_launches_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let launcher = Launcher::new(
            Elastic::default(),
            "127.0.0.1:1".into(),
            "s".into(),
            true,
            dir.path().into(),
        );
        assert!(launcher.launch("launch-3").await.is_err());
        launcher.stop("launch-3", None).await.unwrap();
    }
}
