//! Integration kinds and their operations' payload schemas.

use std::collections::HashMap;

use serde_json::Value;

use crate::command::InvalidCommand;
use crate::name::Name;

/// One operation of a kind, with the JSON Schema its payload must satisfy.
#[derive(Debug, Clone)]
pub struct OperationSpec {
    /// The operation name, e.g. `charge`.
    pub name: Name,
    /// The payload's JSON Schema, generated from the kind crate's Rust type.
    pub schema: Value,
    /// How long a command may wait for a long-running provider when it has no `deadline`.
    pub max_wait: std::time::Duration,
}

/// [`OperationSpec::max_wait`] unless a kind says otherwise: a day.
pub const DEFAULT_MAX_WAIT: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

impl OperationSpec {
    /// The same operation with another default wait.
    pub fn with_max_wait(mut self, max_wait: std::time::Duration) -> Self {
        self.max_wait = max_wait;
        self
    }

    /// The spec of an operation whose payload is the Rust type `T`.
    pub fn of<T: schemars::JsonSchema>(name: &str) -> Self {
        Self {
            // Operation names are literals in the kind crates; a bad one is a programming error
            // caught by every test that builds the kind.
            name: Name::new(name).unwrap_or_else(|e| panic!("operation name: {e}")),
            schema: schemars::schema_for!(T).to_value(),
            max_wait: DEFAULT_MAX_WAIT,
        }
    }
}

/// An integration kind: its name and its operations.
#[derive(Debug, Clone)]
pub struct KindSpec {
    /// The kind name, e.g. `payment`.
    pub name: Name,
    /// The operations every provider of this kind may offer.
    pub operations: Vec<OperationSpec>,
}

impl KindSpec {
    /// The operation called `name`, if the kind defines it.
    pub fn operation(&self, name: &str) -> Option<&OperationSpec> {
        self.operations.iter().find(|o| o.name == *name)
    }
}

/// Compiled payload schemas of every kind's operations.
#[derive(Debug, Default)]
pub struct PayloadValidator {
    /// By kind, provider (`None`: the kind's own operation) and operation.
    validators: HashMap<(Name, Option<Name>, Name), jsonschema::Validator>,
}

fn compile(
    kind: &Name,
    operation: &Name,
    schema: &Value,
) -> Result<jsonschema::Validator, BadSchema> {
    jsonschema::validator_for(schema).map_err(|e| BadSchema {
        kind: kind.clone(),
        operation: operation.clone(),
        message: e.to_string(),
    })
}

/// A schema that does not compile.
#[derive(Debug, thiserror::Error)]
#[error("schema of {kind}.{operation} does not compile: {message}")]
pub struct BadSchema {
    kind: Name,
    operation: Name,
    message: String,
}

impl PayloadValidator {
    /// Compiles the schemas of `kinds`.
    pub fn new<'a>(kinds: impl IntoIterator<Item = &'a KindSpec>) -> Result<Self, BadSchema> {
        let mut validators = HashMap::new();
        for kind in kinds {
            for op in &kind.operations {
                let v = compile(&kind.name, &op.name, &op.schema)?;
                validators.insert((kind.name.clone(), None, op.name.clone()), v);
            }
        }
        Ok(Self { validators })
    }

    /// Adds the schema of an operation that one provider adds to its kind.
    pub fn add_provider_operation(
        &mut self,
        kind: &Name,
        provider: &Name,
        operation: &Name,
        schema: &Value,
    ) -> Result<(), BadSchema> {
        let v = compile(kind, operation, schema)?;
        self.validators
            .insert((kind.clone(), Some(provider.clone()), operation.clone()), v);
        Ok(())
    }

    /// Validates a payload against the kind's schema of the operation, or the schema the
    /// provider declared with it. An operation a provider names without a schema accepts any
    /// JSON object.
    pub fn validate(
        &self,
        kind: &Name,
        provider: &Name,
        operation: &Name,
        payload: &Value,
    ) -> Result<(), InvalidCommand> {
        let Some(v) = self
            .validators
            .get(&(kind.clone(), None, operation.clone()))
            .or_else(|| {
                self.validators
                    .get(&(kind.clone(), Some(provider.clone()), operation.clone()))
            })
        else {
            return Ok(());
        };
        match v.iter_errors(payload).next() {
            None => Ok(()),
            Some(err) => {
                let pointer = err.instance_path().to_string();
                let field = std::iter::once("payload")
                    .chain(pointer.split('/').filter(|s| !s.is_empty()))
                    .collect::<Vec<_>>()
                    .join(".");
                Err(InvalidCommand::field(None, field, err.to_string()))
            }
        }
    }
}
