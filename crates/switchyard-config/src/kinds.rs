//! `[[kinds]]` entries and declared operations: new integration kinds, and operations a
//! provider adds to a kind, in configuration alone.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use serde_json::Value;
use switchyard_core::Name;

use crate::ConfigError;
use crate::provider::ProviderOptions;

/// One `[[kinds]]` entry: an integration kind that no crate defines, served by the generic
/// worker (`switchyard-worker --kind <name>`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KindConfig {
    /// The `{kind}` segment of routing keys and queue names.
    pub name: Name,
    /// Where its worker serves `/healthz`, `/readyz` and `/metrics` when `worker.listen` is
    /// unset.
    #[serde(default)]
    pub listen: Option<SocketAddr>,
    /// Its operations, each with the JSON Schema its payload must satisfy.
    pub operations: Vec<KindOperation>,
}

/// An operation of a configured kind.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KindOperation {
    /// The operation name.
    pub name: Name,
    /// The payload's JSON Schema, inline.
    #[serde(default)]
    pub schema: Option<Value>,
    /// Or a file holding it (JSON), relative to the working directory.
    #[serde(default)]
    pub schema_file: Option<PathBuf>,
    /// How long a command may wait for a long-running provider when it has no `deadline`
    /// (a day unless set).
    #[serde(default, with = "humantime_serde")]
    pub max_wait: Option<Duration>,
}

impl KindOperation {
    /// The schema, read from its file when it has one; `key` names the entry in errors.
    pub fn schema(&self, key: &str) -> Result<Value, ConfigError> {
        load_schema(key, self.schema.as_ref(), self.schema_file.as_ref())?.ok_or_else(|| {
            ConfigError::invalid(
                key,
                "an operation of a configured kind needs `schema` or `schema_file`",
            )
        })
    }
}

/// A provider's `operations`: each a name (`"charge"`) or a table declaring it
/// (`{ name = "capture", schema = {...}, method = "POST", ... }`).
#[derive(Debug, Clone, Default)]
pub struct Operations {
    names: Vec<Name>,
    declared: Vec<OperationConfig>,
}

/// An operation declared as a table in a provider's `operations`.
#[derive(Debug, Clone, Deserialize)]
pub struct OperationConfig {
    /// The operation name.
    pub name: Name,
    /// The payload's JSON Schema, for an operation the provider adds to its kind.
    #[serde(default)]
    pub schema: Option<Value>,
    /// Or a file holding it (JSON), relative to the working directory.
    #[serde(default)]
    pub schema_file: Option<PathBuf>,
    /// Everything else: how the provider type calls this operation, checked by it.
    #[serde(flatten)]
    pub options: ProviderOptions,
}

impl OperationConfig {
    /// The declared schema, read from its file when it has one.
    pub fn schema(&self, key: &str) -> Result<Option<Value>, ConfigError> {
        load_schema(key, self.schema.as_ref(), self.schema_file.as_ref())
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OperationEntry {
    Name(Name),
    Declared(OperationConfig),
}

impl<'de> Deserialize<'de> for Operations {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let entries = Vec::<OperationEntry>::deserialize(d)?;
        let mut out = Self::default();
        for e in entries {
            match e {
                OperationEntry::Name(n) => out.names.push(n),
                OperationEntry::Declared(o) => {
                    out.names.push(o.name.clone());
                    out.declared.push(o);
                }
            }
        }
        Ok(out)
    }
}

impl Operations {
    /// Every operation's name, in the order given.
    pub fn names(&self) -> &[Name] {
        &self.names
    }

    /// Whether none is listed.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// How many are listed.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// The operations declared as tables.
    pub fn declared(&self) -> &[OperationConfig] {
        &self.declared
    }

    /// The table declaring `name`, if it was declared as one.
    pub fn get(&self, name: &str) -> Option<&OperationConfig> {
        self.declared.iter().find(|o| o.name == *name)
    }

    /// From plain names (tests, code).
    pub fn from_names(names: Vec<Name>) -> Self {
        Self {
            names,
            declared: Vec::new(),
        }
    }
}

fn load_schema(
    key: &str,
    inline: Option<&Value>,
    file: Option<&PathBuf>,
) -> Result<Option<Value>, ConfigError> {
    match (inline, file) {
        (Some(_), Some(_)) => Err(ConfigError::invalid(
            key,
            "give `schema` or `schema_file`, not both",
        )),
        (Some(v), None) => Ok(Some(v.clone())),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                ConfigError::invalid(
                    format!("{key}.schema_file"),
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            serde_json::from_str(&text).map(Some).map_err(|e| {
                ConfigError::invalid(
                    format!("{key}.schema_file"),
                    format!("{} is not JSON: {e}", path.display()),
                )
            })
        }
        (None, None) => Ok(None),
    }
}

pub(crate) fn validate_kinds(kinds: &[KindConfig]) -> Result<(), ConfigError> {
    let mut seen = std::collections::HashSet::new();
    for (i, k) in kinds.iter().enumerate() {
        if !seen.insert(k.name.clone()) {
            return Err(ConfigError::invalid(
                format!("kinds[{i}].name"),
                format!("kind {:?} is declared twice", k.name.as_str()),
            ));
        }
        if k.operations.is_empty() {
            return Err(ConfigError::invalid(
                format!("kinds[{i}].operations"),
                "a kind needs at least one operation",
            ));
        }
        let mut ops = std::collections::HashSet::new();
        for (j, o) in k.operations.iter().enumerate() {
            let key = format!("kinds[{i}].operations[{j}]");
            if !ops.insert(o.name.clone()) {
                return Err(ConfigError::invalid(
                    key,
                    format!("operation {:?} is declared twice", o.name.as_str()),
                ));
            }
            o.schema(&key)?;
            if o.max_wait.is_some_and(|w| w.is_zero()) {
                return Err(ConfigError::invalid(
                    format!("{key}.max_wait"),
                    "must be longer than zero",
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::Config;

    const CRM: &str = r#"
[[kinds]]
name = "crm"
[[kinds.operations]]
name = "upsert_contact"
schema = { type = "object", required = ["email"] }

[[providers]]
name = "contacts"
kind = "crm"
type = "http"
base_url = "https://crm.example/api"
operations = ["ping", { name = "upsert_contact", method = "PUT", path = "contacts/{email}" }]
"#;

    #[test]
    fn kinds_and_declared_operations_parse() {
        let c = Config::from_toml_str(CRM).unwrap();
        assert_eq!(c.kinds[0].name.as_str(), "crm");
        let ops = &c.providers[0].operations;
        assert_eq!(
            ops.names().iter().map(|n| n.as_str()).collect::<Vec<_>>(),
            ["ping", "upsert_contact"]
        );
        assert!(ops.get("ping").is_none());
        let declared = ops.get("upsert_contact").unwrap();
        assert!(declared.schema.is_none());
        assert!(format!("{:?}", declared.options).contains("contacts/{email}"));
    }

    #[test]
    fn wrong_kinds_are_refused_naming_the_key() {
        for (toml, key) in [
            (
                CRM.replace("schema = { type = \"object\", required = [\"email\"] }", ""),
                "kinds[0].operations[0]",
            ),
            (
                format!(
                    "{CRM}\n[[kinds]]\nname = \"crm\"\noperations = [{{ name = \"x\", schema = {{}} }}]\n"
                ),
                "kinds[1].name",
            ),
            (
                "[[kinds]]\nname = \"tax\"\noperations = []\n".to_owned(),
                "kinds[0].operations",
            ),
            (
                CRM.replace(
                    "operations = [\"ping\",",
                    "operations = [\"ping\", \"ping\",",
                ),
                "providers[0].operations[1]",
            ),
            (
                CRM.replace(
                    "schema = {",
                    "schema_file = \"/nonexistent.json\"\nschema = {",
                ),
                "kinds[0].operations[0]",
            ),
            (
                CRM.replace(
                    "schema = { type = \"object\", required = [\"email\"] }",
                    "schema_file = \"/nonexistent.json\"",
                ),
                "kinds[0].operations[0].schema_file",
            ),
        ] {
            let e = Config::from_toml_str(&toml).unwrap_err().to_string();
            assert!(e.contains(key), "{key} not in {e}");
        }
    }
}
