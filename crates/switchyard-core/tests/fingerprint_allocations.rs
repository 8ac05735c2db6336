//! Every delivery is fingerprinted once (the journal compares it with the command's first
//! delivery), so a fingerprint's allocations are paid per command. dhat's testing mode counts
//! them exactly, so the figure is the same on any machine. This binary holds one test: dhat
//! counts the whole process, and a second test running beside it would be counted too.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use switchyard_core::Command;

#[global_allocator]
static ALLOCATOR: dhat::Alloc = dhat::Alloc;

/// A charge of about 1 KiB, shaped as `switchyard bench` sends it, with nested objects.
fn command() -> Command {
    serde_json::from_value(serde_json::json!({
        "id": "0190b3f4-7f6e-7c3a-9d2e-3b1f2a4c5d6e",
        "kind": "payment", "provider": "stripe", "operation": "charge",
        "payload": {
            "amount": 1999, "currency": "usd", "payment_method": "pm_card_visa",
            "customer": "cus_bench", "description": "x".repeat(960),
            "shipping": {"name": "A. Customer", "address": {"city": "Lyon", "lines": ["1 rue", "2e"]}},
        },
        "created_at": "2026-11-25T10:00:00Z"
    }))
    .unwrap()
}

/// The payload is hashed where it stands: one list of keys per object (to sort them) and the
/// hex digest, not a copy of the payload and a rendering of it.
#[test]
fn fingerprinting_does_not_copy_the_payload() {
    let c = command();
    let _profiler = dhat::Profiler::builder().testing().build();
    let before = dhat::HeapStats::get().total_blocks;
    std::hint::black_box(c.fingerprint());
    let made = dhat::HeapStats::get().total_blocks - before;
    // Three objects (the payload, `shipping`, `address`) and the digest's text.
    dhat::assert!(
        made <= 4,
        "fingerprinting a 1 KiB command allocated {made} times"
    );
}
