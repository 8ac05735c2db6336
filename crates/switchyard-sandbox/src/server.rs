//! Starting, addressing and stopping one sandbox.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::Router;
use axum::routing::{get, post, put};
use axum_server::Handle;
use axum_server::tls_rustls::RustlsConfig;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::SandboxConfig;
use crate::state::Ledger;
use crate::{control, provider, tls};

/// How long a graceful stop waits for open connections before closing them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// What every handler shares.
#[derive(Debug)]
pub(crate) struct AppState {
    pub(crate) ledger: Ledger,
    pub(crate) latency: Duration,
    pub(crate) failure_rate: f64,
    pub(crate) bearer_token: Option<String>,
    pub(crate) webhooks: Option<crate::callback::Sender>,
    pub(crate) operation_time: Duration,
    /// Sends the vendors' webhooks (one pool for all of them).
    pub(crate) http: reqwest::Client,
    /// The emulated Stripe account's PaymentIntents.
    pub(crate) stripe: crate::stripe::Account,
    /// The emulated EasyPost accounts' shipments and trackers.
    pub(crate) easypost: crate::easypost::Store,
    /// The emulated PayPal app's tokens and orders.
    pub(crate) paypal: crate::paypal::Account,
    /// The emulated CRM portal's contacts.
    pub(crate) crm: crate::crm::Store,
    started: Instant,
    /// Flips to `true` on shutdown; ends `hang`s so they do not hold the stop up.
    pub(crate) shutdown: watch::Receiver<bool>,
}

impl AppState {
    /// Milliseconds since the sandbox started, for ordering requests in the command view.
    pub(crate) fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/generic/{kind}/{operation}", post(provider::handle))
        .route(
            "/async/{provider}/{kind}/{operation}",
            post(provider::handle_async),
        )
        .route(
            "/polled/{provider}/{kind}/{operation}",
            post(provider::handle_polled),
        )
        .route(
            "/oneshot/{provider}/{kind}/{operation}",
            post(provider::handle_oneshot),
        )
        .route(
            "/oneshot/{provider}/{kind}/operations/{reference}",
            get(provider::status),
        )
        .route(
            "/async/{provider}/{kind}/operations/{reference}",
            get(provider::status),
        )
        .route(
            "/polled/{provider}/{kind}/operations/{reference}",
            get(provider::status),
        )
        .route("/partner/{partner}/webhooks", post(provider::partner))
        .route("/sendgrid/v3/mail/send", post(crate::sendgrid::mail_send))
        .route(
            "/twilio/2010-04-01/Accounts/{account}/Messages.json",
            post(crate::twilio::create_message),
        )
        .route(
            "/stripe/v1/payment_intents",
            post(crate::stripe::payment_intents),
        )
        .route("/stripe/v1/refunds", post(crate::stripe::refunds))
        .route(
            "/easypost/v2/shipments",
            post(crate::easypost::create_shipment),
        )
        .route(
            "/easypost/v2/shipments/{id}",
            get(crate::easypost::retrieve_shipment),
        )
        .route(
            "/easypost/v2/shipments/{id}/buy",
            post(crate::easypost::buy),
        )
        .route(
            "/easypost/v2/trackers",
            post(crate::easypost::create_tracker),
        )
        .route("/paypal/v1/oauth2/token", post(crate::paypal::token))
        .route(
            "/paypal/v2/checkout/orders",
            post(crate::paypal::create_order),
        )
        .route(
            "/paypal/v2/checkout/orders/{order_id}",
            get(crate::paypal::get_order),
        )
        .route(
            "/paypal/v2/checkout/orders/{order_id}/capture",
            post(crate::paypal::capture_order),
        )
        .route(
            "/crm/v3/contacts/{email}",
            put(crate::crm::upsert_contact).get(crate::crm::get_contact),
        )
        .route(
            "/_sandbox/paypal/expire-tokens",
            post(control::expire_paypal_tokens),
        )
        .route(
            "/_sandbox/scenarios/{command_id}",
            put(control::put_scenario),
        )
        .route("/_sandbox/stats", get(control::stats))
        .route("/_sandbox/commands/{command_id}", get(control::command))
        .route("/healthz", get(control::healthz))
        .with_state(state)
}

/// A running HTTPS provider emulator. Stop it with [`Sandbox::shutdown`]; dropping it stops
/// it abruptly.
pub struct Sandbox {
    addr: SocketAddr,
    ca_pem: String,
    ca_pem_path: PathBuf,
    handle: Handle<SocketAddr>,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sandbox")
            .field("addr", &self.addr)
            .field("ca_pem_path", &self.ca_pem_path)
            .finish_non_exhaustive()
    }
}

impl Sandbox {
    /// Binds, generates a fresh CA and serving certificate, writes `{cert_dir}/ca.pem`, and
    /// serves in a spawned task. Returns once the port is bound, so clients may connect.
    pub async fn start(config: SandboxConfig) -> anyhow::Result<Sandbox> {
        config.validate()?;
        tls::install_crypto_provider();
        let tls = tls::generate()?;

        let ca_pem_path = config.cert_dir.join("ca.pem");
        write_ca(&config.cert_dir, &ca_pem_path, &tls.ca_pem).await?;

        let listener = std::net::TcpListener::bind(config.listen)
            .with_context(|| format!("binding the sandbox to {}", config.listen))?;
        let addr = listener.local_addr().context("reading the bound address")?;

        let (stop, shutdown) = watch::channel(false);
        let state = Arc::new(AppState {
            ledger: Ledger::default(),
            latency: config.latency,
            failure_rate: config.failure_rate,
            operation_time: config.operation_time,
            bearer_token: config.bearer_token,
            webhooks: config
                .webhooks
                .map(crate::callback::Sender::new)
                .transpose()?,
            http: crate::callback::webhook_client()?,
            stripe: crate::stripe::Account::default(),
            easypost: crate::easypost::Store::default(),
            paypal: crate::paypal::Account::default(),
            crm: crate::crm::Store::default(),
            started: Instant::now(),
            shutdown,
        });
        let handle = Handle::new();
        let server =
            axum_server::from_tcp_rustls(listener, RustlsConfig::from_config(tls.server_config))
                .context("serving on the bound socket")?
                .handle(handle.clone());
        let app = router(state);
        let task = tokio::spawn(async move { server.serve(app.into_make_service()).await });
        tracing::debug!(addr = %addr, ca = %ca_pem_path.display(), "sandbox started");

        Ok(Sandbox {
            addr,
            ca_pem: tls.ca_pem,
            ca_pem_path,
            handle,
            stop,
            task: Some(task),
        })
    }

    /// The bound address (with the real port when the config asked for port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://localhost:{port}`; `localhost` because that is a name the certificate covers.
    pub fn base_url(&self) -> String {
        format!("https://localhost:{}", self.addr.port())
    }

    /// The `base_url` of a generic provider of this kind; it POSTs `{base_url}/{operation}`.
    pub fn generic_base_url(&self, kind: &str) -> String {
        format!("{}/generic/{kind}", self.base_url())
    }

    /// The `base_url` of a generic provider named `provider` whose operations all end later
    /// by a signed callback to the webhook target.
    pub fn async_base_url(&self, provider: &str, kind: &str) -> String {
        format!("{}/async/{provider}/{kind}", self.base_url())
    }

    /// The `base_url` of a generic provider whose operations end later and are told only at
    /// `operations/{reference}` (its `status_path`).
    pub fn polled_base_url(&self, provider: &str, kind: &str) -> String {
        format!("{}/polled/{provider}/{kind}", self.base_url())
    }

    /// The generic provider of `kind` as a provider that takes no idempotency key: every
    /// request executes (effects counted per command), and `operations/{key}` tells whether the
    /// request sent with that `Idempotency-Key` ever executed (404 if not), so an unknown
    /// outcome can be settled by a status check.
    pub fn oneshot_base_url(&self, provider: &str, kind: &str) -> String {
        format!("{}/oneshot/{provider}/{kind}", self.base_url())
    }

    /// A partner's webhook endpoint: Standard Webhooks deliveries signed with the webhook
    /// target's secret are accepted, once per `webhook-id`.
    pub fn partner_url(&self, partner: &str) -> String {
        format!("{}/partner/{partner}/webhooks", self.base_url())
    }

    /// The `base_url` of a Twilio provider pointed at the sandbox's emulator.
    pub fn twilio_base_url(&self) -> String {
        format!("{}/twilio", self.base_url())
    }

    /// The `base_url` of a Stripe provider pointed at the sandbox's emulator; its events go
    /// to the webhook target's `stripe` endpoint.
    pub fn stripe_base_url(&self) -> String {
        format!("{}/stripe", self.base_url())
    }

    /// The `base_url` of an EasyPost provider pointed at the sandbox's emulator; its
    /// `tracker.updated` Events go to the webhook target's `easypost` endpoint.
    pub fn easypost_base_url(&self) -> String {
        format!("{}/easypost", self.base_url())
    }

    /// The `base_url` of a SendGrid provider pointed at the sandbox's emulator.
    pub fn sendgrid_base_url(&self) -> String {
        format!("{}/sendgrid", self.base_url())
    }

    /// The `base_url` of a PayPal provider pointed at the sandbox's emulator (OAuth at
    /// `/v1/oauth2/token` with [`PAYPAL_CLIENT_ID`](crate::PAYPAL_CLIENT_ID) and
    /// [`PAYPAL_CLIENT_SECRET`](crate::PAYPAL_CLIENT_SECRET), Orders at `/v2/checkout/orders`).
    pub fn paypal_base_url(&self) -> String {
        format!("{}/paypal", self.base_url())
    }

    /// The `base_url` of the CRM provider pointed at the sandbox's emulator (contacts at
    /// `/crm/v3/contacts/{email}`, keyed by [`CRM_API_KEY`](crate::CRM_API_KEY)).
    pub fn crm_base_url(&self) -> String {
        format!("{}/crm", self.base_url())
    }

    /// `{cert_dir}/ca.pem`: the root clients add to their trust store.
    pub fn ca_pem_path(&self) -> &Path {
        &self.ca_pem_path
    }

    /// The CA certificate in PEM, for clients configured in-process.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Stops accepting, ends hanging requests, lets in-flight answers finish (up to a grace
    /// period) and waits for the server task.
    pub async fn shutdown(mut self) {
        self.stop.send_replace(true);
        self.handle.graceful_shutdown(Some(SHUTDOWN_GRACE));
        if let Some(task) = self.task.take() {
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(err)) => {
                    tracing::warn!(error = %err, "sandbox server stopped with an error")
                }
                Err(err) => tracing::warn!(error = %err, "sandbox server task failed"),
            }
        }
        tracing::debug!(addr = %self.addr, "sandbox stopped");
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if self.task.is_some() {
            self.stop.send_replace(true);
            self.handle.shutdown();
        }
    }
}

/// Writes the CA next to a temporary name first, so a reader never sees half a PEM.
async fn write_ca(cert_dir: &Path, ca_pem_path: &Path, ca_pem: &str) -> anyhow::Result<()> {
    tokio::fs::create_dir_all(cert_dir)
        .await
        .with_context(|| format!("creating {}", cert_dir.display()))?;
    let partial = cert_dir.join(format!(".ca.pem.{}", uuid::Uuid::new_v4().simple()));
    tokio::fs::write(&partial, ca_pem)
        .await
        .with_context(|| format!("writing {}", partial.display()))?;
    tokio::fs::rename(&partial, ca_pem_path)
        .await
        .with_context(|| format!("writing {}", ca_pem_path.display()))?;
    Ok(())
}
