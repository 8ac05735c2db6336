//! `switchyard-sandbox` owns the local HTTPS emulator that stands in for real providers in
//! tests, benchmarks and `switchyard up`. It emulates the generic HTTP provider of the wire
//! contract (section 6) with Stripe's idempotency semantics, lets a test script the fate of
//! each attempt of a command (errors, `Retry-After`, hangs, lost responses, slowness), and
//! exposes what it saw (keys, body hashes, headers, effect counts) so tests can assert
//! "one key on every attempt" and "exactly one effect". It generates its own CA and serving
//! certificate so clients verify TLS against a real trust root. It does not own any client
//! code, retry policy or provider-specific API shapes: those live in the kind crates.

mod callback;
mod config;
mod control;
mod crm;
mod easypost;
mod paypal;
mod provider;
mod scenario;
mod sendgrid;
mod server;
mod state;
mod stripe;
mod tls;
mod twilio;
mod vendor;

pub use config::{SandboxConfig, WebhookTarget};
pub use crm::CRM_API_KEY;
pub use paypal::{PAYPAL_CLIENT_ID, PAYPAL_CLIENT_SECRET};
pub use scenario::{Finish, PAYPAL_422_ISSUES, Step, StepParseError};
pub use server::Sandbox;
