//! Switchyard on RabbitMQ.
//!
//! This crate owns the broker side of the contract: one supervised connection per process
//! that recovers by itself ([`Broker`]), the declared topology ([`Topology`]), a publisher
//! that only reports success after a broker confirm ([`Publisher`]) and a consumer loop that
//! survives reconnects ([`consume`]). It does not know what a command means: the worker and
//! the ingress decide that.

mod broker;
mod consumer;
mod headers;
pub mod messages;
mod publisher;
pub mod roles;
pub mod spans;
pub mod topology;

pub use broker::{Broker, BrokerSettings, Closed, InvalidUrl, Session};
pub use consumer::{ConsumeSettings, consume, consume_in_order};
pub use headers::{HeaderRead, Headers, broker_death, broker_death_reason};
pub use lapin;
pub use lapin::message::Delivery;
pub use publisher::{Outgoing, PublishError, Publisher, short_string};
pub use topology::Topology;
