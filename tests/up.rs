//! `switchyard up`, the README's first command, as a user runs it: the curls it prints lead to
//! `completed` (the long-running one by a signed webhook), the `export` lines it prints make
//! the CLI work from any directory, Ctrl-C stops it cleanly and `switchyard down --reset`
//! clears what it left. A refused login or a taken port fails at once, saying what to change.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use switchyard_e2e::binary;
use switchyard_testing::{TestVhost, free_port};

/// Everything the process printed so far, line by line.
#[derive(Clone, Default)]
struct Output(Arc<Mutex<Vec<String>>>);

impl Output {
    fn follow(&self, stream: impl std::io::Read + Send + 'static) {
        let lines = self.0.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line);
            }
        });
    }

    fn text(&self) -> String {
        self.0.lock().unwrap().join("\n")
    }

    async fn wait_for(&self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let text = self.text();
            if text.contains(needle) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "no {needle:?} within {timeout:?}:\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Kills the process if the test ends early, so no `up` outlives a failed run.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The value after `label` on the line that starts with it, e.g. `token     sy_dev_...`.
fn field(text: &str, label: &str) -> String {
    text.lines()
        .find_map(|l| l.trim().strip_prefix(label))
        .map(|rest| rest.split_whitespace().next().unwrap().to_owned())
        .unwrap_or_else(|| panic!("no {label:?} line in:\n{text}"))
}

#[tokio::test]
async fn the_printed_curls_complete_and_ctrl_c_stops_everything() {
    let vhost = TestVhost::create().await;
    let port = free_port();
    let state = std::env::temp_dir().join(format!("switchyard-up-{}", uuid::Uuid::new_v4()));
    let mut child = Running(
        Command::new(binary("switchyard"))
            .args([
                "up",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--ledger-listen",
                "127.0.0.1:0",
                "--worker-listen",
                "127.0.0.1:0",
                "--state-dir",
            ])
            .arg(&state)
            .env("SWITCHYARD_AMQP_URL", &vhost.amqp_url)
            // What a newcomer sees: up's own log filter, not the environment's.
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let output = Output::default();
    output.follow(child.0.stdout.take().unwrap());
    output.follow(child.0.stderr.take().unwrap());

    let text = output
        .wait_for("Ctrl-C stops everything", Duration::from_secs(90))
        .await;
    let url = field(&text, "ingress");
    let token = field(&text, "token");
    assert_eq!(url, format!("http://127.0.0.1:{port}"));
    // The request bodies exactly as printed, one per curl.
    let bodies: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("-d '"))
        .map(|b| serde_json::from_str(b.trim_end_matches('\'')).unwrap())
        .collect();
    assert_eq!(bodies.len(), 2, "{text}");
    assert_eq!(bodies[1]["provider"], "sandbox_async");

    let http = reqwest::Client::new();
    let mut ids = Vec::new();
    for body in &bodies {
        let accepted = http
            .post(format!("{url}/v1/commands"))
            .bearer_auth(&token)
            .json(body)
            .send()
            .await
            .unwrap();
        assert_eq!(accepted.status(), 202);
        let answer: serde_json::Value = accepted.json().await.unwrap();
        ids.push(answer["id"].as_str().unwrap().to_owned());
    }
    for id in &ids {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let view: serde_json::Value = http
                .get(format!("{url}/v1/commands/{id}"))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap_or_default();
            if view["status"] == "completed" {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{id} did not complete: {view:#}\n{}",
                output.text()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    // The long-running one went through `waiting` first, as the tail shows.
    let text = output.text();
    let async_id = &ids[1];
    let waited = text
        .lines()
        .position(|l| l.contains(async_id) && l.contains(".waiting "));
    let done = text
        .lines()
        .position(|l| l.contains(async_id) && l.contains(".completed "));
    assert!(waited.is_some() && done > waited, "{text}");

    // The printed exports make the CLI work from any directory (absolute paths in the
    // generated config, the token and URL in the environment).
    let exports: Vec<(String, String)> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("export "))
        .flat_map(|l| l.split_whitespace())
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.trim_matches('\'').to_owned()))
        .collect();
    let names: Vec<&str> = exports.iter().map(|(k, _)| k.as_str()).collect();
    for wanted in [
        "SWITCHYARD_URL",
        "SWITCHYARD_TOKEN",
        "SWITCHYARD_CONFIG",
        "SWITCHYARD_AMQP_URL",
        "TOKEN",
        "SANDBOX",
    ] {
        assert!(names.contains(&wanted), "no export of {wanted} in:\n{text}");
    }
    let elsewhere = std::env::temp_dir();
    let status = Command::new(binary("switchyard"))
        .args(["status", &ids[0]])
        .current_dir(&elsewhere)
        .env_remove("SWITCHYARD_AMQP_URL")
        .envs(exports.iter().cloned())
        .output()
        .unwrap();
    assert!(
        status.status.success() && String::from_utf8_lossy(&status.stdout).contains("completed"),
        "switchyard status with the exports:\n{}{}",
        String::from_utf8_lossy(&status.stdout),
        String::from_utf8_lossy(&status.stderr)
    );
    let config = &exports
        .iter()
        .find(|(k, _)| k == "SWITCHYARD_CONFIG")
        .unwrap()
        .1;
    let listed = Command::new(binary("switchyard"))
        .args(["dlq", "list", "--config", config])
        .current_dir(&elsewhere)
        .output()
        .unwrap();
    assert!(
        listed.status.success(),
        "dlq list --config from another directory:\n{}",
        String::from_utf8_lossy(&listed.stderr)
    );

    let interrupted = Command::new("kill")
        .args(["-INT", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(interrupted.success());
    let stopping = Instant::now();
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            stopping.elapsed() < Duration::from_secs(30),
            "up did not stop on Ctrl-C:\n{}",
            output.text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(status.success(), "{status}\n{}", output.text());
    output.wait_for("stopped.", Duration::from_secs(5)).await;
    eprintln!("up stopped {:?} after Ctrl-C", stopping.elapsed());
    assert!(
        !output.text().contains("\"level\":\"ERROR\""),
        "errors were logged:\n{}",
        output.text()
    );

    // `down --reset` deletes the vhost up ran on and the local state.
    let down = Command::new(binary("switchyard"))
        .args(["down", "--reset", "--state-dir"])
        .arg(&state)
        .output()
        .unwrap();
    assert!(
        down.status.success(),
        "down --reset: {}",
        String::from_utf8_lossy(&down.stderr)
    );
    assert!(!state.exists(), "the state directory is gone");
    assert_eq!(
        vhost.queue_messages("switchyard.dlq.payment").await,
        None,
        "the vhost and its queues are gone"
    );
    vhost.delete().await;
}

/// Runs `switchyard up` with `args` and `amqp_url` and expects it to fail within 20 s.
fn up_fails(args: &[&str], amqp_url: &str) -> String {
    let state = std::env::temp_dir().join(format!("switchyard-up-{}", uuid::Uuid::new_v4()));
    let mut child = Running(
        Command::new(binary("switchyard"))
            .arg("up")
            .args(args)
            .arg("--state-dir")
            .arg(&state)
            .env("SWITCHYARD_AMQP_URL", amqp_url)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "up kept going instead of failing"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.0.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(!status.success(), "{stderr}");
    let _ = std::fs::remove_dir_all(state);
    stderr
}

#[tokio::test]
async fn a_refused_login_fails_at_once_naming_the_user_and_the_vhost() {
    let said = up_fails(&[], "amqp://guest:not-the-password@127.0.0.1:5672/%2f");
    assert!(
        said.contains("ACCESS_REFUSED")
            && said.contains("'guest'")
            && said.contains("'switchyard-up'"),
        "{said}"
    );
    let said = up_fails(&[], "amqp://guest:guest@127.0.0.1:5672/no-such-vhost-here");
    assert!(said.contains("no vhost 'no-such-vhost-here'"), "{said}");
}

#[tokio::test]
async fn a_taken_port_names_the_option_that_moves_it() {
    let vhost = TestVhost::create().await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    for flag in ["--listen", "--ledger-listen", "--worker-listen"] {
        let said = up_fails(&[flag, &addr], &vhost.amqp_url);
        assert!(
            said.contains(&addr) && said.contains(&format!("another {flag}")),
            "{flag}: {said}"
        );
    }
    vhost.delete().await;
}
