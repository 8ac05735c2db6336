//! `switchyard-worker --kind <name>`: the worker of a kind declared in `[[kinds]]`.

use std::process::ExitCode;

/// mimalloc: glibc's allocator spent a sixth of a worker's CPU under load (design note 0001).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    switchyard_worker::main_configured()
}
