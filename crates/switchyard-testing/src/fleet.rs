//! An in-process fleet on random ports, in its own vhost, against a real sandbox.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use switchyard_amqp::lapin::options::{BasicAckOptions, BasicGetOptions};
use switchyard_amqp::messages::publish_command;
use switchyard_amqp::{
    Broker, BrokerSettings, ConsumeSettings, HeaderRead, Headers, Outgoing, Publisher, Topology,
    consume,
};
use switchyard_cli::fleet::{Fleet, SandboxSecrets, VendorKeys, sandbox_providers};
pub use switchyard_cli::fleet::{ONESHOT_PROVIDER, POLLED_PROVIDER, WEBHOOK_PROVIDER};
use switchyard_config::Config;
use switchyard_core::{Command, Event, Status};
use switchyard_http::{OutboundClient, OutboundRequest, OutboundSettings};
use switchyard_sandbox::{Sandbox, SandboxConfig, WebhookTarget};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::vhost::TestVhost;

/// The bearer token every test fleet accepts.
pub const TOKEN: &str = "tok_test_canary_ingress_5d1";
/// The Standard Webhooks secret of the test fleet's sandbox providers (base64 of a 32-byte key).
pub const WEBHOOK_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// The test fleet's Twilio auth token (a canary, like the SendGrid key).
pub const TWILIO_TOKEN: &str = "twilio_canary_token_3f9a";

/// The test fleet's SendGrid API key (a canary: it must never appear unredacted).
pub const SENDGRID_KEY: &str = "SG.canary_sendgrid_key_7c41";

/// The test fleet's Stripe secret key (a canary).
pub const STRIPE_KEY: &str = "sk_test_canary_stripe_key_52d8";

/// The test fleet's EasyPost API key (a canary).
pub const EASYPOST_KEY: &str = "EZTKcanary_easypost_key_a7e0";

/// Knobs of a test fleet.
#[derive(Debug, Clone)]
pub struct TestFleetOptions {
    /// Per-attempt provider timeout.
    pub timeout_ms: u64,
    /// Attempts before giving up.
    pub max_attempts: u32,
    /// Extra TOML appended to the generated config.
    pub extra_toml: String,
    /// Start the in-process ingress and workers (false: only the vhost, sandbox and events,
    /// for tests that run the real binaries).
    pub in_process: bool,
    /// A vhost made beforehand (on a cluster, say); else a fresh one on the local broker.
    pub vhost: Option<TestVhost>,
    /// `amqp.delivery_limit`: returns to a queue before the broker dead-letters a message.
    pub delivery_limit: u32,
}

impl Default for TestFleetOptions {
    fn default() -> Self {
        Self {
            timeout_ms: 2_000,
            max_attempts: 5,
            extra_toml: String::new(),
            in_process: true,
            vhost: None,
            delivery_limit: switchyard_config::AmqpConfig::default().delivery_limit,
        }
    }
}

/// A port for a server a test starts later, on 127.0.0.1: outside the kernel's ephemeral
/// range and never the same twice in one test process (`switchyard_cli::ports`).
pub fn free_port() -> u16 {
    switchyard_cli::ports::free_port().expect("a free port on 127.0.0.1")
}

/// Every event the test's subscriber received, by command.
#[derive(Debug, Clone, Default)]
pub struct EventLog {
    events: Arc<Mutex<HashMap<Uuid, Vec<Event>>>>,
    traceparents: Arc<Mutex<HashMap<Uuid, Vec<Option<String>>>>>,
    changed: Arc<Notify>,
}

impl EventLog {
    fn push_with(&self, e: Event, traceparent: Option<String>) {
        self.traceparents
            .lock()
            .unwrap()
            .entry(e.command_id)
            .or_default()
            .push(traceparent);
        self.push(e);
    }

    /// The `traceparent` AMQP header of each event of `id`, in arrival order.
    pub fn traceparents(&self, id: Uuid) -> Vec<Option<String>> {
        self.traceparents
            .lock()
            .unwrap()
            .get(&id)
            .cloned()
            .unwrap_or_default()
    }

    fn push(&self, e: Event) {
        self.events
            .lock()
            .unwrap()
            .entry(e.command_id)
            .or_default()
            .push(e);
        self.changed.notify_waiters();
    }

    /// The events of `id` so far, in arrival order.
    pub fn of(&self, id: Uuid) -> Vec<Event> {
        self.events
            .lock()
            .unwrap()
            .get(&id)
            .cloned()
            .unwrap_or_default()
    }

    /// Waits until `id` has a terminal event (and a short while more, to catch anything that
    /// would wrongly follow it); panics after `timeout`.
    pub async fn terminal(&self, id: Uuid, timeout: Duration) -> Vec<Event> {
        self.until(id, "a terminal status", timeout, |e| e.status.is_terminal())
            .await
    }

    /// Waits until `id` has an event of `status` (and a short while more); panics after
    /// `timeout`.
    pub async fn reached(&self, id: Uuid, status: Status, timeout: Duration) -> Vec<Event> {
        self.until(id, status.as_str(), timeout, |e| e.status == status)
            .await
    }

    /// Waits until `id` has an event `seen` accepts (and a short while more), `what` naming
    /// it in the panic after `timeout`.
    pub async fn until(
        &self,
        id: Uuid,
        what: &str,
        timeout: Duration,
        seen: impl Fn(&Event) -> bool,
    ) -> Vec<Event> {
        let deadline = Instant::now() + timeout;
        loop {
            let notified = self.changed.notified();
            if self.of(id).iter().any(&seen) {
                tokio::time::sleep(Duration::from_millis(300)).await;
                return self.of(id);
            }
            if Instant::now() > deadline {
                panic!(
                    "command {id} reached no {what} within {timeout:?}; events: {:#?}",
                    self.of(id)
                );
            }
            let _ = tokio::time::timeout(Duration::from_millis(200), notified).await;
        }
    }

    /// Every command id that has had an event.
    pub fn ids(&self) -> Vec<Uuid> {
        self.events.lock().unwrap().keys().copied().collect()
    }

    /// Number of commands with a terminal event.
    pub fn terminal_count(&self) -> usize {
        self.events
            .lock()
            .unwrap()
            .values()
            .filter(|v| v.iter().any(|e| e.status.is_terminal()))
            .count()
    }
}

/// A fleet for one test.
#[derive(Debug)]
pub struct TestFleet {
    /// The vhost everything lives in.
    pub vhost: TestVhost,
    /// The sandbox providers.
    pub sandbox: Sandbox,
    /// The ingress's port (chosen before anything starts: the sandbox calls back there).
    pub ingress_port: u16,
    /// The generated configuration.
    pub config: Config,
    /// The configuration as TOML (to hand to real binaries).
    pub config_toml: String,
    /// The in-process ingress and workers, when started.
    pub fleet: Option<Fleet>,
    /// Events received by the test's own subscriber.
    pub events: EventLog,
    /// The test's broker connection (publishing commands, reading dead letters).
    pub broker: Broker,
    /// A publisher on it.
    pub publisher: Publisher,
    http: reqwest::Client,
    sandbox_client: OutboundClient,
    shutdown: CancellationToken,
    _dir: tempfile_free::Dir,
}

mod tempfile_free {
    /// A temporary directory removed on drop.
    #[derive(Debug)]
    pub struct Dir(pub std::path::PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl TestFleet {
    /// Starts a fleet with default options.
    pub async fn start() -> Self {
        Self::start_with(TestFleetOptions::default()).await
    }

    /// Starts a fleet: vhost, sandbox, config, event subscriber, and (unless told otherwise)
    /// the in-process ingress and workers; returns when everything is ready.
    pub async fn start_with(opts: TestFleetOptions) -> Self {
        switchyard_http::install_crypto_provider();
        let vhost = match opts.vhost.clone() {
            Some(v) => v,
            None => TestVhost::create().await,
        };
        let dir = std::env::temp_dir().join(format!("switchyard-test-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        // The ingress's port is chosen first: the sandbox sends its callbacks there.
        let ingress_port = free_port();
        let secret_file = dir.join("webhook-secret");
        std::fs::write(&secret_file, WEBHOOK_SECRET).unwrap();
        let mut sandbox_config = SandboxConfig::new(dir.join("sandbox"));
        sandbox_config.webhooks = Some(WebhookTarget {
            base_url: format!("http://127.0.0.1:{ingress_port}/v1/webhooks/"),
            secret: WEBHOOK_SECRET.to_owned(),
        });
        sandbox_config.operation_time = Duration::from_millis(200);
        let sandbox = Sandbox::start(sandbox_config).await.unwrap();

        let mut toml = format!(
            "[amqp]\nurl = \"{}\"\nconfirm_timeout_ms = 3000\nreconnect_max_ms = 1000\ndelivery_limit = {}\n\
             [ingress]\nlisten = \"127.0.0.1:{ingress_port}\"\ntokens = [\"{TOKEN}\"]\nmax_body_bytes = 65536\n\
             [worker]\nlisten = \"127.0.0.1:0\"\nshutdown_grace_ms = 3000\nidempotency_secret = \"idem_test_canary_secret_9e4\"\n\
             [retry]\nmax_attempts = {}\nbase = \"100ms\"\ncap = \"1s\"\ntiers = [\"100ms\", \"300ms\", \"1s\", \"2s\"]\n\
             [outbound]\nallow_loopback = true\ntimeout_ms = {}\n\
             [telemetry]\nlog_filter = \"warn,switchyard=info\"\n\
             [ledger]\nlisten = \"127.0.0.1:0\"\ndatabase_url = \"sqlite://{}?mode=rwc\"\nbatch_max_wait_ms = 20\n",
            vhost.amqp_url,
            opts.delivery_limit,
            opts.max_attempts,
            opts.timeout_ms,
            dir.join("ledger.db").display()
        );
        let secrets = SandboxSecrets::write(
            &dir,
            secret_file,
            VendorKeys {
                sendgrid: SENDGRID_KEY,
                twilio: TWILIO_TOKEN,
                stripe: STRIPE_KEY,
                easypost: EASYPOST_KEY,
            },
        )
        .unwrap();
        toml.push_str(&sandbox_providers(
            &sandbox,
            SocketAddr::from(([127, 0, 0, 1], ingress_port)),
            &secrets,
        ));
        toml.push_str(&opts.extra_toml);
        let config = Config::from_toml_str(&toml).unwrap();

        let tap = format!("test.events.{}", Uuid::new_v4().simple());
        let broker = Broker::start(
            BrokerSettings::from_config(&config.amqp, "switchyard-test"),
            Topology::new(config.retry.tiers.clone(), config.amqp.delivery_limit)
                .with_event_tap(tap.clone(), "#"),
        )
        .unwrap();
        assert!(
            broker.wait_ready(Duration::from_secs(20)).await,
            "test broker connection"
        );
        let events = EventLog::default();
        let shutdown = CancellationToken::new();
        let log = events.clone();
        tokio::spawn(consume(
            broker.clone(),
            ConsumeSettings {
                queue: tap,
                prefetch: 500,
                grace: Duration::from_secs(1),
            },
            shutdown.clone(),
            move |d| {
                let log = log.clone();
                async move {
                    if let Ok(e) = Event::decode(&d.data) {
                        let tp = d
                            .properties
                            .headers()
                            .header_str(switchyard_amqp::messages::TRACEPARENT_HEADER);
                        log.push_with(e, tp);
                    }
                    let _ = d.acker.ack(BasicAckOptions::default()).await;
                }
            },
        ));

        let fleet = if opts.in_process {
            let f = Fleet::start(&config, shutdown.clone()).await.unwrap();
            assert!(f.wait_ready(Duration::from_secs(30)).await, "fleet ready");
            Some(f)
        } else {
            None
        };
        let sandbox_client = OutboundClient::new(&OutboundSettings {
            allow_loopback: true,
            ca_files: vec![sandbox.ca_pem_path().to_path_buf()],
            ..OutboundSettings::default()
        })
        .unwrap();
        Self {
            publisher: Publisher::new(broker.clone(), Duration::from_secs(10)),
            vhost,
            sandbox,
            ingress_port,
            config,
            config_toml: toml,
            fleet,
            events,
            broker,
            http: reqwest::Client::new(),
            sandbox_client,
            shutdown,
            _dir: tempfile_free::Dir(dir),
        }
    }

    /// The messages ready in `queue` right now (a passive declare: exact, unlike the
    /// management API's periodic statistics of [`TestVhost::queue_messages`]). Unacknowledged
    /// deliveries are not counted until their channel closes and returns them.
    pub async fn ready(&self, queue: &str) -> u32 {
        let session = self.broker.session().await.unwrap();
        switchyard_cli::dlq::ready_count(&session.connection, queue)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{queue} does not exist"))
    }

    /// Waits until `queue` exists (a worker declared its topology); panics after 30 s.
    pub async fn wait_for_queue(&self, queue: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.vhost.queue_messages(queue).await.is_none() {
            assert!(Instant::now() < deadline, "{queue} was never declared");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The ingress base URL.
    pub fn ingress_url(&self) -> String {
        format!(
            "http://{}",
            self.fleet.as_ref().expect("in-process fleet").ingress.addr
        )
    }

    /// POSTs a command to the ingress with the test token.
    pub async fn post(&self, body: &serde_json::Value) -> reqwest::Response {
        self.http
            .post(format!("{}/v1/commands", self.ingress_url()))
            .bearer_auth(TOKEN)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// `GET /v1/commands/{id}` on the ingress, polled until `ready` holds for the ledger's
    /// answer (at most 30 s).
    pub async fn ledger_view_when(
        &self,
        id: Uuid,
        ready: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let url = format!("{}/v1/commands/{id}", self.ingress_url());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let r = self.http.get(&url).bearer_auth(TOKEN).send().await.unwrap();
            if r.status() == 200 {
                let view: serde_json::Value = r.json().await.unwrap();
                if ready(&view) {
                    return view;
                }
                assert!(tokio::time::Instant::now() < deadline, "{view:#}");
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the ledger never answered for {id}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A plain HTTP client for ad-hoc requests.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// A new valid command for the sandbox provider of `kind`.
    pub fn command(&self, kind: &str, operation: &str, payload: serde_json::Value) -> Command {
        serde_json::from_value(serde_json::json!({
            "id": Uuid::now_v7(),
            "kind": kind, "provider": "sandbox", "operation": operation,
            "payload": payload,
            "metadata": {"test": "yes"},
            "created_at": chrono::Utc::now(),
        }))
        .unwrap()
    }

    /// A valid payment charge.
    pub fn charge(&self) -> Command {
        self.command(
            "payment",
            "charge",
            serde_json::json!({"amount": 1999, "currency": "usd", "payment_method": "pm_card_visa"}),
        )
    }

    /// Publishes a command over AMQP, as a core app would.
    pub async fn publish(&self, command: &Command) {
        publish_command(&self.publisher, command, Headers::default())
            .await
            .unwrap();
    }

    /// Publishes raw bytes to `switchyard.commands` with `routing_key`.
    pub async fn publish_raw(&self, routing_key: &str, body: &[u8]) {
        self.publisher
            .publish(Outgoing {
                exchange: switchyard_amqp::topology::COMMANDS_EXCHANGE,
                routing_key,
                body,
                properties: switchyard_amqp::lapin::BasicProperties::default()
                    .with_delivery_mode(2),
                mandatory: true,
            })
            .await
            .unwrap();
    }

    /// Scripts the sandbox's answers to `command_id`'s requests.
    pub async fn scenario(&self, command_id: Uuid, steps: &[&str]) {
        let mut req = OutboundRequest::new(
            http::Method::PUT,
            format!(
                "{}/_sandbox/scenarios/{command_id}",
                self.sandbox.base_url()
            )
            .parse()
            .unwrap(),
        );
        req.headers
            .insert("content-type", "application/json".parse().unwrap());
        req.body = serde_json::to_vec(&serde_json::json!({"steps": steps}))
            .unwrap()
            .into();
        let r = self.sandbox_client.send(req).await.unwrap();
        assert!(r.status.is_success(), "scenario: {}", r.status);
    }

    /// What the sandbox saw of `command_id`: requests (key, body hash, status) and effects.
    pub async fn sandbox_view(&self, command_id: Uuid) -> serde_json::Value {
        let req = OutboundRequest::new(
            http::Method::GET,
            format!("{}/_sandbox/commands/{command_id}", self.sandbox.base_url())
                .parse()
                .unwrap(),
        );
        let r = self.sandbox_client.send(req).await.unwrap();
        if r.status.as_u16() == 404 {
            return serde_json::json!({"requests": [], "effects": 0});
        }
        serde_json::from_slice(&r.body).unwrap()
    }

    /// Drains the kind's dead-letter queue: (headers, body) of each message.
    pub async fn dead_letters(
        &self,
        kind: &str,
    ) -> Vec<(Option<switchyard_amqp::lapin::types::FieldTable>, Vec<u8>)> {
        let session = self.broker.session().await.unwrap();
        let ch = session.connection.create_channel().await.unwrap();
        let mut out = Vec::new();
        while let Some(m) = ch
            .basic_get(
                format!("switchyard.dlq.{kind}").as_str().into(),
                BasicGetOptions { no_ack: true },
            )
            .await
            .unwrap()
        {
            out.push((
                m.delivery.properties.headers().clone(),
                m.delivery.data.clone(),
            ));
        }
        out
    }

    /// Stops everything and deletes the vhost.
    pub async fn stop(self) {
        self.shutdown.cancel();
        if let Some(f) = self.fleet {
            let overran = f.stop().await;
            if !overran.is_empty() {
                tracing::warn!(?overran, "parts of the test fleet did not stop in time");
            }
        }
        self.broker.close().await;
        self.vhost.delete().await;
    }
}
