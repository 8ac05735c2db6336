//! Deterministic identifiers: the provider idempotency key of a command, and the command id
//! the ingress derives from a client's idempotency key.

use uuid::Uuid;

use crate::command::{IdempotencyKey, Identity};
use crate::name::Name;
use crate::secret::Secret;

/// A secret namespace for UUIDv5 derivations. Keeping it secret means nobody outside can
/// predict the idempotency keys Switchyard sends to providers.
#[derive(Debug, Clone)]
pub struct IdempotencyNamespace(Secret<Uuid>);

impl IdempotencyNamespace {
    /// Derives the namespace from a configured secret string.
    pub fn from_secret(secret: &Secret<String>) -> Self {
        Self(Secret::new(Uuid::new_v5(
            &Uuid::NAMESPACE_OID,
            secret.expose().as_bytes(),
        )))
    }

    /// The key sent to the provider for `operation` of a command with `identity` (its
    /// idempotency key, else its id): the same on every attempt, redelivery and dead-letter
    /// replay, and for every command of one identity, because it depends on nothing else.
    pub fn provider_key(&self, identity: &Identity, operation: &Name) -> Uuid {
        let mut name = identity.as_str().as_bytes().to_vec();
        name.push(b':');
        name.extend_from_slice(operation.as_str().as_bytes());
        Uuid::new_v5(self.0.expose(), &name)
    }

    /// The command id for a client's idempotency key: the same key always means the same
    /// command.
    pub fn command_id(&self, key: &IdempotencyKey) -> Uuid {
        let mut name = b"command:".to_vec();
        name.extend_from_slice(key.as_str().as_bytes());
        Uuid::new_v5(self.0.expose(), &name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_stable_and_scoped() {
        let ns = IdempotencyNamespace::from_secret(&"s3cret".into());
        let other = IdempotencyNamespace::from_secret(&"other".into());
        let id = Identity::of_id(Uuid::now_v7());
        let id = &id;
        let charge: Name = "charge".parse().unwrap();
        let refund: Name = "refund".parse().unwrap();
        assert_eq!(ns.provider_key(id, &charge), ns.provider_key(id, &charge));
        assert_ne!(ns.provider_key(id, &charge), ns.provider_key(id, &refund));
        assert_ne!(
            ns.provider_key(id, &charge),
            other.provider_key(id, &charge)
        );
        let key = IdempotencyKey::try_from("order-42".to_owned()).unwrap();
        assert_eq!(ns.command_id(&key), ns.command_id(&key));
        assert_eq!(ns.command_id(&key).get_version_num(), 5);
    }
}
