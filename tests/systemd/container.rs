//! A container booted with `systemd-nspawn -b`: systemd 252 as PID 1 on the cached Debian root
//! (tests/systemd/root.sh), its writes in a throw-away overlay, sharing the host's network (so
//! LocalStack and the Livy server on 127.0.0.1 are reachable). Commands run inside it through
//! `nsenter` into its namespaces, as root.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub struct Container {
    nspawn: Child,
    leader: u32,
    pub console: PathBuf,
}

impl Container {
    /// Boots `root` with the given read-only binds (host path, container path) and waits until
    /// systemd reports the system running.
    pub fn boot(root: &Path, binds: &[(&Path, &str)], console: &Path) -> Self {
        let out = std::fs::File::create(console).expect("console log");
        let mut cmd = Command::new("systemd-nspawn");
        cmd.arg("--directory")
            .arg(root)
            .args([
                "--boot",
                "--register=no",
                "--keep-unit",
                "--volatile=overlay",
            ])
            .arg("--console=read-only")
            .arg(format!("--machine=saw-{}", std::process::id()));
        for (host, inside) in binds {
            cmd.arg(format!("--bind-ro={}:{inside}", host.display()));
        }
        let nspawn = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("console"))
            .stderr(out)
            .spawn()
            .expect("systemd-nspawn (Debian package systemd-container) starts");
        let pid = nspawn.id();
        // The container's PID 1 is systemd-nspawn's only child.
        let deadline = Instant::now() + Duration::from_secs(20);
        let leader = loop {
            let children = Command::new("pgrep")
                .arg("-P")
                .arg(pid.to_string())
                .output()
                .expect("pgrep (procps) runs");
            let children = String::from_utf8_lossy(&children.stdout).into_owned();
            if let Some(first) = children.split_whitespace().next() {
                break first.parse().expect("pid");
            }
            assert!(
                Instant::now() < deadline,
                "systemd-nspawn started no container within 20 s; console:\n{}",
                std::fs::read_to_string(console).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        let mut c = Container {
            nspawn,
            leader,
            console: console.to_owned(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let state = c.sh("systemctl is-system-running 2>/dev/null || true");
            let state = String::from_utf8_lossy(&state.stdout).trim().to_owned();
            if state == "running" || state == "degraded" {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the container's systemd is still '{state}' after 60 s; console:\n{}",
                std::fs::read_to_string(&c.console).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        if let Ok(Some(status)) = c.nspawn.try_wait() {
            panic!("systemd-nspawn exited: {status}");
        }
        c
    }

    /// Runs `script` with /bin/sh inside the container.
    pub fn sh(&self, script: &str) -> Output {
        Command::new("nsenter")
            .arg(format!("--target={}", self.leader))
            .args(["--mount", "--uts", "--ipc", "--net", "--pid"])
            .args([
                "env",
                "-i",
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            ])
            .args(["/bin/sh", "-c", script])
            .stdin(Stdio::null())
            .output()
            .expect("nsenter (util-linux) runs")
    }

    /// Runs `script` inside the container and returns its stdout; panics when it fails.
    pub fn run(&self, script: &str) -> String {
        let out = self.sh(script);
        assert!(
            out.status.success(),
            "in the container, `{script}` failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Writes `content` to `path` inside the container (mode `mode`).
    pub fn write(&self, path: &str, content: &str, mode: &str) {
        let dir = Path::new(path).parent().expect("absolute path").display();
        let quoted = content.replace('\'', r"'\''");
        self.run(&format!(
            "mkdir -p {dir} && printf '%s' '{quoted}' > {path} && chmod {mode} {path}"
        ));
    }

    /// One property of a unit, as `systemctl show` prints it.
    pub fn show(&self, unit: &str, property: &str) -> String {
        self.run(&format!(
            "systemctl show --value --property={property} {unit}"
        ))
        .trim()
        .to_owned()
    }

    /// The unit's messages in the journal, as the worker and systemd wrote them.
    pub fn journal(&self, unit: &str) -> String {
        self.run(&format!("journalctl --no-pager -o cat -u {unit}"))
    }

    /// Polls `check` every 200 ms until it holds.
    pub async fn until(&self, what: &str, within: Duration, check: impl Fn(&Self) -> bool) {
        let deadline = Instant::now() + within;
        while !check(self) {
            assert!(Instant::now() < deadline, "{what}: not within {within:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for Container {
    /// Killing the container's PID 1 ends every process in it at once; systemd-nspawn then exits
    /// and removes the overlay. (A clean shutdown would wait for the worker's open poll.)
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", &self.leader.to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.nspawn.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.nspawn.kill();
        let _ = self.nspawn.wait();
    }
}
