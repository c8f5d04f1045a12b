//! WebSocket conformance: the Autobahn|Testsuite fuzzing client (cases 1–7, 9, 10) through
//! railgate — full admission (JWT, context headers, hello, thread ownership) — to the mock's
//! echo route. Long run only: it needs Python 2.7.
//!
//! The interpreter is `RAILGATE_AUTOBAHN_PYTHON`, else `~/.pyenv/versions/2.7.18/bin/python`.
//! The suite is installed on first use into `target/autobahn/site`
//! (`pip install --target … autobahntestsuite==25.10.1`); the reports land in `target/autobahn/reports`.

use railgate_tests::autobahn::Injector;
use railgate_tests::stack::{full_headers, token, Stack};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("RAILGATE_AUTOBAHN_PYTHON") {
        return PathBuf::from(p);
    }
    let home = std::env::var_os("HOME").unwrap_or_default();
    let p = Path::new(&home).join(".pyenv/versions/2.7.18/bin/python");
    assert!(
        p.exists(),
        "the Autobahn suite needs Python 2.7: set RAILGATE_AUTOBAHN_PYTHON to its interpreter \
         (looked for {})",
        p.display()
    );
    p
}

fn work_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/autobahn")
}

/// Installs the suite into `site` unless it is already there.
fn install(py: &Path, site: &Path) {
    if site.join("autobahntestsuite").exists() {
        return;
    }
    let status = Command::new(py)
        .args(["-m", "pip", "install", "--quiet", "--target"])
        .arg(site)
        .arg(SUITE)
        .status()
        .expect("run pip");
    assert!(status.success(), "pip install autobahntestsuite failed");
}

/// The suite version whose case list (301 cases in sections 1–7, 9, 10) the test expects.
const SUITE: &str = "autobahntestsuite==25.10.1";

const ROUTES: &str = "[ws]\nmax_message_bytes = 16777216\npresence = false\n\
    [[routes]]\nname = \"echo\"\npath = \"/ws/echo/{thread_id}\"\nkind = \"ws\"\n\
    upstream_path = \"/ws/echo\"\nhello = \"consume\"\nws_allow_binary = true\n\
    require = [\"tenant\", \"mode\", \"project\", \"app\"]\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long run: needs Python 2.7 and takes minutes"]
async fn autobahn_fuzzingclient_through_the_gateway() {
    let py = python();
    let dir = work_dir();
    let site = dir.join("site");
    install(&py, &site);
    let reports = dir.join("reports");
    let _ = std::fs::remove_dir_all(&reports);
    std::fs::create_dir_all(&reports).expect("reports dir");

    let s = Stack::start(ROUTES);
    let thread = s.thread("t_a").await;
    let headers = full_headers(&token("t_a", "u1", json!({})), "t_a");
    let hello = json!({"type": "hello", "context": {
        "tenant_id": "t_a", "mode": "lab", "project_id": "p_chat", "app_id": "app-chat"}});
    let injector = Injector::start(&s.addr(), &headers, &hello.to_string()).await;

    let spec = json!({
        "outdir": reports,
        "servers": [{"agent": "railgate", "url": format!("ws://{}/ws/echo/{thread}", injector.addr())}],
        "cases": ["1.*", "2.*", "3.*", "4.*", "5.*", "6.*", "7.*", "9.*", "10.*"],
        "exclude-cases": [],
        "exclude-agent-cases": {}
    });
    let spec_path = dir.join("fuzzingclient.json");
    std::fs::write(&spec_path, spec.to_string()).expect("write spec");
    let script = format!(
        "import site, sys; site.addsitedir({:?}); sys.argv = ['wstest', '-m', 'fuzzingclient', '-s', {:?}]; \
         from autobahntestsuite.wstest import run; run()",
        site.display().to_string(),
        spec_path.display().to_string()
    );
    let mut child = tokio::process::Command::new(&py)
        .arg("-c")
        .arg(script)
        .current_dir(&dir)
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start wstest");
    let status = tokio::time::timeout(Duration::from_secs(40 * 60), child.wait())
        .await
        .expect("the suite finishes within 40 minutes")
        .expect("wstest exit status");
    assert!(status.success(), "wstest failed: {status}");

    let index: Value = serde_json::from_slice(
        &std::fs::read(reports.join("index.json")).expect("index.json written"),
    )
    .expect("index.json parses");
    let cases = index["railgate"].as_object().expect("results for railgate");
    let mut tally: BTreeMap<String, usize> = BTreeMap::new();
    let mut failed = Vec::new();
    for (id, r) in cases {
        let behavior = r["behavior"].as_str().unwrap_or("?").to_owned();
        let close = r["behaviorClose"].as_str().unwrap_or("?").to_owned();
        if !matches!(behavior.as_str(), "OK" | "NON-STRICT" | "INFORMATIONAL")
            || !matches!(close.as_str(), "OK" | "INFORMATIONAL")
        {
            failed.push(format!("{id}: {behavior} / close {close}"));
        }
        *tally.entry(behavior).or_default() += 1;
    }
    println!("autobahn: {} cases, behaviors {tally:?}", cases.len());
    println!("report: {}", reports.join("index.html").display());
    assert_eq!(cases.len(), 301, "cases run");
    assert!(failed.is_empty(), "cases failed:\n{}", failed.join("\n"));
}
