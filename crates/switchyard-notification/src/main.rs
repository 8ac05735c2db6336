//! `switchyard-notification`: the notification worker.

use std::process::ExitCode;
use std::sync::Arc;

fn main() -> ExitCode {
    switchyard_worker::main(Arc::new(switchyard_notification::Notification))
}
