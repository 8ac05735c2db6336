//! The confirmed publisher against the real broker: messages handed over together (a worker's
//! `pending` and `processing`) reach a subscriber in the order given, however many callers
//! publish at once, and a failure among them is reported, never taken for success.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use chrono::Utc;
use futures::StreamExt;
use switchyard_amqp::lapin::options::{
    BasicConsumeOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use switchyard_amqp::lapin::types::FieldTable;
use switchyard_amqp::lapin::{Connection, ConnectionProperties, ExchangeKind};
use switchyard_amqp::messages::publish_events;
use switchyard_amqp::topology::EVENTS_EXCHANGE;
use switchyard_amqp::{Outgoing, PublishError};
use switchyard_core::{Event, Lifecycle, Status};
use switchyard_testing::{TestFleet, TestFleetOptions};
use uuid::Uuid;

async fn fleet() -> TestFleet {
    TestFleet::start_with(TestFleetOptions {
        in_process: false,
        ..TestFleetOptions::default()
    })
    .await
}

async fn connect(fleet: &TestFleet) -> Connection {
    Connection::connect(&fleet.vhost.amqp_url, ConnectionProperties::default())
        .await
        .expect("a connection of the test's own")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_published_together_arrive_in_their_order() {
    let fleet = fleet().await;
    // A subscriber of its own, read one delivery after the other (the fleet's event log
    // handles deliveries concurrently, so its order is not the queue's).
    let conn = connect(&fleet).await;
    let ch = conn.create_channel().await.unwrap();
    let queue = format!("publisher-test-{}", Uuid::new_v4().simple());
    ch.queue_declare(
        queue.as_str().into(),
        QueueDeclareOptions {
            exclusive: true,
            ..QueueDeclareOptions::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.queue_bind(
        queue.as_str().into(),
        EVENTS_EXCHANGE.into(),
        "#".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let mut deliveries = ch
        .basic_consume(
            queue.as_str().into(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();

    let commands: Vec<_> = (0..300).map(|_| fleet.charge()).collect();
    // Every command's three events go out together, all 300 commands at once, so their
    // publishes interleave on the publisher's one channel.
    let published = futures::future::join_all(commands.iter().map(|c| {
        let publisher = fleet.publisher.clone();
        async move {
            let lifecycle = Lifecycle::run(c, 0);
            let now = Utc::now();
            let pending = lifecycle.pending(now);
            let (attempt, processing) = lifecycle.begin(1, now);
            let completed = attempt.complete(serde_json::json!({"ok": true}), None, now);
            publish_events(&publisher, &[&pending, &processing, &completed], None).await
        }
    }))
    .await;
    assert!(published.iter().all(Result::is_ok), "{published:?}");

    let mut seen: std::collections::HashMap<Uuid, Vec<Status>> = Default::default();
    for _ in 0..commands.len() * 3 {
        let d = tokio::time::timeout(Duration::from_secs(30), deliveries.next())
            .await
            .expect("every event arrives")
            .expect("the consumer stays open")
            .expect("a delivery");
        let e = Event::decode(&d.data).expect("an event");
        seen.entry(e.command_id).or_default().push(e.status);
    }
    for c in &commands {
        assert_eq!(
            seen[&c.id],
            [Status::Pending, Status::Processing, Status::Completed],
            "command {}",
            c.id
        );
    }
    let _ = conn.close(200, "done".into()).await;
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_among_messages_published_together_is_reported() {
    let fleet = fleet().await;
    // An exchange nothing is bound to: a mandatory message there comes back.
    let conn = connect(&fleet).await;
    let ch = conn.create_channel().await.unwrap();
    let nowhere = format!("publisher-test-{}", Uuid::new_v4().simple());
    ch.exchange_declare(
        nowhere.as_str().into(),
        ExchangeKind::Topic,
        ExchangeDeclareOptions {
            auto_delete: true,
            ..ExchangeDeclareOptions::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();

    let command = fleet.charge();
    let body = Lifecycle::run(&command, 0).pending(Utc::now()).to_bytes();
    let event = || Outgoing {
        exchange: EVENTS_EXCHANGE,
        routing_key: "payment.sandbox.pending",
        body: &body,
        properties: Default::default(),
        mandatory: false,
    };
    let unroutable = Outgoing {
        exchange: &nowhere,
        routing_key: "nobody.listens",
        body: &body,
        properties: Default::default(),
        mandatory: true,
    };
    let outcome = fleet
        .publisher
        .publish_in_order(vec![event(), unroutable, event()])
        .await;
    assert!(
        matches!(outcome, Err(PublishError::Returned(_))),
        "{outcome:?}"
    );
    // The publisher is still usable afterwards.
    fleet
        .publisher
        .publish_in_order(vec![event()])
        .await
        .expect("a publish after a returned one");
    let _ = conn.close(200, "done".into()).await;
    fleet.stop().await;
}
