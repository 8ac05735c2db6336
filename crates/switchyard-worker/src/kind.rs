//! Integration kinds and the providers configured for them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use switchyard_amqp::Topology;
use switchyard_config::{Config, ConfigError, ProviderConfig};
use switchyard_core::{KindSpec, Name, OperationSpec, PayloadValidator, Provider};
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
            let field = match e {
                switchyard_http::BuildError::ClientIdentity { .. } => "client_cert_file",
                _ => "ca_file",
            };
            ConfigError::invalid(
                format!("{}.{field}", ProviderConfig::key(index)),
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
        .names()
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

/// Concurrent calls to provider `p`: its own `concurrency`, or the worker's.
fn concurrency_of(config: &Config, p: &ProviderConfig) -> usize {
    p.concurrency.unwrap_or(config.worker.concurrency)
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
        http2: p.http2.unwrap_or(o.http2),
        // Over HTTP/1.1 each call in flight holds a connection: keep as many idle, or every
        // lull closes connections the next burst opens again with a TLS handshake each.
        pool_max_idle_per_host: OutboundSettings::default()
            .pool_max_idle_per_host
            .max(concurrency_of(config, p)),
        ca_files: p.ca_file.iter().cloned().collect(),
        client_identity: p
            .client_cert_file
            .clone()
            .zip(p.client_key_file.clone())
            .map(|(cert_file, key_file)| switchyard_http::ClientIdentity {
                cert_file,
                key_file,
            }),
    }
}

/// The redactor configured by `[redaction]`.
pub fn redactor(config: &Config) -> Redactor {
    Redactor::new(
        &config.redaction.secret_fields,
        config.redaction.max_body_bytes,
    )
}

/// What entry `p` of `config` builds itself with.
pub fn provider_context(config: &Config, p: &ProviderConfig) -> ProviderContext {
    ProviderContext {
        outbound: outbound_for(config, p),
        redactor: redactor(config),
    }
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
        let ctx = provider_context(config, p);
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
            concurrency: concurrency_of(config, p),
            rate_limit_per_sec: p.rate_limit_per_sec,
            timeout: ctx.outbound.timeout,
        });
    }
    Ok(out)
}

/// The broker topology `config` needs for `kinds`, from names alone: no provider is built, so
/// no provider secret has to be at hand (an operator checks or applies the topology without
/// holding every provider's credentials). Equal to [`Catalog::topology`] of a catalog built
/// from the same configuration.
pub fn topology_of(kinds: &[Arc<dyn Kind>], config: &Config) -> Topology {
    let specs: Vec<KindSpec> = kinds.iter().map(|k| k.spec()).collect();
    topology_from(
        config,
        specs.iter().map(|spec| {
            let providers = config
                .providers_of(&spec.name)
                .map(|(_, p)| &p.name)
                .collect();
            (&spec.name, providers)
        }),
    )
}

fn topology_from<'a>(
    config: &Config,
    kinds: impl Iterator<Item = (&'a Name, Vec<&'a Name>)>,
) -> Topology {
    let mut topology = Topology::new(config.retry.tiers.clone(), config.amqp.delivery_limit)
        .with_ledger(config.ledger.enabled);
    for (kind, providers) in kinds {
        topology = topology.with_kind(kind);
        for p in providers {
            topology = topology.with_provider(kind, p);
        }
    }
    topology
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
        topology_from(
            config,
            self.kinds
                .iter()
                .map(|(spec, providers)| (&spec.name, providers.keys().collect())),
        )
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

/// A kind declared in `[[kinds]]`: its operations and schemas come from configuration, and
/// every provider of it is a generic `type = "http"` provider.
#[derive(Debug, Clone)]
pub struct ConfiguredKind {
    spec: KindSpec,
    listen: SocketAddr,
}

/// Where a configured kind's worker listens unless its entry or `worker.listen` says: one
/// port per kind from 9110 on, after the built-in kinds' 9101 to 9103.
const FIRST_CONFIGURED_PORT: u16 = 9110;

impl ConfiguredKind {
    /// Builds `[[kinds]]` entry `index`, reading schema files; errors name the key.
    pub fn from_config(config: &Config, index: usize) -> Result<Self, ConfigError> {
        let entry = config
            .kinds
            .get(index)
            .ok_or_else(|| ConfigError::invalid(format!("kinds[{index}]"), "no such entry"))?;
        let operations = entry
            .operations
            .iter()
            .enumerate()
            .map(|(j, o)| {
                let key = format!("kinds[{index}].operations[{j}]");
                let spec = OperationSpec {
                    name: o.name.clone(),
                    schema: o.schema(&key)?,
                    max_wait: o
                        .max_wait
                        .unwrap_or(switchyard_core::kind::DEFAULT_MAX_WAIT),
                };
                PayloadValidator::new([&KindSpec {
                    name: entry.name.clone(),
                    operations: vec![spec.clone()],
                }])
                .map_err(|e| ConfigError::invalid(format!("{key}.schema"), e.to_string()))?;
                Ok(spec)
            })
            .collect::<Result<_, ConfigError>>()?;
        let port = FIRST_CONFIGURED_PORT.saturating_add(u16::try_from(index).unwrap_or(u16::MAX));
        Ok(Self {
            spec: KindSpec {
                name: entry.name.clone(),
                operations,
            },
            listen: entry
                .listen
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], port))),
        })
    }
}

impl Kind for ConfiguredKind {
    fn spec(&self) -> KindSpec {
        self.spec.clone()
    }

    fn default_listen(&self) -> SocketAddr {
        self.listen
    }

    fn code_provider(
        &self,
        _config: &ProviderConfig,
        _index: usize,
        _ctx: &ProviderContext,
    ) -> Result<Option<CodeProvider>, ConfigError> {
        Ok(None)
    }
}

/// The built-in kinds followed by every `[[kinds]]` entry; a configured kind may not reuse a
/// built-in kind's name (a provider adds operations to a built-in kind instead).
pub fn with_configured_kinds(
    builtin: Vec<Arc<dyn Kind>>,
    config: &Config,
) -> Result<Vec<Arc<dyn Kind>>, ConfigError> {
    let mut kinds = builtin;
    for index in 0..config.kinds.len() {
        let kind = ConfiguredKind::from_config(config, index)?;
        if kinds.iter().any(|k| k.spec().name == kind.spec.name) {
            return Err(ConfigError::invalid(
                format!("kinds[{index}].name"),
                format!(
                    "{:?} is a built-in kind: add operations to it in a provider's `operations`",
                    kind.spec.name.as_str()
                ),
            ));
        }
        kinds.push(Arc::new(kind));
    }
    for (index, p) in config.providers.iter().enumerate() {
        if !kinds.iter().any(|k| k.spec().name == p.kind) {
            return Err(ConfigError::invalid(
                format!("{}.kind", ProviderConfig::key(index)),
                format!(
                    "no kind {:?}: declare it in [[kinds]] or use a built-in kind",
                    p.kind.as_str()
                ),
            ));
        }
    }
    Ok(kinds)
}

/// The payload schemas of `specs`' operations, and of the operations their providers add
/// with a schema. A provider may not give a schema to an operation its kind defines: the
/// kind's schema is the one every provider of it accepts.
pub fn payload_validator<'a>(
    specs: impl IntoIterator<Item = &'a KindSpec>,
    config: &Config,
) -> Result<PayloadValidator, ConfigError> {
    let specs: Vec<&KindSpec> = specs.into_iter().collect();
    let mut validator = PayloadValidator::new(specs.iter().copied())
        .map_err(|e| ConfigError::invalid("kinds", e.to_string()))?;
    for spec in specs {
        for (index, p) in config.providers_of(&spec.name) {
            for op in p.operations.declared() {
                let key = format!("{}.operations.{}", ProviderConfig::key(index), op.name);
                let Some(schema) = op.schema(&key)? else {
                    continue;
                };
                if spec.operation(op.name.as_str()).is_some() {
                    return Err(ConfigError::invalid(
                        format!("{key}.schema"),
                        format!(
                            "kind {:?} defines {:?} and its schema: a provider cannot replace it",
                            spec.name.as_str(),
                            op.name.as_str()
                        ),
                    ));
                }
                validator
                    .add_provider_operation(&spec.name, &p.name, &op.name, &schema)
                    .map_err(|e| ConfigError::invalid(format!("{key}.schema"), e.to_string()))?;
            }
        }
    }
    Ok(validator)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outbound(toml: &str) -> Vec<OutboundSettings> {
        let config = Config::from_toml_str(toml).unwrap();
        config
            .providers
            .iter()
            .map(|p| provider_context(&config, p).outbound)
            .collect()
    }

    const PROVIDERS: &str = r#"
[[providers]]
name = "plain"
kind = "payment"
type = "http"
base_url = "https://plain.example"
operations = ["charge"]

[[providers]]
name = "busy"
kind = "payment"
type = "http"
base_url = "https://busy.example"
operations = ["charge"]
concurrency = 200
http2 = true
"#;

    #[test]
    fn http2_is_off_unless_asked_and_a_provider_may_ask_alone() {
        let o = outbound(PROVIDERS);
        assert!(!o[0].http2);
        assert!(o[1].http2);
        let o = outbound(&format!("[outbound]\nhttp2 = true\n{PROVIDERS}"));
        assert!(o[0].http2 && o[1].http2);
    }

    #[test]
    fn a_provider_keeps_as_many_idle_connections_as_it_makes_calls_at_once() {
        let o = outbound(&format!("[worker]\nconcurrency = 100\n{PROVIDERS}"));
        assert_eq!(o[0].pool_max_idle_per_host, 100);
        assert_eq!(o[1].pool_max_idle_per_host, 200);
        let o = outbound(&format!("[worker]\nconcurrency = 8\n{PROVIDERS}"));
        assert_eq!(
            o[0].pool_max_idle_per_host, 64,
            "never fewer than the default"
        );
    }
}
