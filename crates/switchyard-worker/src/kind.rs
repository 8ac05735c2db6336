//! Integration kinds and the providers configured for them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use switchyard_amqp::Topology;
use switchyard_config::{Config, ConfigError, ProviderConfig};
use switchyard_core::{KindSpec, Name, Provider};
use switchyard_http::{OutboundClient, OutboundSettings, Redactor};
use switchyard_webhooks::Receiver;

use crate::generic::GenericHttpProvider;

/// An integration kind, implemented once by each kind's crate.
///
/// Adding a kind is a new crate implementing this trait; queue, retry and dead-letter names,
/// config entries and metric labels all derive from [`KindSpec::name`].
pub trait Kind: Send + Sync + 'static {
    /// The kind's name and its operations' payload schemas.
    fn spec(&self) -> KindSpec;

    /// Where this kind's worker serves `/healthz`, `/readyz` and `/metrics` by default.
    fn default_listen(&self) -> SocketAddr;

    /// Builds a provider written in code from its `[[providers]]` entry, or `None` when this
    /// kind has no provider of that `type`.
    fn code_provider(
        &self,
        config: &ProviderConfig,
        index: usize,
        ctx: &ProviderContext,
    ) -> Result<Option<CodeProvider>, ConfigError>;
}

/// A provider written in code, with its inbound webhooks when it completes work by callback.
#[derive(Debug, Clone)]
pub struct CodeProvider {
    /// Calls the provider.
    pub provider: Arc<dyn Provider>,
    /// Verifies and reads its callbacks at `POST /v1/webhooks/{name}`.
    pub webhooks: Option<Receiver>,
}

impl CodeProvider {
    /// A provider that takes no webhooks.
    pub fn new(provider: Arc<dyn Provider>) -> Self {
        Self {
            provider,
            webhooks: None,
        }
    }

    /// With its webhook receiver.
    pub fn with_webhooks(mut self, receiver: Receiver) -> Self {
        self.webhooks = Some(receiver);
        self
    }
}

/// What a provider needs from the rest of the configuration to build itself.
#[derive(Debug, Clone)]
pub struct ProviderContext {
    /// Outbound settings with the provider's own overrides (timeouts, `ca_file`) applied.
    pub outbound: OutboundSettings,
    /// Redaction of attempt records.
    pub redactor: Redactor,
}

impl ProviderContext {
    /// The outbound client for entry `index`; a trust root that cannot be read names its key.
    pub fn client(&self, index: usize) -> Result<OutboundClient, ConfigError> {
        OutboundClient::new(&self.outbound).map_err(|e| {
            ConfigError::invalid(
                format!("{}.ca_file", ProviderConfig::key(index)),
                e.to_string(),
            )
        })
    }
}

/// Refuses an entry listing an operation its provider type does not implement.
pub fn check_operations(
    config: &ProviderConfig,
    index: usize,
    supported: &[&str],
) -> Result<(), ConfigError> {
    match config
        .operations
        .iter()
        .find(|o| !supported.contains(&o.as_str()))
    {
        Some(op) => Err(ConfigError::invalid(
            format!("{}.operations", ProviderConfig::key(index)),
            format!(
                "a provider of type {:?} offers {supported:?}, not {:?}",
                config.provider_type.as_str(),
                op.as_str()
            ),
        )),
        None => Ok(()),
    }
}

/// A configured provider with its effective limits.
#[derive(Debug, Clone)]
pub struct ProviderEntry {
    /// The provider.
    pub provider: Arc<dyn Provider>,
    /// Its inbound webhooks, if it takes any.
    pub webhooks: Option<Receiver>,
    /// Attempts before a transient failure is final.
    pub max_attempts: u32,
    /// Concurrent calls.
    pub concurrency: usize,
    /// Requests per second, when limited.
    pub rate_limit_per_sec: Option<std::num::NonZeroU32>,
    /// Total time of one attempt.
    pub timeout: Duration,
}

fn outbound_for(config: &Config, p: &ProviderConfig) -> OutboundSettings {
    let o = &config.outbound;
    OutboundSettings {
        connect_timeout: Duration::from_millis(
            p.connect_timeout_ms.unwrap_or(o.connect_timeout_ms),
        ),
        timeout: Duration::from_millis(p.timeout_ms.unwrap_or(o.timeout_ms)),
        max_response_bytes: o.max_response_bytes,
        allow_loopback: o.allow_loopback,
        allow_private: o.allow_private,
        ca_files: p.ca_file.iter().cloned().collect(),
        ..OutboundSettings::default()
    }
}

/// The redactor configured by `[redaction]`.
pub fn redactor(config: &Config) -> Redactor {
    Redactor::new(
        &config.redaction.secret_fields,
        config.redaction.max_body_bytes,
    )
}

/// Builds every provider of `kind` in `config`. Fails on the first entry that is wrong, with
/// a message naming it.
pub fn build_providers(
    kind: &dyn Kind,
    config: &Config,
) -> Result<Vec<ProviderEntry>, ConfigError> {
    let spec = kind.spec();
    let mut out = Vec::new();
    for (index, p) in config.providers_of(&spec.name) {
        let ctx = ProviderContext {
            outbound: outbound_for(config, p),
            redactor: redactor(config),
        };
        let built = if p.provider_type == *"http" {
            CodeProvider {
                provider: Arc::new(GenericHttpProvider::from_config(p, index, &ctx)?),
                webhooks: GenericHttpProvider::receiver(p, index, &ctx.redactor)?,
            }
        } else {
            kind.code_provider(p, index, &ctx)?.ok_or_else(|| {
                ConfigError::invalid(
                    format!("{}.type", ProviderConfig::key(index)),
                    format!(
                        "kind {:?} has no provider of type {:?} (\"http\" is always available)",
                        spec.name.as_str(),
                        p.provider_type.as_str()
                    ),
                )
            })?
        };
        out.push(ProviderEntry {
            provider: built.provider,
            webhooks: built.webhooks,
            max_attempts: p.max_attempts.unwrap_or(config.retry.max_attempts),
            concurrency: p.concurrency.unwrap_or(config.worker.concurrency),
            rate_limit_per_sec: p.rate_limit_per_sec,
            timeout: ctx.outbound.timeout,
        });
    }
    Ok(out)
}

/// Every kind, its providers and their operations: what the ingress accepts.
#[derive(Debug, Clone)]
pub struct Catalog {
    kinds: Vec<(KindSpec, BTreeMap<Name, Vec<Name>>)>,
    receivers: Vec<(Name, Receiver)>,
}

/// Why a command's address is not in the catalog.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotInCatalog {
    /// No such kind.
    #[error("unknown kind {0:?}")]
    Kind(String),
    /// The kind has no such provider.
    #[error("kind {0:?} has no provider {1:?}")]
    Provider(String, String),
    /// The provider has no such operation.
    #[error("provider {0:?} has no operation {1:?}")]
    Operation(String, String),
}

impl NotInCatalog {
    /// The command field at fault.
    pub fn field(&self) -> &'static str {
        match self {
            Self::Kind(_) => "kind",
            Self::Provider(..) => "provider",
            Self::Operation(..) => "operation",
        }
    }
}

impl Catalog {
    /// Builds the catalog from the configuration, constructing every provider (so a bad
    /// entry fails here, at start-up).
    pub fn build(kinds: &[Arc<dyn Kind>], config: &Config) -> Result<Self, ConfigError> {
        let mut receivers = Vec::new();
        let kinds = kinds
            .iter()
            .map(|k| {
                let mut providers = BTreeMap::new();
                for e in build_providers(k.as_ref(), config)? {
                    let name = e.provider.name().clone();
                    if let Some(r) = e.webhooks {
                        receivers.push((name.clone(), r));
                    }
                    providers.insert(name, e.provider.operations().to_vec());
                }
                Ok((k.spec(), providers))
            })
            .collect::<Result<_, ConfigError>>()?;
        Ok(Self { kinds, receivers })
    }

    /// The webhook receivers, by provider name (a name shared by several kinds may have one
    /// per kind).
    pub fn receivers(&self) -> &[(Name, Receiver)] {
        &self.receivers
    }

    /// The kinds' specs.
    pub fn specs(&self) -> impl Iterator<Item = &KindSpec> {
        self.kinds.iter().map(|(s, _)| s)
    }

    /// The broker topology of every kind and provider in the catalog.
    pub fn topology(&self, config: &Config) -> Topology {
        let mut topology = Topology::new(config.retry.tiers.clone(), config.amqp.delivery_limit)
            .with_ledger(config.ledger.enabled);
        for (spec, providers) in &self.kinds {
            topology = topology.with_kind(&spec.name);
            for p in providers.keys() {
                topology = topology.with_provider(&spec.name, p);
            }
        }
        topology
    }

    /// Checks that `kind.provider.operation` exists.
    pub fn check(
        &self,
        kind: &Name,
        provider: &Name,
        operation: &Name,
    ) -> Result<(), NotInCatalog> {
        let (_, providers) = self
            .kinds
            .iter()
            .find(|(s, _)| s.name == *kind)
            .ok_or_else(|| NotInCatalog::Kind(kind.to_string()))?;
        let ops = providers
            .get(provider)
            .ok_or_else(|| NotInCatalog::Provider(kind.to_string(), provider.to_string()))?;
        if ops.contains(operation) {
            Ok(())
        } else {
            Err(NotInCatalog::Operation(
                provider.to_string(),
                operation.to_string(),
            ))
        }
    }
}
