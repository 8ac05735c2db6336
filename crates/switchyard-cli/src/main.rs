//! `switchyard`: the command line.
//!
//! Exit codes (see `switchyard_cli::exit` and docs/cli.md): 0 success, 1 runtime failure,
//! 2 usage error, 3 not found, 4 `topology check` found problems.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use switchyard_cli::dlq::{self, Filter, Lot, Selection};
use switchyard_cli::tail::{self, TailFilter};
use switchyard_cli::{bench, exit, resolve, say, schemas, status, topology, up, users};
use switchyard_config::Config;
use switchyard_core::{ErrorClass, Name, Status};
use uuid::Uuid;

/// Switchyard: integrations as commands, processed asynchronously, reported as events.
///
/// Exit codes: 0 success, 1 runtime failure (e.g. broker unreachable), 2 usage error,
/// 3 not found (`status`, `dlq show`, `dlq replay <id>`), 4 `topology check` found problems.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run the whole fleet locally against sandbox providers, ready for a curl.
    Up {
        /// Where the ingress listens [default: 127.0.0.1:8080, or a free port when taken].
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Where the ledger's own API listens [default: 127.0.0.1:8081, or a free port].
        #[arg(long)]
        ledger_listen: Option<SocketAddr>,
        /// The first worker's ops endpoint (/metrics, /readyz); the other workers take the
        /// next ports [default: 127.0.0.1:9101, or free ports]; port 0 picks free ones.
        #[arg(long)]
        worker_listen: Option<SocketAddr>,
        /// The RabbitMQ vhost to run on, created when missing [default: the one
        /// SWITCHYARD_AMQP_URL names, else switchyard-up]; `--vhost /` for the default one.
        #[arg(long)]
        vhost: Option<String>,
        /// Where the generated config, the sandbox CA and the embedded ledger go.
        #[arg(long, default_value = ".switchyard")]
        state_dir: PathBuf,
    },
    /// Stops a running `switchyard up`; `--reset` also deletes its vhost and local state.
    Down {
        /// Also delete up's vhost (dead letters, unroutable commands, scheduled expiries) and
        /// its state directory (config, sandbox CA, embedded ledger).
        #[arg(long)]
        reset: bool,
        /// The state directory `up` used.
        #[arg(long, default_value = ".switchyard")]
        state_dir: PathBuf,
    },
    /// Broker topology.
    Topology {
        #[command(subcommand)]
        action: TopologyCmd,
    },
    /// Parking lots (each kind's DLQ, callbacks, unroutable, ledger): list, show, replay, purge.
    Dlq {
        #[command(subcommand)]
        action: DlqCmd,
    },
    /// A command's lifecycle, as the ledger recorded it (`GET /v1/commands/{id}`).
    Status {
        /// The command id.
        id: Uuid,
        /// Base URL of the ledger's query API (default: the configured ingress).
        #[arg(long, env = "SWITCHYARD_URL")]
        url: Option<String>,
        /// Bearer token (default: the first of `[ingress] tokens`).
        #[arg(long, env = "SWITCHYARD_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Print the ledger's JSON answer as it is.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// End a command whose outcome is `unknown`, as completed or failed, recorded in the
    /// ledger with who and why (`POST /v1/commands/{id}/resolution`).
    Resolve {
        /// The command id.
        id: Uuid,
        /// How it ended.
        #[arg(value_enum)]
        status: resolve::Verdict,
        /// Why (kept in the ledger's audit).
        #[arg(long, default_value = "")]
        reason: String,
        /// Who resolves (default: $USER).
        #[arg(long)]
        by: Option<String>,
        /// Base URL of the ledger's query API (default: the configured ingress).
        #[arg(long, env = "SWITCHYARD_URL")]
        url: Option<String>,
        /// Bearer token (default: the first of `[ingress] tokens`).
        #[arg(long, env = "SWITCHYARD_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Print the terminal event as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Print lifecycle events as they happen, until Ctrl-C.
    Tail {
        /// Only this kind (repeatable).
        #[arg(long = "kind", value_parser = dlq::parse_name)]
        kinds: Vec<Name>,
        /// Only this provider (repeatable).
        #[arg(long = "provider", value_parser = dlq::parse_name)]
        providers: Vec<Name>,
        /// Only this status (repeatable): pending, processing, retrying, waiting, completed, failed.
        #[arg(long = "status", value_parser = tail::parse_status)]
        statuses: Vec<Status>,
        /// Only this command.
        #[arg(long)]
        id: Option<Uuid>,
        /// One JSON event per line.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Run the provider sandbox (HTTPS emulators) on its own.
    Sandbox {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8443")]
        listen: SocketAddr,
        /// Where the CA certificate is written.
        #[arg(long, default_value = ".switchyard/sandbox")]
        cert_dir: PathBuf,
    },
    /// Drive commands through the whole path and print throughput, latency and memory.
    Bench {
        /// Commands to send.
        #[arg(long, default_value_t = 20_000)]
        commands: usize,
        /// Payload size in bytes.
        #[arg(long, default_value_t = 1024)]
        payload_bytes: usize,
        /// Publishes awaiting confirms at once.
        #[arg(long, default_value_t = 1000)]
        window: usize,
        /// Worker concurrency towards the sandbox.
        #[arg(long, default_value_t = 128)]
        concurrency: usize,
        /// Commands per second to offer; 0 publishes as fast as confirms allow.
        #[arg(long, default_value_t = 0)]
        rate: u32,
        /// Run the ledger process beside the worker.
        #[arg(long)]
        with_ledger: bool,
        /// Long-running mode: the provider accepts every command (202) and completes it by a
        /// signed webhook this long after, e.g. `30s`; shows worker memory with all waiting.
        #[arg(long, value_parser = humantime_serde::re::humantime::parse_duration)]
        waiting: Option<Duration>,
        /// Also run the ceiling before and after: Switchyard's broker traffic per command by
        /// a bare lapin program on the same broker, the provider answering in-process; the
        /// figures are then given as ratios to it.
        #[arg(long)]
        ceiling: bool,
        /// The sandbox answers every request this long after it came, e.g. `50ms`; prints the
        /// expected ceiling, concurrency / latency, and the share of it reached.
        #[arg(long, value_parser = humantime_serde::re::humantime::parse_duration)]
        provider_latency: Option<Duration>,
        /// Print the figures as one JSON object on stdout, for a trend file (the human lines
        /// go to stderr).
        #[arg(long)]
        json: bool,
        /// The ledger's and the journal's database: a `postgres://` server gets a fresh
        /// database for the run, dropped after it [default: SQLite in a temporary directory].
        #[arg(long, env = "SWITCHYARD_DATABASE_URL", hide_env_values = true)]
        database_url: Option<String>,
        /// After the full-speed run, run again at half the throughput it measured: p99 at
        /// half the peak rate, in one go.
        #[arg(long, conflicts_with = "rate")]
        half_rate: bool,
    },
    /// Configured providers.
    Providers {
        #[command(subcommand)]
        action: ProvidersCmd,
    },
    /// The ledger.
    Ledger {
        #[command(subcommand)]
        action: LedgerCmd,
    },
    /// The JSON Schemas of commands, events, payloads and HTTP bodies, and the API documents.
    Schemas {
        #[command(subcommand)]
        action: SchemasCmd,
    },
}

/// The config file option every broker-facing subcommand takes.
#[derive(Debug, Clone, Args)]
struct ConfigArg {
    /// Config file (else SWITCHYARD_CONFIG, else ./switchyard.toml when present).
    #[arg(long)]
    config: Option<PathBuf>,
}

impl ConfigArg {
    fn load(&self) -> anyhow::Result<Config> {
        Ok(Config::load(self.config.as_deref())?)
    }
}

#[derive(Debug, Subcommand)]
enum ProvidersCmd {
    /// Print what a provider sends for each operation and how its errors are classified.
    Explain {
        /// The provider's name.
        name: String,
        #[command(flatten)]
        config: ConfigArg,
    },
}

#[derive(Debug, Subcommand)]
enum TopologyCmd {
    /// Declare every exchange and queue of the configured providers (idempotent).
    Apply {
        /// Config file (else SWITCHYARD_CONFIG, else ./switchyard.toml when present).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// One broker user per role (core app, ingress, each worker kind, ledger, operator) with
    /// least privilege: shown, and with --apply created (or updated) with their permissions
    /// through the management API. Passwords come from SWITCHYARD_BROKER_PASSWORD_<ROLE>,
    /// else are generated and shown once.
    Users {
        /// Create or update the users and set their permissions on the configured vhost.
        #[arg(long)]
        apply: bool,
        /// The management API (default: http://{broker host}:15672, as the broker URL's user).
        #[arg(long)]
        management_url: Option<String>,
        /// Prefix of every user name.
        #[arg(long, default_value = "switchyard-")]
        user_prefix: String,
        /// Prefix of the queues the core app declares for itself.
        #[arg(long, default_value = "app.")]
        app_prefix: String,
        /// The users as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Compare the configured topology with the broker's; changes nothing. Exit code 4 when
    /// anything is missing or different.
    Check {
        /// The management API, for comparing bindings (default: http://{broker host}:15672).
        #[arg(long)]
        management_url: Option<String>,
        /// The report as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        config: ConfigArg,
    },
}

/// Which parking lots: `--lot` and `--kind` add up; neither means every lot.
#[derive(Debug, Clone, Args)]
struct LotArgs {
    /// Only this parking lot (repeatable): kind:<kind>, callbacks, unroutable, ledger.
    /// Default: every kind's DLQ and the callbacks, unroutable and ledger lots.
    #[arg(long = "lot", value_parser = dlq::parse_lot)]
    lots: Vec<Lot>,
    /// Only this kind's DLQ (repeatable; the same as `--lot kind:<kind>`).
    #[arg(long = "kind", value_parser = dlq::parse_name)]
    kinds: Vec<Name>,
}

impl LotArgs {
    fn lots(self) -> Vec<Lot> {
        self.lots
            .into_iter()
            .chain(self.kinds.into_iter().map(Lot::Kind))
            .collect()
    }
}

/// Which dead letters: every filter given must match.
#[derive(Debug, Clone, Args)]
struct FilterArgs {
    #[command(flatten)]
    lots: LotArgs,
    /// Only commands of this provider.
    #[arg(long, value_parser = dlq::parse_name)]
    provider: Option<Name>,
    /// Only this error class: transient, permanent, timeout, invalid, expired, unknown.
    #[arg(long, value_parser = dlq::parse_class)]
    class: Option<ErrorClass>,
    /// Only dead letters that failed at least this long ago, e.g. `1h`, `2days`.
    #[arg(long, value_parser = dlq::parse_age)]
    older_than: Option<Duration>,
    /// Only dead letters that failed at most this long ago, e.g. `15m`.
    #[arg(long, value_parser = dlq::parse_age)]
    newer_than: Option<Duration>,
    /// Only this command id.
    #[arg(long)]
    id: Option<Uuid>,
}

impl From<FilterArgs> for Filter {
    fn from(a: FilterArgs) -> Self {
        Filter {
            lots: a.lots.lots(),
            provider: a.provider,
            class: a.class,
            older_than: a.older_than,
            newer_than: a.newer_than,
            id: a.id,
        }
    }
}

#[derive(Debug, Subcommand)]
enum DlqCmd {
    /// List dead letters (changes nothing; see docs/cli.md for how they are read safely).
    List {
        #[command(flatten)]
        filter: FilterArgs,
        /// A JSON array instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Show one dead letter: headers, error and the command. Exit code 3 if not found.
    Show {
        /// The command id.
        id: Uuid,
        #[command(flatten)]
        lots: LotArgs,
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Send parked messages back where they belong; a command starts a new run, with the same
    /// id and idempotency key.
    Replay {
        /// The command to replay (exit code 3 if it is in no DLQ).
        #[arg(
            value_name = "ID",
            required_unless_present = "all",
            conflicts_with = "all"
        )]
        command: Option<Uuid>,
        /// Replay every dead letter the filters match.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        filter: FilterArgs,
        /// Print what would be replayed; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// The result as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Delete the dead letters the filters match, for good.
    Purge {
        #[command(flatten)]
        filter: FilterArgs,
        /// Do not ask (required when no terminal can ask).
        #[arg(long)]
        yes: bool,
        /// The result as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        config: ConfigArg,
    },
}

#[derive(Debug, Subcommand)]
enum LedgerCmd {
    /// Empty request and response bodies of attempts older than the retention.
    Prune {
        /// Config file (else SWITCHYARD_CONFIG, else ./switchyard.toml when present).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Overrides `ledger.attempt_body_retention`, e.g. `30d`.
        #[arg(long, value_parser = humantime_serde::re::humantime::parse_duration)]
        older_than: Option<Duration>,
    },
    /// Measure the store's ingest rate (events per second), SQLite and/or PostgreSQL.
    Bench {
        /// Events to write.
        #[arg(long, default_value_t = 60_000)]
        events: usize,
        /// Events per transaction.
        #[arg(long, default_value_t = 500)]
        batch: usize,
        /// Database URLs to measure (default: a temporary SQLite file).
        #[arg(long = "database-url")]
        urls: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
enum SchemasCmd {
    /// Write the JSON Schemas (ROOT/schemas/) and the API documents (ROOT/docs/api/).
    Write {
        /// The repository root.
        #[arg(default_value = ".")]
        root: PathBuf,
    },
    /// Fail when a committed schema or API document differs from what the types render.
    Check {
        /// The repository root.
        #[arg(default_value = ".")]
        root: PathBuf,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    switchyard_http::install_crypto_provider();
    let result = match cli.command {
        Cmd::Up {
            listen,
            ledger_listen,
            worker_listen,
            vhost,
            state_dir,
        } => {
            up::run(up::UpOptions {
                listen,
                ledger_listen,
                worker_listen,
                vhost,
                state_dir,
            })
            .await
        }
        Cmd::Down { reset, state_dir } => up::down(&state_dir, reset).await,
        Cmd::Topology {
            action: TopologyCmd::Apply { config },
        } => topology_apply(config).await,
        Cmd::Topology {
            action:
                TopologyCmd::Check {
                    management_url,
                    json,
                    config,
                },
        } => match config.load() {
            Ok(c) => topology::check(&c, management_url, json).await,
            Err(e) => Err(e),
        },
        Cmd::Topology {
            action:
                TopologyCmd::Users {
                    apply,
                    management_url,
                    user_prefix,
                    app_prefix,
                    json,
                    config,
                },
        } => match config.load() {
            Ok(c) => {
                let opts = users::UsersOptions {
                    apply,
                    management_url,
                    user_prefix,
                    app_prefix,
                    json,
                };
                users::run(&c, opts).await
            }
            Err(e) => Err(e),
        },
        Cmd::Dlq { action } => run_dlq(action).await,
        Cmd::Status {
            id,
            url,
            token,
            json,
            config,
        } => match config.load() {
            Ok(c) => status::run(&c, id, status::StatusOptions { url, token, json }).await,
            Err(e) => Err(e),
        },
        Cmd::Resolve {
            id,
            status,
            reason,
            by,
            url,
            token,
            json,
            config,
        } => match config.load() {
            Ok(c) => {
                let opts = resolve::ResolveOptions {
                    url,
                    token,
                    reason,
                    by,
                    json,
                };
                resolve::run(&c, id, status, opts).await
            }
            Err(e) => Err(e),
        },
        Cmd::Tail {
            kinds,
            providers,
            statuses,
            id,
            json,
            config,
        } => match config.load() {
            Ok(c) => {
                let filter = TailFilter {
                    kinds,
                    providers,
                    statuses,
                    id,
                };
                tail::run(&c, filter, json).await
            }
            Err(e) => Err(e),
        },
        Cmd::Sandbox { listen, cert_dir } => sandbox(listen, cert_dir).await,
        Cmd::Bench {
            commands,
            payload_bytes,
            window,
            concurrency,
            rate,
            with_ledger,
            waiting,
            ceiling,
            provider_latency,
            json,
            database_url,
            half_rate,
        } => {
            bench::run(bench::BenchOptions {
                commands,
                payload_bytes,
                window,
                concurrency,
                rate,
                with_ledger,
                waiting,
                ceiling,
                provider_latency,
                json,
                database_url,
                half_rate,
            })
            .await
        }
        Cmd::Ledger {
            action: LedgerCmd::Prune { config, older_than },
        } => ledger_prune(config, older_than).await,
        Cmd::Ledger {
            action:
                LedgerCmd::Bench {
                    events,
                    batch,
                    urls,
                },
        } => bench::ledger(events, batch, urls).await,
        Cmd::Providers {
            action: ProvidersCmd::Explain { name, config },
        } => config
            .load()
            .and_then(|c| switchyard_cli::explain::explain(&c, &name))
            .map(|text| say(text.trim_end())),
        Cmd::Schemas {
            action: SchemasCmd::Write { root },
        } => schemas::write(&root).map(|n| {
            say(format!(
                "wrote {n} files: {} and {} under {}",
                schemas::SCHEMAS_DIR,
                schemas::API_DIR,
                root.display()
            ))
        }),
        Cmd::Schemas {
            action: SchemasCmd::Check { root },
        } => schemas::check(&root).map(|n| say(format!("{n} generated files are up to date"))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "error: {e:#}");
            ExitCode::from(exit::code_of(&e))
        }
    }
}

async fn run_dlq(action: DlqCmd) -> anyhow::Result<()> {
    match action {
        DlqCmd::List {
            filter,
            json,
            config,
        } => dlq::list(&config.load()?, &filter.into(), dlq::Output { json }).await,
        DlqCmd::Show {
            id,
            lots,
            json,
            config,
        } => dlq::show(&config.load()?, id, lots.lots(), dlq::Output { json }).await,
        DlqCmd::Replay {
            command,
            all: _,
            filter,
            dry_run,
            json,
            config,
        } => {
            let selection = command.map_or(Selection::All, Selection::One);
            dlq::replay(
                &config.load()?,
                selection,
                filter.into(),
                dry_run,
                dlq::Output { json },
            )
            .await
        }
        DlqCmd::Purge {
            filter,
            yes,
            json,
            config,
        } => dlq::purge(&config.load()?, filter.into(), yes, dlq::Output { json }).await,
    }
}

async fn topology_apply(config: Option<PathBuf>) -> anyhow::Result<()> {
    let config = Config::load(config.as_deref())?;
    let _tracing = switchyard_telemetry::init_logging(&config.telemetry);
    topology::apply(&config).await
}

async fn sandbox(listen: SocketAddr, cert_dir: PathBuf) -> anyhow::Result<()> {
    let _tracing = switchyard_telemetry::init_logging(&Default::default());
    let mut config = switchyard_sandbox::SandboxConfig::new(cert_dir);
    config.listen = listen;
    let sandbox = switchyard_sandbox::Sandbox::start(config).await?;
    say(format!(
        "sandbox on {} (CA {})",
        sandbox.base_url(),
        sandbox.ca_pem_path().display()
    ));
    switchyard_telemetry::shutdown_on_signals()
        .cancelled()
        .await;
    sandbox.shutdown().await;
    Ok(())
}

async fn ledger_prune(config: Option<PathBuf>, older_than: Option<Duration>) -> anyhow::Result<()> {
    let config = Config::load(config.as_deref())?;
    let retention = older_than.unwrap_or(config.ledger.attempt_body_retention);
    let store = switchyard_ledger::Store::connect(config.ledger.database_url.expose()).await?;
    let cutoff = chrono::Utc::now() - chrono::Duration::from_std(retention)?;
    let p = store.prune(cutoff).await?;
    store.close().await;
    say(format!(
        "pruned the bodies of {} attempts and {} webhook ids older than {cutoff}",
        p.attempts, p.webhook_receipts
    ));
    Ok(())
}
