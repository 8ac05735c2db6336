//! docs/core-app.md, the core-app developer's guide, kept true: its code blocks run against a
//! real fleet, and no link of the README or docs/ leaves the repository.
//!
//! Every block whose info string names a file (```` ```python file=publish.py ```` or
//! ```` ```ts file=consume.ts ````) is written into a temporary directory and run, per
//! language: `bind` (declare and bind the app's event queue), `publish` (prints the command's
//! id), `consume <id>` (returns once that command ended), then `submit` (HTTP). The fleet is a
//! fresh vhost on the real broker with the in-process ingress, workers and ledger and the
//! HTTPS sandbox (`switchyard_testing::TestFleet`); the blocks find it through the variables
//! `switchyard up` exports (`SWITCHYARD_URL`, `SWITCHYARD_TOKEN`) and `SWITCHYARD_AMQP_URL`,
//! as `tests/clients.rs` passes them to the client suites.
//!
//! Toolchains: Python is `target/clients/venv/bin/python` (with aio-pika and httpx);
//! TypeScript is `tsx` and `amqplib` from `clients/typescript/node_modules` (or the directory
//! in `SWITCHYARD_GUIDE_NODE_MODULES`). `./dev clients` (and `./dev test`) set both up; a
//! missing one fails the test and says so, it is never skipped.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use switchyard_core::Status;
use switchyard_testing::{TOKEN, TestFleet};
use uuid::Uuid;

/// The guide's runnable files, in the order a language's scenario runs them.
const STEPS: [&str; 4] = ["bind", "publish", "consume", "submit"];

/// One fleet at a time: the machine is small and each scenario starts node or Python.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the repository")
        .to_path_buf()
}

/// A fenced code block of the guide that names a file.
#[derive(Debug, Clone)]
struct Block {
    lang: String,
    file: String,
    code: String,
    line: usize,
}

/// The blocks of `markdown` whose info string is `<lang> file=<name>`.
fn runnable_blocks(markdown: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut open: Option<(String, Option<String>, usize, String)> = None;
    for (n, line) in markdown.lines().enumerate() {
        let trimmed = line.trim_start();
        match &mut open {
            None => {
                if let Some(info) = trimmed.strip_prefix("```") {
                    let mut words = info.split_whitespace();
                    let lang = words.next().unwrap_or_default().to_owned();
                    let file = words
                        .find_map(|w| w.strip_prefix("file="))
                        .map(str::to_owned);
                    open = Some((lang, file, n + 1, String::new()));
                }
            }
            Some((lang, file, start, code)) => {
                if trimmed.starts_with("```") {
                    if let Some(file) = file.take() {
                        blocks.push(Block {
                            lang: std::mem::take(lang),
                            file,
                            code: std::mem::take(code),
                            line: *start,
                        });
                    }
                    open = None;
                } else {
                    code.push_str(line);
                    code.push('\n');
                }
            }
        }
    }
    assert!(open.is_none(), "a code block of the guide is never closed");
    blocks
}

fn guide_blocks() -> Vec<Block> {
    let text = std::fs::read_to_string(repo().join("docs/core-app.md"))
        .expect("docs/core-app.md, the core-app developer's guide");
    runnable_blocks(&text)
}

/// The blocks of one language, by step name (`publish` for `publish.py`).
fn steps_of(lang: &str, ext: &str) -> BTreeMap<String, Block> {
    let mut steps = BTreeMap::new();
    for b in guide_blocks().into_iter().filter(|b| b.lang == lang) {
        let step = b
            .file
            .strip_suffix(&format!(".{ext}"))
            .unwrap_or_else(|| panic!("line {}: {} should end in .{ext}", b.line, b.file))
            .to_owned();
        assert!(
            steps.insert(step, b.clone()).is_none(),
            "line {}: {} twice",
            b.line,
            b.file
        );
    }
    steps
}

/// What the blocks need to reach the fleet: what `switchyard up` exports, and the broker.
fn fleet_env(fleet: &TestFleet) -> Vec<(&'static str, String)> {
    vec![
        ("SWITCHYARD_URL", fleet.ingress_url()),
        ("SWITCHYARD_TOKEN", TOKEN.to_owned()),
        ("SWITCHYARD_AMQP_URL", fleet.vhost.amqp_url.clone()),
    ]
}

const SET_UP: &str = "Set the client toolchains up with `./dev clients` (`./dev test` does it \
                      too), then run this again";

/// The Python of `./dev clients`, checked to have the guide's packages.
fn python() -> PathBuf {
    let python = repo().join("target/clients/venv/bin/python");
    assert!(python.exists(), "{} is missing. {SET_UP}", python.display());
    let check = std::process::Command::new(&python)
        .args(["-c", "import aio_pika, httpx"])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} ({e}). {SET_UP}", python.display()));
    assert!(
        check.status.success(),
        "{} lacks aio-pika or httpx ({}). {SET_UP}",
        python.display(),
        String::from_utf8_lossy(&check.stderr).trim()
    );
    python
}

/// `tsx` and the `node_modules` holding `amqplib`.
fn typescript() -> (PathBuf, PathBuf) {
    let modules = std::env::var_os("SWITCHYARD_GUIDE_NODE_MODULES")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("clients/typescript/node_modules"));
    let tsx = modules.join(".bin/tsx");
    for needed in [tsx.clone(), modules.join("amqplib")] {
        assert!(
            needed.exists(),
            "{} is missing (the guide's TypeScript runs with tsx and amqplib from {}). {SET_UP}",
            needed.display(),
            modules.display()
        );
    }
    (tsx, modules)
}

/// Runs one block to completion; panics with its output unless it succeeded.
async fn run(
    what: &str,
    program: &Path,
    args: &[&str],
    dir: &Path,
    env: &[(&'static str, String)],
) -> String {
    let started = std::time::Instant::now();
    let child = tokio::process::Command::new(program)
        .args(args)
        .current_dir(dir)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .kill_on_drop(true)
        .output();
    let out: Output = tokio::time::timeout(Duration::from_secs(120), child)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within 120 s"))
        .unwrap_or_else(|e| panic!("{what}: cannot run {} ({e}). {SET_UP}", program.display()));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!(
        "{what} ({:.1} s, {}):\n{stdout}{}",
        started.elapsed().as_secs_f64(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{what} failed: {}", out.status);
    stdout
}

/// Writes a language's blocks into a fresh directory (`prepare` adds what else it needs) and
/// runs bind, publish, consume and submit with `program` against a fresh fleet.
async fn scenario(
    lang: &str,
    ext: &str,
    program: &Path,
    prepare: impl FnOnce(&Path),
    extra_env: Vec<(&'static str, String)>,
) {
    let steps = steps_of(lang, ext);
    let names: BTreeSet<&str> = steps.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        STEPS.into_iter().collect(),
        "docs/core-app.md: the {lang} blocks ({ext} files) are the steps this test runs"
    );
    let _one = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    for b in steps.values() {
        std::fs::write(dir.path().join(&b.file), &b.code).unwrap();
    }
    prepare(dir.path());
    let fleet = TestFleet::start().await;
    let mut env = fleet_env(&fleet);
    env.extend(extra_env);
    let file = |step: &str| format!("{step}.{ext}");

    run(
        &format!("{lang}: {}", file("bind")),
        program,
        &[&file("bind")],
        dir.path(),
        &env,
    )
    .await;
    let printed = run(
        &format!("{lang}: {}", file("publish")),
        program,
        &[&file("publish")],
        dir.path(),
        &env,
    )
    .await;
    let id: Uuid = printed
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "{} prints the command's id last: {printed:?}",
                file("publish")
            )
        });
    let consumed = run(
        &format!("{lang}: {} {id}", file("consume")),
        program,
        &[&file("consume"), &id.to_string()],
        dir.path(),
        &env,
    )
    .await;
    assert!(
        consumed
            .lines()
            .any(|l| l.contains(&id.to_string()) && l.contains("completed")),
        "{} saw the command complete: {consumed}",
        file("consume")
    );
    // The fleet agrees: one lifecycle, ended `completed`.
    let events = fleet.events.terminal(id, Duration::from_secs(20)).await;
    assert_eq!(
        switchyard_e2e::terminal(&events).status,
        Status::Completed,
        "{events:#?}"
    );
    let submitted = run(
        &format!("{lang}: {}", file("submit")),
        program,
        &[&file("submit")],
        dir.path(),
        &env,
    )
    .await;
    assert!(
        submitted.contains("completed"),
        "{} saw the command complete: {submitted}",
        file("submit")
    );
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guides_python_publishes_consumes_and_submits() {
    let python = python();
    scenario("python", "py", &python, |_| {}, Vec::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guides_typescript_publishes_consumes_and_submits() {
    let (tsx, modules) = typescript();
    scenario(
        "ts",
        "ts",
        &tsx,
        |dir| {
            // Node resolves packages from ./node_modules, for CommonJS and ES modules alike.
            std::os::unix::fs::symlink(&modules, dir.join("node_modules")).unwrap();
        },
        // Node's own notices (an experimental feature) are not the guide's output.
        vec![("NODE_NO_WARNINGS", "1".to_owned())],
    )
    .await;
}

#[test]
fn every_runnable_block_of_the_guide_is_run() {
    let blocks = guide_blocks();
    for b in &blocks {
        assert!(
            matches!(b.lang.as_str(), "python" | "ts"),
            "docs/core-app.md line {}: {} is in {:?}, which no scenario runs",
            b.line,
            b.file,
            b.lang
        );
    }
    for (lang, ext) in [("python", "py"), ("ts", "ts")] {
        let names: BTreeSet<String> = steps_of(lang, ext).into_keys().collect();
        let expected: BTreeSet<String> = STEPS.iter().map(|s| (*s).to_owned()).collect();
        assert_eq!(names, expected, "the {lang} blocks of docs/core-app.md");
    }
}

/// The README and every page of docs/: each link points into the repository, at a file that
/// exists and, with a `#fragment`, at one of its headings. Code is not prose: links and URLs
/// in code blocks and code spans are not links.
#[test]
fn no_link_leaves_the_repository() {
    let root = repo();
    let mut pages = vec![root.join("README.md")];
    let mut dirs = vec![root.join("docs")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "md") {
                pages.push(path);
            }
        }
    }
    let mut problems = Vec::new();
    for page in &pages {
        let text = std::fs::read_to_string(page).unwrap();
        let name = page.strip_prefix(&root).unwrap().display().to_string();
        for forbidden in ["CONTRACT.md", "../shared"] {
            if text.contains(forbidden) {
                problems.push(format!(
                    "{name}: mentions {forbidden}, which is not in the repository"
                ));
            }
        }
        let prose = prose(&text);
        for url in ["http://", "https://", "www."] {
            if let Some(at) = prose.find(url) {
                let end = (at + 60).min(prose.len());
                problems.push(format!(
                    "{name}: a link out of the repository: {:?}",
                    prose.get(at..end).unwrap_or(url)
                ));
            }
        }
        for target in link_targets(&prose) {
            if let Some(p) = check_link(&root, page, &target) {
                problems.push(format!("{name}: ({target}) {p}"));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// `text` without fenced code blocks and code spans.
fn prose(text: &str) -> String {
    let mut out = String::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        let mut in_span = false;
        for part in line.split('`') {
            if !in_span {
                out.push_str(part);
            }
            in_span = !in_span;
        }
        out.push('\n');
    }
    out
}

/// The targets of `[text](target)` links in `prose`.
fn link_targets(prose: &str) -> Vec<String> {
    let mut targets = Vec::new();
    let mut rest = prose;
    while let Some(at) = rest.find("](") {
        rest = &rest[at + 2..];
        if let Some(end) = rest.find(')') {
            targets.push(rest[..end].trim().to_owned());
            rest = &rest[end..];
        }
    }
    targets
}

/// What is wrong with a link from `page` to `target`, if anything.
fn check_link(root: &Path, page: &Path, target: &str) -> Option<String> {
    if target.contains("://") || target.starts_with("mailto:") {
        return Some("leaves the repository".into());
    }
    let (path, fragment) = match target.split_once('#') {
        Some((p, f)) => (p, Some(f)),
        None => (target, None),
    };
    let file = if path.is_empty() {
        page.to_path_buf()
    } else {
        let mut resolved = page.parent().unwrap().to_path_buf();
        for c in Path::new(path).components() {
            match c {
                Component::ParentDir => {
                    resolved.pop();
                }
                Component::Normal(n) => resolved.push(n),
                _ => {}
            }
        }
        resolved
    };
    if !file.starts_with(root) {
        return Some("leaves the repository".into());
    }
    if !file.exists() {
        return Some(format!("{} does not exist", file.display()));
    }
    let fragment = fragment?;
    if file.is_dir() || file.extension().is_none_or(|e| e != "md") {
        return Some("a #fragment on something that is not a page".into());
    }
    let anchors = anchors(&std::fs::read_to_string(&file).unwrap());
    (!anchors.contains(fragment)).then(|| format!("no heading makes #{fragment}"))
}

/// The anchors a Markdown renderer makes of the page's headings: lowercase, punctuation
/// dropped (hyphens and underscores kept), spaces become hyphens, repeats numbered.
fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut out = BTreeSet::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced || !line.starts_with('#') {
            continue;
        }
        let heading = line.trim_start_matches('#').trim();
        let slug: String = heading
            .to_lowercase()
            .chars()
            .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
            .map(|c| if c == ' ' { '-' } else { c })
            .collect();
        let n = seen.entry(slug.clone()).or_insert(0);
        out.insert(if *n == 0 {
            slug.clone()
        } else {
            format!("{slug}-{n}")
        });
        *n += 1;
    }
    out
}
