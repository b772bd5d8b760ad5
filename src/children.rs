//! Processes this binary starts and stops around itself: the services of
//! `qzx bench` and `qzx chaos` (this binary again, one role each, on free
//! loopback ports), `qzx broker` and redis-server. A child is started from
//! a [`Spec`] kept with it, so it can be killed and started again the same
//! way on the same port. It only ever signals the processes it started, by
//! their pid, and never leaves one running: every child is killed when its
//! handle drops.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tokio::process::{Child, ChildStdout, Command};

/// Where a child's stderr (its log) goes.
#[derive(Debug, Clone)]
pub enum Log {
    /// This process's stderr.
    Inherit,
    /// Appended to a file, so a restarted child continues the same log.
    File(PathBuf),
}

/// How to start a child, kept to start it again.
#[derive(Debug, Clone)]
pub struct Spec {
    pub name: String,
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub log: Log,
    /// Keep stdout readable (`qzx broker` prints its address there).
    pub stdout: bool,
}

impl Spec {
    /// This binary running one `role` (`ingest`, `router`, `api`, `all`)
    /// with `env`, listening on `http` whichever address the role reads.
    pub fn qzx(
        name: &str,
        role: &[&str],
        env: &[(String, String)],
        http: SocketAddr,
        log: Log,
    ) -> anyhow::Result<Spec> {
        let mut env = env.to_vec();
        env.push(("QZX_LISTEN".into(), http.to_string()));
        env.push(("QZX_INGEST_LISTEN".into(), http.to_string()));
        Ok(Spec {
            name: name.to_owned(),
            program: std::env::current_exe().context("locating the qzx binary")?,
            args: role.iter().map(|s| (*s).to_owned()).collect(),
            env,
            log,
            stdout: false,
        })
    }
}

/// A running (or killed) child and how to start it again.
pub struct Proc {
    pub spec: Spec,
    child: Option<Child>,
}

impl Proc {
    pub fn spawn(spec: Spec) -> anyhow::Result<Proc> {
        let mut proc = Proc { spec, child: None };
        proc.start()?;
        Ok(proc)
    }

    /// Starts the child (again); the previous one must be gone.
    pub fn start(&mut self) -> anyhow::Result<()> {
        let spec = &self.spec;
        let mut cmd = Command::new(&spec.program);
        cmd.args(&spec.args)
            .envs(spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(if spec.stdout { Stdio::piped() } else { Stdio::null() })
            .kill_on_drop(true);
        match &spec.log {
            Log::Inherit => {
                cmd.stderr(Stdio::inherit());
            }
            Log::File(path) => {
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .with_context(|| format!("opening {}", path.display()))?;
                cmd.stderr(Stdio::from(file));
            }
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {} ({})", spec.name, spec.program.display()))?;
        self.child = Some(child);
        Ok(())
    }

    /// Moves the running child into a handle of its own, leaving this one
    /// stopped: to wait on it without holding a lock on this one.
    pub fn take(&mut self) -> Proc {
        Proc {
            spec: self.spec.clone(),
            child: self.child.take(),
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref()?.id()
    }

    pub fn take_stdout(&mut self) -> Option<ChildStdout> {
        self.child.as_mut()?.stdout.take()
    }

    /// SIGKILL, at once (no helper process in between: a kill "1–3 ms into
    /// a request" must land then). The child is reaped in the background.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            tokio::spawn(async move {
                let _ = child.wait().await;
            });
        }
    }

    /// True while the child has not exited.
    pub fn running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// SIGTERM: asks for a graceful stop (a second one would stop the
    /// child at once, so this is sent once; see [`Proc::reap`]).
    pub fn terminate(&self) {
        if let Some(pid) = self.pid() {
            let _ = std::process::Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status();
        }
    }

    /// Waits for the child to exit, SIGKILL after `grace`.
    pub async fn reap(&mut self, grace: Duration) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if tokio::time::timeout(grace, child.wait()).await.is_err() {
            let _ = child.kill().await;
        }
    }

    /// SIGTERM, then SIGKILL after `grace`.
    pub async fn stop(&mut self, grace: Duration) {
        self.terminate();
        self.reap(grace).await;
    }
}

pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Waits until `addr` answers `/readyz` with a success.
pub async fn wait_ready(http: &reqwest::Client, addr: SocketAddr, name: &str, within: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Ok(r) = http.get(format!("http://{addr}/readyz")).send().await
            && r.status().is_success()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("{name} on {addr} did not become ready within {within:?}")
}
