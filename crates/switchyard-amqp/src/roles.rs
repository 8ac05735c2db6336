//! Broker users with least privilege: one per role, each allowed only what its part of the
//! contract needs (RabbitMQ's configure, write and read permissions, regular expressions over
//! exchange and queue names in one vhost).
//!
//! What matters most is the border between the core app and Switchyard: a core-app user may
//! publish commands and read the events it binds its own queues to, and nothing else, so it
//! cannot publish a forged event, callback, retry or dead letter. Inside Switchyard, the
//! ingress cannot publish events or attempt records either; workers, the ledger and operators
//! publish what the lifecycle needs (events, attempts, retries, dead letters).
//!
//! RabbitMQ does not tell exchanges from queues in a permission, so `switchyard.callbacks`
//! and `switchyard.unroutable` (an exchange and a queue each) go together.

use std::fmt;

use switchyard_core::Name;

use crate::topology::{COMMANDS_EXCHANGE, EVENTS_EXCHANGE};

/// A role a broker user plays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// The application that sends commands and subscribes to events, with its own queues
    /// named by a prefix (`app.` by default).
    CoreApp {
        /// The prefix of the queues the core app declares, e.g. `app.`.
        queue_prefix: String,
    },
    /// The HTTP ingress: declares the topology, publishes commands and callbacks.
    Ingress,
    /// The workers of one kind.
    Worker(Name),
    /// The ledger and its resolver.
    Ledger,
    /// A person with the CLI: topology, dead letters, replays, resolutions.
    Operator,
}

/// What a user may do in the vhost: RabbitMQ's three permission expressions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permissions {
    /// Declare and delete exchanges and queues.
    pub configure: String,
    /// Publish to exchanges; bind queues (a binding needs write on the queue).
    pub write: String,
    /// Consume from queues; bind from exchanges (a binding needs read on the exchange).
    pub read: String,
}

/// Every Switchyard exchange and queue.
const ALL: &str = r"^switchyard\..*";

/// The queues Switchyard declares and binds, and the two names that are an exchange and a
/// queue: what the ingress may write (bindings, commands, callbacks), without the events,
/// attempts, dead-letter and retry exchanges.
const INGRESS_WRITE: &str =
    r"^switchyard\.(commands|callbacks|unroutable|(work|retry|dlq|abandoned|delay|ledger)\..+)$";

/// The exchanges the ingress binds queues to.
const INGRESS_READ: &str =
    r"^switchyard\.(commands|events|attempts|callbacks|unroutable|dead|retry)$";

fn escaped(name: &str) -> String {
    name.replace('.', r"\.")
}

impl Role {
    /// The user name of this role: `{prefix}{role}`, e.g. `switchyard-worker-payment`.
    pub fn user(&self, prefix: &str) -> String {
        format!("{prefix}{self}")
    }

    /// What this role may do.
    pub fn permissions(&self) -> Permissions {
        match self {
            Self::CoreApp { queue_prefix } => {
                let own = format!("{}.*", escaped(queue_prefix));
                Permissions {
                    configure: format!("^{own}"),
                    write: format!("^({}|{own})$", escaped(COMMANDS_EXCHANGE)),
                    read: format!("^({}|{own})$", escaped(EVENTS_EXCHANGE)),
                }
            }
            Self::Ingress => Permissions {
                configure: ALL.to_owned(),
                write: INGRESS_WRITE.to_owned(),
                read: INGRESS_READ.to_owned(),
            },
            Self::Worker(_) | Self::Ledger | Self::Operator => Permissions {
                configure: ALL.to_owned(),
                write: ALL.to_owned(),
                read: ALL.to_owned(),
            },
        }
    }

    /// The management tags of the user: operators may use the management API (`switchyard
    /// topology check`, queue depths), services need none.
    pub fn tags(&self) -> &'static str {
        match self {
            Self::Operator => "management",
            _ => "",
        }
    }

    /// Every role of a deployment with these worker kinds.
    pub fn all(kinds: &[Name], queue_prefix: &str) -> Vec<Role> {
        let mut roles = vec![
            Self::CoreApp {
                queue_prefix: queue_prefix.to_owned(),
            },
            Self::Ingress,
        ];
        roles.extend(kinds.iter().cloned().map(Self::Worker));
        roles.extend([Self::Ledger, Self::Operator]);
        roles
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::CoreApp { .. } => f.write_str("core-app"),
            Self::Ingress => f.write_str("ingress"),
            Self::Worker(kind) => write!(f, "worker-{kind}"),
            Self::Ledger => f.write_str("ledger"),
            Self::Operator => f.write_str("operator"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::topology::{
        ATTEMPTS_EXCHANGE, CALLBACKS_EXCHANGE, DEAD_EXCHANGE, Declaration, RETRY_EXCHANGE, Topology,
    };

    fn matches(pattern: &str, name: &str) -> bool {
        regex::Regex::new(pattern).unwrap().is_match(name)
    }

    #[test]
    fn a_core_app_publishes_commands_only_and_reads_events_into_its_own_queues() {
        let p = Role::CoreApp {
            queue_prefix: "app.".into(),
        }
        .permissions();
        assert!(matches(&p.write, COMMANDS_EXCHANGE));
        assert!(matches(&p.write, "app.events"));
        for forbidden in [
            EVENTS_EXCHANGE,
            CALLBACKS_EXCHANGE,
            DEAD_EXCHANGE,
            RETRY_EXCHANGE,
            ATTEMPTS_EXCHANGE,
            "switchyard.work.payment.stripe",
            "appx",
        ] {
            assert!(!matches(&p.write, forbidden), "{forbidden}");
        }
        assert!(matches(&p.read, EVENTS_EXCHANGE) && matches(&p.read, "app.events"));
        assert!(!matches(&p.read, "switchyard.work.payment.stripe"));
        assert!(!matches(&p.read, "switchyard.dlq.payment"));
        assert!(matches(&p.configure, "app.events") && !matches(&p.configure, "switchyard.x"));
    }

    #[test]
    fn the_ingress_binds_every_queue_but_publishes_no_event() {
        let kinds: Vec<Name> = ["payment", "shipping"]
            .iter()
            .map(|k| k.parse().unwrap())
            .collect();
        let mut topology = Topology::new(vec![Duration::from_secs(1), Duration::from_secs(30)], 5)
            .with_ledger(true);
        let stripe: Name = "stripe".parse().unwrap();
        for k in &kinds {
            topology = topology.with_kind(k).with_provider(k, &stripe);
        }
        let p = Role::Ingress.permissions();
        let plan = topology.plan();
        assert!(plan.len() > 10, "{plan:?}");
        for d in plan {
            match d {
                Declaration::Queue { name, .. } => {
                    assert!(matches(&p.write, &name), "the ingress binds {name}");
                    assert!(matches(&p.configure, &name), "{name}");
                }
                Declaration::Exchange { name, .. } => {
                    assert!(matches(&p.read, &name), "the ingress binds from {name}");
                    assert!(matches(&p.configure, &name), "{name}");
                }
                _ => {}
            }
        }
        assert!(matches(&p.write, COMMANDS_EXCHANGE));
        for forbidden in [
            EVENTS_EXCHANGE,
            ATTEMPTS_EXCHANGE,
            DEAD_EXCHANGE,
            RETRY_EXCHANGE,
        ] {
            assert!(!matches(&p.write, forbidden), "{forbidden}");
        }
    }
}
