//! `switchyard-notification`: the notification worker.

use std::process::ExitCode;
use std::sync::Arc;

/// mimalloc: glibc's allocator spent a sixth of a worker's CPU under load (design note 0001).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    switchyard_worker::main(Arc::new(switchyard_notification::Notification))
}
