//! The client libraries' own test suites (`clients/python`, `clients/typescript`), each run
//! against a real fleet: a fresh vhost on the real broker, the in-process ingress, workers and
//! ledger, and the HTTPS sandbox providers. The suites get the fleet's addresses through the
//! environment (see `fleet_env`), so they also run against `switchyard up` by hand.
//!
//! Their toolchains are set up by `./dev test` (`./dev clients` does only that): a Python
//! virtual environment in `target/clients/venv` and `clients/typescript/node_modules`.
//! One suite restarts the broker, so the suites run one after the other.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use switchyard_testing::{TOKEN, TestFleet};

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the repository")
        .to_path_buf()
}

/// What a client suite needs to reach the fleet.
fn fleet_env(fleet: &TestFleet) -> Vec<(&'static str, String)> {
    vec![
        ("SWITCHYARD_URL", fleet.ingress_url()),
        ("SWITCHYARD_TOKEN", TOKEN.to_owned()),
        ("SWITCHYARD_AMQP_URL", fleet.vhost.amqp_url.clone()),
        (
            "SWITCHYARD_SANDBOX_URL",
            fleet.sandbox.base_url().to_string(),
        ),
        (
            "SWITCHYARD_SANDBOX_CA",
            fleet.sandbox.ca_pem_path().display().to_string(),
        ),
        // The suites may stop and start the broker (`rabbitmqctl stop_app|start_app`).
        ("SWITCHYARD_TEST_BROKER_RESTART", "rabbitmqctl".to_owned()),
    ]
}

async fn run_suite(what: &str, program: &Path, args: &[&str], dir: &Path) {
    let _one = ONE_AT_A_TIME.lock().await;
    assert!(
        program.exists() || program.components().count() == 1,
        "{what}: {} is missing. Set the client toolchains up with `./dev clients` \
         (`./dev test` does it too), then run this again",
        program.display()
    );
    let fleet = TestFleet::start().await;
    let started = std::time::Instant::now();
    // Its own process group: on a timeout the whole suite goes (npm's children included),
    // so nothing is left to stop the broker later.
    let child = tokio::process::Command::new(program)
        .args(args)
        .current_dir(dir)
        .envs(fleet_env(&fleet))
        .process_group(0)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "{what}: cannot run {} ({e}). Set the client toolchains up with `./dev clients`",
                program.display()
            )
        });
    let group = child.id().map(|pid| format!("-{pid}"));
    let out = match tokio::time::timeout(Duration::from_secs(600), child.wait_with_output()).await {
        Ok(out) => out.unwrap(),
        Err(_) => {
            if let Some(group) = group {
                let _ = std::process::Command::new("kill")
                    .args(["-KILL", "--", &group])
                    .status();
            }
            panic!("{what} did not finish within 10 minutes");
        }
    };
    eprintln!(
        "{what} ({:.1} s):\n{}{}",
        started.elapsed().as_secs_f64(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{what} failed: {}", out.status);
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_client_passes_its_suite_against_the_fleet() {
    let root = repo();
    run_suite(
        "the Python client's suite",
        &root.join("target/clients/venv/bin/python"),
        &["-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
        &root.join("clients/python"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_typescript_client_passes_its_suite_against_the_fleet() {
    let root = repo();
    let dir = root.join("clients/typescript");
    assert!(
        dir.join("node_modules").exists(),
        "clients/typescript/node_modules is missing. Set the client toolchains up with \
         `./dev clients` (`./dev test` does it too), then run this again"
    );
    run_suite(
        "the TypeScript client's suite",
        Path::new("npm"),
        &["test", "--silent"],
        &dir,
    )
    .await;
}

/// Not a test: starts a fleet and keeps it up for working on a client by hand. Writes the
/// environment to `$SWITCHYARD_FLEET_ENV_FILE` (default `/tmp/switchyard-fleet.env`) as
/// `export` lines, and stops when that file is removed (or after an hour).
///
/// `cargo test -p switchyard-e2e --test clients -- --ignored --nocapture serve_a_fleet`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a development aid, not a test"]
async fn serve_a_fleet_for_client_development() {
    let path = std::env::var("SWITCHYARD_FLEET_ENV_FILE")
        .unwrap_or_else(|_| "/tmp/switchyard-fleet.env".to_owned());
    let fleet = TestFleet::start().await;
    let lines: String = fleet_env(&fleet)
        .into_iter()
        .map(|(k, v)| format!("export {k}='{v}'\n"))
        .collect();
    std::fs::write(&path, &lines).unwrap();
    eprintln!("fleet up; environment in {path}:\n{lines}remove that file to stop");
    let until = std::time::Instant::now() + Duration::from_secs(3600);
    while Path::new(&path).exists() && std::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    fleet.stop().await;
}
