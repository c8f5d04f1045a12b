//! Every command block of docs/getting-started.md, run as a newcomer pastes it: in a copy of
//! the repository's `deploy/` folder, with `railgate` on `PATH`, exported variables carried from
//! one block to the next. Long-running commands (`serve`, `demo`) must print READY, and stop
//! cleanly on a signal; they get free ports (`--listen 127.0.0.1:0 …`) so the test never clashes
//! with a port in use. The `curl` lines that follow a `serve` line run while it is up, against
//! the port it got; what they print is checked against what the page says they print. The `cargo` lines are the known ones: the default run stands the
//! built binary in for them; the long run executes them for real.

use railgate_tests::bins;
use railgate_tests::process::Proc;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .to_path_buf()
}

/// The `sh` blocks of the page, each as its command lines (comments and blanks dropped).
fn blocks() -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(root().join("docs/getting-started.md")).expect("read");
    let mut out = Vec::new();
    let mut current: Option<Vec<String>> = None;
    for line in text.lines() {
        match (&mut current, line.trim()) {
            (None, "```sh") => current = Some(Vec::new()),
            (Some(_), "```") => out.extend(current.take()),
            (Some(b), l) if !l.is_empty() && !l.starts_with('#') => b.push(l.to_owned()),
            _ => {}
        }
    }
    out
}

/// What the default run does for each `cargo` line the page has.
const CARGO_LINES: [&str; 3] = [
    "cargo run --release -p railgate -- demo",
    "cargo install --locked --path gateway",
    "cargo build --release --locked -p railgate --no-default-features",
];

struct Shell {
    dir: tempfile::TempDir,
    bin: tempfile::TempDir,
    env: HashMap<String, String>,
}

impl Shell {
    fn new() -> Shell {
        let dir = tempfile::tempdir().expect("tmp");
        copy_dir(&root().join("deploy"), &dir.path().join("deploy"));
        let bin = tempfile::tempdir().expect("bin");
        std::os::unix::fs::symlink(bins::path("railgate"), bin.path().join("railgate"))
            .expect("symlink");
        let path = format!(
            "{}:{}",
            bin.path().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        Shell {
            dir,
            bin,
            env: HashMap::from([("PATH".to_owned(), path)]),
        }
    }

    /// Runs `lines` in one bash, `set -euo pipefail`; keeps what they export.
    fn run(&mut self, lines: &[String]) -> String {
        let envfile = self.bin.path().join("env");
        let script = format!(
            "set -euo pipefail\n{}\nenv -0 > '{}'\n",
            lines.join("\n"),
            envfile.display()
        );
        let out = Command::new("bash")
            .args(["-c", &script])
            .current_dir(self.dir.path())
            .env_remove("AUTH_JWT_SIGNING")
            .env_remove("ENGINES_TICKET_SECRET")
            .envs(&self.env)
            .output()
            .expect("bash");
        assert!(
            out.status.success(),
            "{lines:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let saved = std::fs::read(&envfile).expect("env");
        for pair in saved.split(|b| *b == 0) {
            let pair = String::from_utf8_lossy(pair);
            if let Some((k, v)) = pair.split_once('=') {
                if k.starts_with("AUTH_") || k.starts_with("ENGINES_") {
                    self.env.insert(k.to_owned(), v.to_owned());
                }
            }
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Starts a long-running `railgate …` line on free ports; it must print READY and exit 0
    /// on SIGTERM. `while_up` lines (`curl …`) run while it serves, with the page's
    /// `localhost:8000` pointed at the port it got; returns what each printed.
    fn serve(&mut self, line: &str, while_up: &[String]) -> Vec<String> {
        let mut args: Vec<String> = line.split_whitespace().skip(1).map(str::to_owned).collect();
        if args[0] == "serve" {
            args.extend(
                ["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"].map(String::from),
            );
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let cwd = std::env::current_dir().expect("cwd");
        std::env::set_current_dir(self.dir.path()).expect("cd");
        let mut p = Proc::spawn(&self.bin.path().join("railgate"), &args, &env);
        std::env::set_current_dir(cwd).expect("cd back");
        let port = p.addr().rsplit(':').next().expect("port").to_owned();
        let printed = while_up
            .iter()
            .map(|l| self.run(&[l.replace("localhost:8000", &format!("localhost:{port}"))]))
            .collect();
        p.signal(15);
        assert_eq!(
            p.wait_exit(Duration::from_secs(30)).and_then(|s| s.code()),
            Some(0),
            "{line} stops cleanly"
        );
        printed
    }
}

/// What the page says a `curl` line prints: the backquoted text after "prints" in the prose
/// that follows its block.
fn promised_output(text: &str, curl: &str) -> String {
    let after = &text[text.find(curl).expect("curl line on the page")..];
    let prose = &after[after
        .find("prints `")
        .expect("the page says what curl prints")
        + 8..];
    prose[..prose.find('`').expect("closing backquote")].to_owned()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read_dir") {
        let e = e.expect("entry");
        let target = to.join(e.file_name());
        if e.file_type().expect("type").is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).expect("copy");
        }
    }
}

#[test]
fn every_command_block_of_getting_started_works_as_written() {
    let blocks = blocks();
    assert!(blocks.len() >= 3, "{blocks:#?}");
    let mut sh = Shell::new();
    let mut ran = 0;
    let page = std::fs::read_to_string(root().join("docs/getting-started.md")).expect("read");
    let mut curls = 0;
    for block in &blocks {
        let mut pending: Vec<String> = Vec::new();
        let mut lines = block.iter().peekable();
        while let Some(line) = lines.next() {
            if line.starts_with("cargo ") {
                assert!(
                    CARGO_LINES.contains(&line.as_str()),
                    "a cargo line this test does not know: {line}"
                );
                if line.ends_with("-- demo") {
                    sh.serve("railgate demo", &[]);
                }
            } else if line.starts_with("railgate serve") {
                sh.run(&pending);
                pending.clear();
                let mut while_up = Vec::new();
                while let Some(c) = lines.next_if(|l| l.starts_with("curl ")) {
                    while_up.push(c.clone());
                }
                for (curl, printed) in while_up.iter().zip(sh.serve(line, &while_up)) {
                    assert_eq!(printed.trim(), promised_output(&page, curl), "{curl}");
                    curls += 1;
                    ran += 1;
                }
            } else if line.starts_with("railgate token") || line.starts_with("railgate ticket") {
                let out = sh.run(std::slice::from_ref(line));
                let minted = out.trim();
                if line.starts_with("railgate token") {
                    assert_eq!(minted.split('.').count(), 3, "{minted}");
                } else {
                    assert!(!minted.is_empty() && !minted.contains(' '), "{minted}");
                }
            } else {
                pending.push(line.clone());
            }
            ran += 1;
        }
        if !pending.is_empty() {
            sh.run(&pending);
        }
    }
    assert!(curls >= 1, "the HTTP/2 section's curl line ran");
    assert_eq!(ran, blocks.iter().map(Vec::len).sum::<usize>());
    assert!(
        sh.dir.path().join("railgate.toml").exists(),
        "the cp step made the config"
    );
}

#[test]
#[ignore = "two release builds from scratch (tests/run-long)"]
fn the_cargo_lines_of_getting_started_build_what_they_say() {
    let scratch = tempfile::tempdir().expect("tmp");
    let target = scratch.path().join("target");
    let install_root = scratch.path().join("install");
    for line in &CARGO_LINES[1..] {
        let args: Vec<&str> = line.split_whitespace().skip(1).collect();
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(&args)
            .current_dir(root())
            .env("CARGO_TARGET_DIR", &target)
            .env("CARGO_INSTALL_ROOT", &install_root)
            .status()
            .expect("cargo");
        assert!(status.success(), "{line}");
    }
    let installed = install_root.join("bin/railgate");
    let version = Command::new(&installed)
        .arg("--version")
        .output()
        .expect("installed railgate");
    assert!(String::from_utf8_lossy(&version.stdout).starts_with("railgate "));
    let lean = Command::new(target.join("release/railgate"))
        .arg("demo")
        .output()
        .expect("deployment build");
    assert_eq!(
        lean.status.code(),
        Some(64),
        "the deployment build has no demo"
    );
}
