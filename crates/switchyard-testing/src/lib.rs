//! Test support for Switchyard's broker and end-to-end tests.
//!
//! Every test gets its own RabbitMQ virtual host (created through the management API and
//! deleted at the end), so tests run in parallel against the one real broker without seeing
//! each other's queues, and leave nothing behind. Nothing here mocks the broker: when it is
//! unreachable the helpers panic with instructions, they never skip.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod database;
mod fleet;
mod vhost;

pub use database::TestDatabase;

pub use fleet::{
    EASYPOST_KEY, EventLog, ONESHOT_PROVIDER, POLLED_PROVIDER, SENDGRID_KEY, STRIPE_KEY, TOKEN,
    TWILIO_TOKEN, TestFleet, TestFleetOptions, WEBHOOK_PROVIDER, WEBHOOK_SECRET, free_port,
};
pub use vhost::{TestVhost, management_url};
