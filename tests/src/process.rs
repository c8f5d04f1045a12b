//! Child processes under test.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a process may take to print `READY`.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A running binary. Killed (SIGKILL) on Drop; its output is printed if the test is failing.
pub struct Proc {
    name: String,
    child: Option<Child>,
    /// `key=value` pairs of the READY line (`listen`, `admin`).
    pub ready: HashMap<String, String>,
    logs: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    /// Spawns `bin` with `args` and `env`, and waits for its READY line.
    pub fn spawn(bin: &Path, args: &[&str], env: &[(&str, &str)]) -> Proc {
        let name = bin
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut cmd = Command::new(bin);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
        let logs = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("stderr");
        collect(stderr, logs.clone(), format!("{name} stderr"));
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        let out_logs = logs.clone();
        let tag = format!("{name} stdout");
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if !sent && line.starts_with("READY ") {
                    let _ = tx.send(line.clone());
                    sent = true;
                }
                out_logs
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(format!("[{tag}] {line}"));
            }
        });
        let mut proc = Proc {
            name,
            child: Some(child),
            ready: HashMap::new(),
            logs,
        };
        match rx.recv_timeout(READY_TIMEOUT) {
            Ok(line) => {
                for kv in line.split_whitespace().skip(1) {
                    if let Some((k, v)) = kv.split_once('=') {
                        proc.ready.insert(k.to_owned(), v.to_owned());
                    }
                }
            }
            Err(_) => {
                proc.print_logs();
                panic!(
                    "{} printed no READY line within {:?}",
                    proc.name, READY_TIMEOUT
                );
            }
        }
        proc
    }

    /// The process id (0 once reaped).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// The `listen=` address.
    pub fn addr(&self) -> String {
        self.ready
            .get("listen")
            .cloned()
            .expect("READY has listen=")
    }

    /// The `admin=` address.
    pub fn admin(&self) -> String {
        self.ready.get("admin").cloned().expect("READY has admin=")
    }

    /// Sends SIGKILL and reaps.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends a signal by number (15 = SIGTERM, 2 = SIGINT) through `kill(1)`.
    pub fn signal(&self, sig: i32) {
        if let Some(c) = &self.child {
            let _ = send_signal(c.id() as i32, sig);
        }
    }

    /// Waits for exit up to `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut()?;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything the process printed so far.
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// The JSON lines the process printed (the gateway's logs), parsed.
    pub fn json_logs(&self) -> Vec<serde_json::Value> {
        self.logs()
            .iter()
            .filter_map(|l| l.split_once("] ").map(|(_, rest)| rest.to_owned()))
            .filter_map(|l| serde_json::from_str(&l).ok())
            .collect()
    }

    fn print_logs(&self) {
        for line in self.logs() {
            eprintln!("{line}");
        }
    }
}

fn send_signal(pid: i32, sig: i32) -> std::io::Result<()> {
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()?;
    if status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other("kill failed"))
    }
}

fn collect(stream: impl Read + Send + 'static, logs: Arc<Mutex<Vec<String>>>, tag: String) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            logs.lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(format!("[{tag}] {line}"));
        }
    });
}

impl Drop for Proc {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- logs of {} ----", self.name);
            self.print_logs();
        }
        self.kill9();
    }
}
