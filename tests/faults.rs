//! A crash at every named step between receiving a command and acknowledging it (design note
//! 0001): the payment worker is started with one fault point armed, aborts there, and a
//! replacement without faults finishes the work. For an idempotent provider and for one that
//! takes no idempotency key alike: exactly one terminal event per command, one effect at the
//! provider, nothing lost. The ingress's points likewise, with the client repeating its request.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::json;
use switchyard_core::Status;
use switchyard_e2e::binary;
use switchyard_testing::{ONESHOT_PROVIDER, POLLED_PROVIDER, TestFleet, TestFleetOptions};
use tokio::process::{Child, Command as Process};

fn spawn(name: &str, config: &Path, faults: Option<&str>) -> Child {
    let mut cmd = Process::new(binary(name));
    cmd.arg("--config")
        .arg(config)
        .env("RUST_LOG", "warn")
        .env_remove("SWITCHYARD_FAULTS")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    if let Some(f) = faults {
        cmd.env("SWITCHYARD_FAULTS", f);
    }
    cmd.spawn().unwrap()
}

/// Waits (up to 30 s) for `child`, armed with a fault point, to abort there; `what` names the
/// point or the step in the panic when it never fires or exits cleanly.
async fn aborts(child: &mut Child, what: &str) {
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .unwrap_or_else(|_| panic!("{what}: the point never fired"))
        .unwrap();
    assert!(!status.success(), "{what}: the process aborted");
}

/// Kills `child` and reaps it.
async fn stop(child: &mut Child) {
    child.start_kill().unwrap();
    let _ = child.wait().await;
}

/// A test fleet for the real binaries, and the config file they read (in the returned
/// directory, which must live as long as they do).
async fn binaries_fleet() -> (TestFleet, tempfile::TempDir, PathBuf) {
    binaries_fleet_with(TestFleetOptions::default().delivery_limit).await
}

/// [`binaries_fleet`] with its work queues declared with `delivery_limit`.
async fn binaries_fleet_with(delivery_limit: u32) -> (TestFleet, tempfile::TempDir, PathBuf) {
    let fleet = TestFleet::start_with(TestFleetOptions {
        in_process: false,
        timeout_ms: 5_000,
        max_attempts: 4,
        delivery_limit,
        ..Default::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("switchyard.toml");
    std::fs::write(&config, &fleet.config_toml).unwrap();
    (fleet, dir, config)
}

/// Exactly one terminal event id per command (the same event delivered twice is allowed),
/// and nothing of its run after it.
fn one_outcome(events: &[switchyard_core::Event]) -> Status {
    let terminals: HashSet<_> = events
        .iter()
        .filter(|e| e.status.is_terminal())
        .map(|e| e.event_id)
        .collect();
    assert_eq!(terminals.len(), 1, "one terminal event: {events:#?}");
    let last = events.iter().find(|e| e.status.is_terminal()).unwrap();
    assert!(
        events.iter().all(|e| e.seq <= last.seq),
        "nothing follows the terminal event: {events:#?}"
    );
    last.status
}

/// What each point needs to be reached, and how the command must end at each provider.
struct Case {
    point: &'static str,
    steps: &'static [&'static str],
    /// The idempotent provider to use (the polled one for waits).
    idempotent_provider: &'static str,
    /// (status, effects) at the idempotent provider, then at the one without keys.
    ends: [(Status, u64); 2],
}

const DONE: (Status, u64) = (Status::Completed, 1);

const CASES: &[Case] = &[
    // (A 503 is retried once in process first: two make a delayed retry.)
    // Begun, never called. The idempotent provider is called again with the same key; the
    // other is not called again: the status check finds nothing executed, so it fails
    // (`switchyard dlq replay` runs it as a new run).
    Case {
        point: "after_begin",
        steps: &["ok"],
        idempotent_provider: "sandbox",
        ends: [DONE, (Status::Failed, 0)],
    },
    // Called, answer not decided: called again with the same key, or settled by a status
    // check that finds the one execution.
    Case {
        point: "after_provider_answer",
        steps: &["ok"],
        idempotent_provider: "sandbox",
        ends: [DONE, DONE],
    },
    Case {
        point: "after_decide",
        steps: &["ok"],
        idempotent_provider: "sandbox",
        ends: [DONE, DONE],
    },
    Case {
        point: "after_retry_publish",
        steps: &["503", "503", "ok"],
        idempotent_provider: "sandbox",
        ends: [DONE, DONE],
    },
    Case {
        point: "after_dead_letter_publish",
        steps: &["400"],
        idempotent_provider: "sandbox",
        ends: [(Status::Failed, 0), (Status::Failed, 0)],
    },
    Case {
        point: "after_wait_publish",
        steps: &["accept"],
        idempotent_provider: POLLED_PROVIDER,
        ends: [DONE, DONE],
    },
    Case {
        point: "after_terminal_event",
        steps: &["ok"],
        idempotent_provider: "sandbox",
        ends: [DONE, DONE],
    },
    Case {
        point: "before_ack",
        steps: &["ok"],
        idempotent_provider: "sandbox",
        ends: [DONE, DONE],
    },
];

#[tokio::test]
async fn a_worker_crash_at_every_step_yields_one_outcome_and_one_effect() {
    let (fleet, _dir, config) = binaries_fleet().await;
    // The resolver (waits, unknown outcomes) runs in the ledger.
    let mut ledger = spawn("switchyard-ledger", &config, None);
    for case in CASES {
        for (provider, (ends, effects)) in [case.idempotent_provider, ONESHOT_PROVIDER]
            .into_iter()
            .zip(case.ends)
        {
            // One command per crash, so the point fires in its delivery and no other.
            let mut worker = spawn("switchyard-payment", &config, Some(case.point));
            fleet
                .wait_for_queue("switchyard.work.payment.sandbox")
                .await;
            let mut c = fleet.charge();
            c.provider = provider.parse().unwrap();
            fleet.scenario(c.id, case.steps).await;
            fleet.publish(&c).await;
            aborts(&mut worker, &format!("{} at {provider}", case.point)).await;
            let mut replacement = spawn("switchyard-payment", &config, None);
            let events = fleet.events.terminal(c.id, Duration::from_secs(60)).await;
            let ended = one_outcome(&events);
            assert_eq!(ended, ends, "{} at {provider}: {events:#?}", case.point);
            let view = fleet.sandbox_view(c.id).await;
            assert_eq!(
                view["effects"], effects,
                "{} at {provider}: effects of the command: {view:#}",
                case.point
            );
            stop(&mut replacement).await;
            eprintln!("{} at {provider}: {ends}, {effects} effect(s)", case.point);
        }
    }
    stop(&mut ledger).await;
    fleet.stop().await;
}

/// A worker that dies after scheduling a command's next status check, before acknowledging
/// its own check, has that check redelivered. Made again, it schedules the next check a
/// second time; without the journal's claim on each check (design note 0001) the two copies
/// went on as two chains, asking the provider twice at every step and once more after the
/// end. The sandbox answers the first five checks 503 and the sixth with the outcome: one
/// chain asks exactly six times.
#[tokio::test]
async fn a_worker_crash_after_scheduling_a_status_check_starts_no_second_chain() {
    let (fleet, _dir, config) = binaries_fleet().await;
    let mut ledger = spawn("switchyard-ledger", &config, None);
    let mut worker = spawn("switchyard-payment", &config, Some("after_check_scheduled"));
    fleet
        .wait_for_queue("switchyard.work.payment.sandbox")
        .await;
    let mut c = fleet.charge();
    c.provider = POLLED_PROVIDER.parse().unwrap();
    fleet
        .scenario(c.id, &["accept", "503", "503", "503", "503", "503"])
        .await;
    fleet.publish(&c).await;
    aborts(&mut worker, "the worker").await;
    let mut replacement = spawn("switchyard-payment", &config, None);
    let events = fleet.events.terminal(c.id, Duration::from_secs(60)).await;
    assert_eq!(one_outcome(&events), Status::Completed, "{events:#?}");
    // A second chain's last check comes at most a backoff (1 s here) after the end.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let view = fleet.sandbox_view(c.id).await;
    assert_eq!(
        view["status_checks"], 6,
        "five 503s and the answer, each asked once (check 1 twice: its redelivery): {view:#}"
    );
    stop(&mut replacement).await;
    stop(&mut ledger).await;
    fleet.stop().await;
}

/// A worker that dies during the provider call leaves its step in doubt: the provider may have
/// acted. When the command's deadline passed before the step was redelivered, the replacement
/// reported it `failed` (`expired`), under a `seq` below the `processing` already sent, so the
/// ledger and every "highest seq wins" reader kept it `processing`, while the provider had
/// charged. In doubt, the outcome is `unknown` whatever the deadline: at the provider without
/// keys a status check then finds the one execution; the one with keys (and no status check
/// here) is not called again past the deadline, since the first call may never have reached it,
/// and waits for an operator.
#[tokio::test]
async fn a_step_in_doubt_past_its_deadline_is_not_reported_failed() {
    let (fleet, _dir, config) = binaries_fleet().await;
    let mut ledger = spawn("switchyard-ledger", &config, None);
    for (provider, ends) in [
        (ONESHOT_PROVIDER, Some(Status::Completed)),
        ("sandbox", None),
    ] {
        let mut worker = spawn("switchyard-payment", &config, Some("after_provider_answer"));
        fleet
            .wait_for_queue("switchyard.work.payment.sandbox")
            .await;
        let mut c = fleet.charge();
        c.provider = provider.parse().unwrap();
        let deadline = chrono::Utc::now() + chrono::Duration::seconds(3);
        c.deadline = Some(deadline);
        fleet.scenario(c.id, &["ok"]).await;
        fleet.publish(&c).await;
        aborts(&mut worker, "the worker").await;
        let left = (deadline - chrono::Utc::now()).to_std().unwrap_or_default();
        tokio::time::sleep(left + Duration::from_millis(500)).await;
        let mut replacement = spawn("switchyard-payment", &config, None);
        let events = match ends {
            Some(ends) => {
                let events = fleet.events.terminal(c.id, Duration::from_secs(60)).await;
                assert_eq!(one_outcome(&events), ends, "at {provider}: {events:#?}");
                events
            }
            None => {
                let until = Instant::now() + Duration::from_secs(60);
                while !fleet
                    .events
                    .of(c.id)
                    .iter()
                    .any(|e| e.status == Status::Unknown)
                {
                    assert!(
                        Instant::now() < until,
                        "at {provider}: no unknown: {:#?}",
                        fleet.events.of(c.id)
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                // Nothing ends it but an operator: no terminal event follows.
                tokio::time::sleep(Duration::from_secs(2)).await;
                let events = fleet.events.of(c.id);
                assert!(
                    !events.iter().any(|e| e.status.is_terminal()),
                    "at {provider}: {events:#?}"
                );
                events
            }
        };
        let unknown = events.iter().find(|e| e.status == Status::Unknown);
        assert!(
            unknown.is_some_and(|e| e.error.as_ref().is_some_and(|x| x.code == "interrupted")),
            "at {provider}: in doubt, reported unknown: {events:#?}"
        );
        let processing = events
            .iter()
            .filter(|e| e.status == Status::Processing)
            .map(|e| e.seq)
            .max();
        assert!(
            unknown.is_some_and(|u| Some(u.seq) > processing),
            "at {provider}: the unknown event supersedes processing: {events:#?}"
        );
        let view = fleet.sandbox_view(c.id).await;
        assert_eq!(view["effects"], 1, "at {provider}: {view:#}");
        stop(&mut replacement).await;
        eprintln!("after_provider_answer past the deadline at {provider}: unknown, then {ends:?}");
    }
    stop(&mut ledger).await;
    fleet.stop().await;
}

/// Two deliveries of one step race only when the first's connection died while its worker
/// kept calling: the broker gave the message again to another worker, and both called (with one
/// key). Only the second delivery is still the broker's; the first can no longer be
/// acknowledged. Here the first wins the decision and dies before carrying it out; the second,
/// having lost, must carry out the winner's plan: acknowledging without it dropped the
/// command's last copy, and the command never had an outcome.
#[tokio::test]
async fn a_delivery_that_loses_the_decision_carries_out_the_winners() {
    let (fleet, _dir, config) = binaries_fleet().await;
    let mut ledger = spawn("switchyard-ledger", &config, None);
    let mut first = spawn("switchyard-payment", &config, Some("after_decide"));
    fleet
        .wait_for_queue("switchyard.work.payment.sandbox")
        .await;
    let named = "switchyard-payment";
    let until = Instant::now() + Duration::from_secs(30);
    let firsts = loop {
        let names = fleet.vhost.connections_named(named).await;
        if !names.is_empty() {
            break names;
        }
        assert!(
            Instant::now() < until,
            "the first worker's connection is never listed"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let mut second = spawn("switchyard-payment", &config, None);
    while fleet.vhost.connections_named(named).await.len() <= firsts.len() {
        assert!(
            Instant::now() < until + Duration::from_secs(30),
            "the second worker's connection is never listed"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Its consumer follows its connection.
    tokio::time::sleep(Duration::from_secs(1)).await;

    // The first call executes and is never answered: its worker decides when its 5 s timeout
    // ends. The second, begun 2 s in, is a replay of that execution under the same key that
    // answers after 4 s: after the first's decision, within its own timeout.
    let c = fleet.charge();
    fleet.scenario(c.id, &["lost", "slow:4000", "ok"]).await;
    fleet.publish(&c).await;
    fleet
        .events
        .reached(c.id, Status::Processing, Duration::from_secs(30))
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    for name in &firsts {
        fleet.vhost.close_connection(name).await;
    }
    aborts(&mut first, "the first worker, after deciding").await;
    let events = fleet.events.terminal(c.id, Duration::from_secs(30)).await;
    assert_eq!(one_outcome(&events), Status::Completed, "{events:#?}");
    let view = fleet.sandbox_view(c.id).await;
    assert_eq!(view["effects"], 1, "{view:#}");
    assert!(
        view["requests"].as_array().map_or(0, Vec::len) >= 2,
        "both deliveries called: {view:#}"
    );
    let statuses: Vec<String> = events
        .iter()
        .map(|e| format!("{}#{}", e.status, e.attempt))
        .collect();
    eprintln!(
        "the loser carried out the winner's decision: {}",
        statuses.join(" ")
    );
    for child in [&mut second, &mut ledger] {
        stop(child).await;
    }
    fleet.stop().await;
}

/// A stored decision this worker cannot read (written by a newer version during a rolling
/// upgrade) is left for a worker that can. It was acknowledged with a warning, and the command,
/// decided and never carried out, got no outcome at all. Here a worker dies after deciding,
/// its decision is made unreadable in the journal, and the replacement must not settle the
/// command until the decision reads again.
#[tokio::test]
async fn a_stored_decision_this_worker_cannot_read_is_left_for_one_that_can() {
    use sqlx::Connection as _;
    let (fleet, _dir, config) = binaries_fleet().await;
    let mut first = spawn("switchyard-payment", &config, Some("after_decide"));
    fleet
        .wait_for_queue("switchyard.work.payment.sandbox")
        .await;
    let c = fleet.charge();
    fleet.publish(&c).await;
    aborts(&mut first, "the worker, after deciding").await;

    sqlx::any::install_default_drivers();
    let mut db = sqlx::AnyConnection::connect(fleet.config.ledger.database_url.expose())
        .await
        .unwrap();
    let id = c.id.to_string();
    let decided: (String,) = sqlx::query_as(
        "SELECT decision FROM journal_steps WHERE command_id = $1 AND decision IS NOT NULL",
    )
    .bind(&id)
    .fetch_one(&mut db)
    .await
    .unwrap();
    let set = |text: String| {
        sqlx::query("UPDATE journal_steps SET decision = $1 WHERE command_id = $2")
            .bind(text)
            .bind(id.clone())
    };
    set(r#"{"plan":"from_the_future"}"#.to_owned())
        .execute(&mut db)
        .await
        .unwrap();

    let mut replacement = spawn("switchyard-payment", &config, None);
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        !fleet.events.of(c.id).iter().any(|e| e.status.is_terminal()),
        "settled without its decision: {:#?}",
        fleet.events.of(c.id)
    );
    // A worker that reads it (here: the decision readable again) carries it out.
    set(decided.0).execute(&mut db).await.unwrap();
    let events = fleet.events.terminal(c.id, Duration::from_secs(60)).await;
    assert_eq!(one_outcome(&events), Status::Completed, "{events:#?}");
    assert_eq!(fleet.sandbox_view(c.id).await["effects"], 1);
    stop(&mut replacement).await;
    fleet.stop().await;
}

/// A configuration change (here: `charge` taken out of the payment providers' operations)
/// reaches a worker while steps of commands admitted under the old one are still under way.
/// The new worker checks what it is handed against its own configuration, and refused them
/// as `invalid`: a decided `completed` (the provider charged) redelivered after its worker
/// died became `failed`; a call its worker died in, `failed` instead of `unknown`; a status
/// check of accepted work, `failed` while the provider worked on. A command is checked
/// against the configuration once, when it is admitted: what it began under the old one is
/// carried on.
#[tokio::test]
async fn a_configuration_change_does_not_overrule_what_a_command_began_under_the_old_one() {
    let (fleet, dir, config) = binaries_fleet().await;
    let mut ledger = spawn("switchyard-ledger", &config, None);
    let payment_ops = r#"operations = ["charge", "refund"]"#;
    assert!(fleet.config_toml.contains(payment_ops));
    let changed = dir.path().join("changed.toml");
    std::fs::write(
        &changed,
        fleet
            .config_toml
            .replace(payment_ops, r#"operations = ["refund"]"#),
    )
    .unwrap();
    for (point, provider, steps) in [
        // Decided `completed`, not yet reported: the decision is carried out.
        ("after_decide", "sandbox", &["ok"][..]),
        // In doubt at a provider without keys: `unknown`, then a status check finds the charge.
        ("after_provider_answer", ONESHOT_PROVIDER, &["ok"][..]),
        // Accepted, parked, its status checks not yet begun: they are made, and find the outcome.
        ("after_wait_publish", POLLED_PROVIDER, &["accept"][..]),
    ] {
        let mut worker = spawn("switchyard-payment", &config, Some(point));
        fleet
            .wait_for_queue("switchyard.work.payment.sandbox")
            .await;
        let mut c = fleet.charge();
        c.provider = provider.parse().unwrap();
        fleet.scenario(c.id, steps).await;
        fleet.publish(&c).await;
        aborts(&mut worker, &format!("{point} at {provider}")).await;
        let mut replacement = spawn("switchyard-payment", &changed, None);
        let events = fleet.events.terminal(c.id, Duration::from_secs(60)).await;
        assert_eq!(
            one_outcome(&events),
            Status::Completed,
            "{point} at {provider}: {events:#?}"
        );
        assert_eq!(
            fleet.sandbox_view(c.id).await["effects"],
            1,
            "{point} at {provider}"
        );
        stop(&mut replacement).await;
    }
    // A duplicate (another id, the same identity) answered `duplicate` whose worker died
    // before acknowledging it: it has no step of its own, and its redelivery was refused
    // `failed`, a second terminal event for its id. It is answered `duplicate` again.
    let key = format!("order-{}", uuid::Uuid::new_v4());
    let mut original = fleet.charge();
    original.idempotency_key = Some(key.clone().try_into().unwrap());
    let mut worker = spawn("switchyard-payment", &config, None);
    fleet.publish(&original).await;
    let events = fleet
        .events
        .terminal(original.id, Duration::from_secs(30))
        .await;
    assert_eq!(one_outcome(&events), Status::Completed, "{events:#?}");
    stop(&mut worker).await;
    let mut worker = spawn("switchyard-payment", &config, Some("before_ack"));
    let mut repeat = original.clone();
    repeat.id = uuid::Uuid::now_v7();
    fleet.publish(&repeat).await;
    aborts(
        &mut worker,
        "the worker, before acknowledging the duplicate",
    )
    .await;
    let mut replacement = spawn("switchyard-payment", &changed, None);
    // The redelivery answered: its event (the same `duplicate` again, or another) is the second.
    let deadline = Instant::now() + Duration::from_secs(30);
    while fleet.events.of(repeat.id).len() < 2 {
        assert!(
            Instant::now() < deadline,
            "the duplicate was never redelivered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let events = fleet
        .events
        .terminal(repeat.id, Duration::from_secs(1))
        .await;
    assert_eq!(one_outcome(&events), Status::Duplicate, "{events:#?}");
    assert_eq!(fleet.sandbox_view(original.id).await["effects"], 1);
    stop(&mut replacement).await;

    // A new command is checked against the new configuration.
    let mut worker = spawn("switchyard-payment", &changed, None);
    let c = fleet.charge();
    fleet.publish(&c).await;
    let events = fleet.events.terminal(c.id, Duration::from_secs(30)).await;
    assert_eq!(one_outcome(&events), Status::Failed, "{events:#?}");
    let failed = events.iter().find(|e| e.status == Status::Failed).unwrap();
    assert_eq!(
        failed.error.as_ref().unwrap().class,
        switchyard_core::ErrorClass::Invalid
    );
    assert_eq!(fleet.sandbox_view(c.id).await["effects"], 0);
    stop(&mut worker).await;
    stop(&mut ledger).await;
    fleet.stop().await;
}

/// A command its workers keep dying on is dead-lettered by the broker at the work queue's
/// delivery limit (the crash-loop guard) with nothing decided; before the abandoned queue the
/// core app never heard of it again. Every worker here aborts at its point on every delivery
/// of the command, and is replaced by another that does the same, until the broker gives up:
/// a command that never reached the provider then ends `failed` (`delivery_limit`), one whose
/// call was begun `unknown` (`delivery_limit`) and then what a status check finds.
#[tokio::test]
async fn a_command_the_broker_gives_up_on_still_gets_one_outcome() {
    // Dead-lettered at the second return: two crashes.
    let (fleet, _dir, config) = binaries_fleet_with(1).await;
    let mut ledger = spawn("switchyard-ledger", &config, None);
    for (point, provider, first) in [
        ("before_begin", "sandbox", Status::Failed),
        ("after_begin", ONESHOT_PROVIDER, Status::Unknown),
    ] {
        let mut worker = spawn("switchyard-payment", &config, Some(point));
        fleet.wait_for_queue("switchyard.abandoned.payment").await;
        let mut c = fleet.charge();
        c.provider = provider.parse().unwrap();
        fleet.scenario(c.id, &["ok"]).await;
        fleet.publish(&c).await;
        let deadline = Instant::now() + Duration::from_secs(90);
        let mut crashes = 0;
        while !fleet.events.of(c.id).iter().any(|e| e.status.is_terminal()) {
            assert!(
                Instant::now() < deadline,
                "{point}: no outcome after {crashes} crashes: {:#?}",
                fleet.events.of(c.id)
            );
            if let Ok(status) =
                tokio::time::timeout(Duration::from_millis(200), worker.wait()).await
            {
                assert!(!status.unwrap().success(), "{point}: the worker aborted");
                crashes += 1;
                assert!(crashes < 10, "{point}: the broker never gave up");
                worker = spawn("switchyard-payment", &config, Some(point));
            }
        }
        let events = fleet.events.terminal(c.id, Duration::from_secs(5)).await;
        assert_eq!(one_outcome(&events), Status::Failed, "{point}: {events:#?}");
        let given_up = events
            .iter()
            .find(|e| e.status == first)
            .unwrap_or_else(|| panic!("{point}: a {first} event: {events:#?}"));
        let code = given_up.error.as_ref().map(|e| e.code.as_str());
        assert_eq!(code, Some("delivery_limit"), "{point}: {given_up:#?}");
        assert!(crashes >= 2, "{point}: {crashes} crashes");
        let view = fleet.sandbox_view(c.id).await;
        assert_eq!(view["effects"], 0, "{point}: effects: {view:#}");
        // The broker's own dead letter stays for `switchyard dlq replay`.
        let reasons: Vec<Option<String>> = fleet
            .dead_letters("payment")
            .await
            .into_iter()
            .filter(|(_, body)| switchyard_core::command::sniff_id(body) == Some(c.id))
            .map(|(headers, _)| switchyard_cli::dlq::broker_death_reason(&headers))
            .collect();
        assert!(
            reasons.contains(&Some("delivery_limit".to_owned())),
            "{point}: dead letters of the command: {reasons:?}"
        );
        eprintln!("{point} at {provider}: {crashes} crashes, then {first} and failed");
        stop(&mut worker).await;
    }
    stop(&mut ledger).await;
    fleet.stop().await;
}

#[tokio::test]
async fn an_ingress_crash_at_every_step_loses_nothing_and_runs_once() {
    let (fleet, _dir, config) = binaries_fleet().await;
    let mut worker = spawn("switchyard-payment", &config, None);
    let url = format!("http://127.0.0.1:{}/v1/commands", fleet.ingress_port);
    let http = reqwest::Client::new();
    for point in ["after_admit", "after_command_publish"] {
        let key = format!("{point}-{}", uuid::Uuid::new_v4());
        let body = json!({"kind": "payment", "provider": ONESHOT_PROVIDER, "operation": "charge",
            "payload": {"amount": 1999, "currency": "usd", "payment_method": "pm_card_visa"},
            "idempotency_key": key});
        let post = || {
            http.post(&url)
                .bearer_auth(switchyard_testing::TOKEN)
                .json(&body)
                .send()
        };
        let mut ingress = spawn("switchyard-ingress", &config, Some(point));
        // The first request dies with the ingress: the client sees no answer.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match post().await {
                Err(_) => {}
                Ok(r) => panic!("{point}: answered {} before the fault point", r.status()),
            }
            if let Ok(Some(_)) = ingress.try_wait() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{point}: the ingress never aborted"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // The client repeats its request to a healthy ingress.
        let mut healthy = spawn("switchyard-ingress", &config, None);
        let deadline = Instant::now() + Duration::from_secs(30);
        let answer = loop {
            if let Ok(r) = post().await {
                break r;
            }
            assert!(Instant::now() < deadline, "{point}: no healthy ingress");
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert!(
            [200, 202].contains(&answer.status().as_u16()),
            "{point}: {}",
            answer.status()
        );
        let id: uuid::Uuid = answer.json::<serde_json::Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        let events = fleet.events.terminal(id, Duration::from_secs(30)).await;
        assert_eq!(
            one_outcome(&events),
            Status::Completed,
            "{point}: {events:#?}"
        );
        let view = fleet.sandbox_view(id).await;
        assert_eq!(view["effects"], 1, "{point}: {view:#}");
        stop(&mut healthy).await;
        eprintln!("{point}: the repeated request ran the command once");
    }
    stop(&mut worker).await;
    fleet.stop().await;
}

#[tokio::test]
async fn a_ledger_crash_after_its_commit_or_its_decision_changes_no_outcome() {
    let (fleet, _dir, config) = binaries_fleet().await;
    let mut worker = spawn("switchyard-payment", &config, None);
    fleet
        .wait_for_queue("switchyard.work.payment.sandbox")
        .await;
    let store = switchyard_ledger::Store::connect(fleet.config.ledger.database_url.expose())
        .await
        .unwrap();
    // after_ledger_commit: a batch written, not acknowledged; after_resolution: a wait decided
    // (by a status check of the polled provider), its event not yet published.
    for (point, provider) in [
        ("after_ledger_commit", "sandbox"),
        ("after_resolution", POLLED_PROVIDER),
    ] {
        let mut ledger = spawn("switchyard-ledger", &config, Some(point));
        let mut c = fleet.charge();
        c.provider = provider.parse().unwrap();
        fleet.publish(&c).await;
        aborts(&mut ledger, point).await;
        let mut healthy = spawn("switchyard-ledger", &config, None);
        let events = fleet.events.terminal(c.id, Duration::from_secs(60)).await;
        assert_eq!(
            one_outcome(&events),
            Status::Completed,
            "{point}: {events:#?}"
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        let view = loop {
            let view = store.command(c.id).await.unwrap().unwrap();
            if view.summary.as_ref().map(|s| s.status) == Some(Status::Completed) {
                break view;
            }
            assert!(
                Instant::now() < deadline,
                "{point}: the ledger never caught up: {view:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let ids: HashSet<_> = view.events.iter().map(|e| e.event_id).collect();
        assert_eq!(
            ids.len(),
            view.events.len(),
            "{point}: each event stored once"
        );
        assert_eq!(
            view.events
                .iter()
                .filter(|e| e.status.is_terminal())
                .count(),
            1,
            "{point}: {:#?}",
            view.events
        );
        assert_eq!(fleet.sandbox_view(c.id).await["effects"], 1);
        stop(&mut healthy).await;
        eprintln!("{point}: one outcome, recorded once");
    }
    store.close().await;
    stop(&mut worker).await;
    fleet.stop().await;
}
