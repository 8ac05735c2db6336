//! The journal against both databases: SQLite in a temporary file and the real PostgreSQL on
//! 127.0.0.1:5432, each test in its own throwaway database.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use serde_json::json;
use sha2::Digest as _;
use switchyard_core::Command;
use switchyard_journal::{
    Admission, Begin, CheckNo, Claim, Decided, Journal, Retention, Start, Step,
};
use switchyard_testing::TestDatabase;
use uuid::Uuid;

const RETENTION: Retention = Retention {
    identities: Duration::from_secs(3600),
    steps: Duration::from_secs(3600),
};

fn command(key: Option<&str>, amount: u64) -> Command {
    let mut c = json!({
        "id": Uuid::now_v7(), "kind": "payment", "provider": "stripe", "operation": "charge",
        "payload": {"amount": amount, "currency": "usd"}, "created_at": "2026-11-29T10:00:00Z"
    });
    if let Some(k) = key {
        c["idempotency_key"] = k.into();
    }
    serde_json::from_value(c).unwrap()
}

async fn on_both<F, Fut>(f: F)
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let db = TestDatabase::sqlite();
    f(db.url.clone()).await;
    db.cleanup().await;
    let db = TestDatabase::postgres().await;
    f(db.url.clone()).await;
    db.cleanup().await;
}

#[tokio::test]
async fn an_identity_means_one_command() {
    on_both(|url| async move {
        let j = Journal::open(&url, RETENTION).await.unwrap();
        let key = format!("order-{}", Uuid::new_v4());
        let first = command(Some(&key), 100);
        assert_eq!(j.admit(&first, false).await.unwrap(), Admission::New);
        assert_eq!(
            j.admit(&first, true).await.unwrap(),
            Admission::Same { accepted: false }
        );
        j.accepted(first.id).await.unwrap();
        // Another id, same key and body: a duplicate of the first.
        let again = command(Some(&key), 100);
        assert_eq!(
            j.admit(&again, true).await.unwrap(),
            Admission::Duplicate {
                original: first.id,
                accepted: true
            }
        );
        // Same key, another body: a conflict.
        let other = command(Some(&key), 999);
        assert_eq!(
            j.admit(&other, true).await.unwrap(),
            Admission::Conflict { original: first.id }
        );
        // Same id, another operation: a conflict, whatever the key.
        let mut reused = first.clone();
        reused.idempotency_key = None;
        reused.operation = "refund".parse().unwrap();
        assert_eq!(
            j.admit(&reused, true).await.unwrap(),
            Admission::Conflict { original: first.id }
        );
        // Without a key, the id is the identity.
        let plain = command(None, 100);
        assert_eq!(j.admit(&plain, true).await.unwrap(), Admission::New);
        let mut changed = plain.clone();
        changed.payload.insert("amount".into(), 5.into());
        assert_eq!(
            j.admit(&changed, true).await.unwrap(),
            Admission::Conflict { original: plain.id }
        );
        j.close().await;
    })
    .await;
}

#[tokio::test]
async fn a_step_is_begun_once_and_decided_once() {
    on_both(|url| async move {
        let j = Journal::open(&url, RETENTION).await.unwrap();
        let step = Step {
            command_id: Uuid::now_v7(),
            run: 0,
            attempt: 1,
        };
        assert_eq!(j.begin(step, false).await.unwrap(), Begin::Fresh);
        // A second copy of the step, delivered fresh: a repeat.
        assert_eq!(j.begin(step, false).await.unwrap(), Begin::Repeated);
        // The same delivery again after a crash, undecided: in doubt.
        assert_eq!(j.begin(step, true).await.unwrap(), Begin::InDoubt);
        assert_eq!(j.decide(step, "retry".into()).await.unwrap(), Decided::Won);
        assert_eq!(
            j.decide(step, "completed".into()).await.unwrap(),
            Decided::Lost(Some("retry".into()))
        );
        assert_eq!(
            j.begin(step, true).await.unwrap(),
            Begin::Decided("retry".into())
        );
        // Once the next attempt began, the old one is superseded, as is every step of an
        // earlier run once a replay began.
        let next = Step { attempt: 2, ..step };
        assert_eq!(j.begin(next, false).await.unwrap(), Begin::Fresh);
        assert_eq!(j.begin(step, true).await.unwrap(), Begin::Superseded);
        let replay = Step {
            run: 1,
            attempt: 1,
            ..step
        };
        assert_eq!(j.begin(replay, false).await.unwrap(), Begin::Fresh);
        assert_eq!(j.begin(next, true).await.unwrap(), Begin::Superseded);
        j.close().await;
    })
    .await;
}

#[tokio::test]
async fn a_peek_tells_what_start_would_find_and_writes_nothing() {
    on_both(|url| async move {
        let j = Journal::open(&url, RETENTION).await.unwrap();
        let key = format!("order-{}", Uuid::new_v4());
        let first = command(Some(&key), 100);
        let step = Step {
            command_id: first.id,
            run: 0,
            attempt: 1,
        };
        let nothing = Start {
            admission: None,
            begin: None,
        };
        assert_eq!(j.peek(Some(&first), step, true).await.unwrap(), nothing);
        assert_eq!(j.peek(None, step, false).await.unwrap(), nothing);
        // Peeking admitted and began nothing: the command is still new, its step this
        // delivery's to begin.
        let started = j.start(&first, step, false).await.unwrap();
        assert_eq!(started.admission, Some(Admission::New));
        assert_eq!(started.begin, Some(Begin::Fresh));
        let found = |admission, begin| Start {
            admission: Some(admission),
            begin,
        };
        let same = Admission::Same { accepted: true };
        assert_eq!(
            j.peek(Some(&first), step, false).await.unwrap(),
            found(same.clone(), Some(Begin::Repeated))
        );
        assert_eq!(
            j.peek(None, step, true).await.unwrap().begin,
            Some(Begin::InDoubt)
        );
        assert_eq!(j.decide(step, "done".into()).await.unwrap(), Decided::Won);
        assert_eq!(
            j.peek(Some(&first), step, true).await.unwrap(),
            found(same, Some(Begin::Decided("done".into())))
        );
        // Another id with the same identity: a duplicate, or a conflict when it asks for
        // something else; neither has a step.
        let again = command(Some(&key), 100);
        let again_step = Step {
            command_id: again.id,
            ..step
        };
        assert_eq!(
            j.peek(Some(&again), again_step, true).await.unwrap(),
            found(
                Admission::Duplicate {
                    original: first.id,
                    accepted: true
                },
                None
            )
        );
        let other = command(Some(&key), 999);
        assert_eq!(
            j.peek(Some(&other), again_step, true).await.unwrap(),
            found(Admission::Conflict { original: first.id }, None)
        );
        // The next attempt: never begun until it is.
        let next = Step { attempt: 2, ..step };
        assert_eq!(j.peek(None, next, true).await.unwrap(), nothing);
        assert_eq!(j.begin(next, false).await.unwrap(), Begin::Fresh);
        assert_eq!(
            j.peek(None, step, true).await.unwrap().begin,
            Some(Begin::Superseded)
        );
        j.close().await;
    })
    .await;
}

#[tokio::test]
async fn racing_workers_on_one_database_begin_and_decide_each_step_once() {
    on_both(|url| async move {
        let a = Journal::open(&url, RETENTION).await.unwrap();
        let b = Journal::open(&url, RETENTION).await.unwrap();
        let steps: Vec<Step> = (0..200)
            .map(|_| Step {
                command_id: Uuid::now_v7(),
                run: 0,
                attempt: 1,
            })
            .collect();
        let race = |j: Journal, label: &'static str| {
            let steps = steps.clone();
            tokio::spawn(async move {
                let mut won = Vec::new();
                let begins = futures_like_join(steps.iter().map(|s| j.begin(*s, true))).await;
                for (s, b) in steps.iter().zip(begins) {
                    if matches!(b.unwrap(), Begin::Fresh | Begin::InDoubt)
                        && j.decide(*s, label.into()).await.unwrap() == Decided::Won
                    {
                        won.push(s.command_id);
                    }
                }
                won
            })
        };
        let (wa, wb) = tokio::join!(race(a.clone(), "a"), race(b.clone(), "b"));
        let (wa, wb) = (wa.unwrap(), wb.unwrap());
        assert_eq!(
            wa.len() + wb.len(),
            steps.len(),
            "every step decided exactly once"
        );
        assert!(wa.iter().all(|id| !wb.contains(id)));
        a.close().await;
        b.close().await;
    })
    .await;
}

/// The status checks of one wait, as a chain: each check once, a second chain ended at its
/// next check, a redelivered check made again unless the chain moved on.
#[tokio::test]
async fn a_status_check_is_claimed_once_per_chain() {
    on_both(|url| async move {
        let j = Journal::open(&url, RETENTION).await.unwrap();
        let step = Step {
            command_id: Uuid::now_v7(),
            run: 0,
            attempt: 1,
        };
        let check = |number| CheckNo { step, number };
        assert_eq!(j.claim_check(check(1), false).await.unwrap(), Claim::Mine);
        // The worker died after scheduling check 2: check 1 comes back, redelivered.
        assert_eq!(j.claim_check(check(1), true).await.unwrap(), Claim::Mine);
        // So check 2 was scheduled twice: the first copy makes it, the second is a second
        // chain and ends.
        assert_eq!(j.claim_check(check(2), false).await.unwrap(), Claim::Mine);
        assert_eq!(j.claim_check(check(2), false).await.unwrap(), Claim::Taken);
        // Check 2's own redelivery (its worker died) is made again.
        assert_eq!(j.claim_check(check(2), true).await.unwrap(), Claim::Mine);
        // Check 1 redelivered once more, after the chain moved on: behind.
        assert_eq!(j.claim_check(check(1), true).await.unwrap(), Claim::Behind);
        // Another run, or another attempt, has chains of its own.
        let replay = CheckNo {
            step: Step { run: 1, ..step },
            number: 1,
        };
        assert_eq!(j.claim_check(replay, false).await.unwrap(), Claim::Mine);
        j.close().await;
    })
    .await;
}

/// Two chains' copies of one check arriving together at two workers: one makes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_copies_of_a_status_check_make_it_once() {
    on_both(|url| async move {
        let a = Journal::open(&url, RETENTION).await.unwrap();
        let b = Journal::open(&url, RETENTION).await.unwrap();
        let checks: Vec<CheckNo> = (0..300)
            .map(|i| CheckNo {
                step: Step {
                    command_id: Uuid::now_v7(),
                    run: 0,
                    attempt: 1,
                },
                number: 1 + i % 3,
            })
            .collect();
        let race = |j: Journal| {
            let checks = checks.clone();
            tokio::spawn(async move {
                futures_like_join(checks.iter().map(|c| j.claim_check(*c, false))).await
            })
        };
        let (ca, cb) = tokio::join!(race(a.clone()), race(b.clone()));
        let (ca, cb) = (ca.unwrap(), cb.unwrap());
        for (i, (x, y)) in ca.into_iter().zip(cb).enumerate() {
            let mut both = [x.unwrap(), y.unwrap()];
            both.sort_by_key(|c| *c != Claim::Mine);
            assert_eq!(both, [Claim::Mine, Claim::Taken], "check {i}");
        }
        a.close().await;
        b.close().await;
    })
    .await;
}

/// One command sent twice at once to two workers, once with a key and once without: two
/// identities for one id. Each worker looked for both (finding neither, the other's row not
/// yet committed) and inserted its own, so both admitted the command as new and both would
/// have executed it. The id is unique in the table now: the second insert waits for the
/// first and, finding the id taken, judges against it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_workers_admit_one_id_under_two_identities_once() {
    on_both(|url| async move {
        let a = Journal::open(&url, RETENTION).await.unwrap();
        let b = Journal::open(&url, RETENTION).await.unwrap();
        let keyed: Vec<Command> = (0..1000)
            .map(|i| command(Some(&format!("order-{i}-{}", Uuid::new_v4())), 100))
            .collect();
        let plain: Vec<Command> = keyed
            .iter()
            .map(|c| Command {
                idempotency_key: None,
                ..c.clone()
            })
            .collect();
        let race = |j: Journal, commands: Vec<Command>| {
            tokio::spawn(async move {
                futures_like_join(commands.iter().map(|c| j.admit(c, true)))
                    .await
                    .into_iter()
                    .map(|a| a.unwrap())
                    .collect::<Vec<_>>()
            })
        };
        let (ra, rb) = tokio::join!(race(a.clone(), keyed.clone()), race(b.clone(), plain));
        let (ra, rb) = (ra.unwrap(), rb.unwrap());
        let twice: Vec<Uuid> = keyed
            .iter()
            .zip(ra.iter().zip(&rb))
            .filter(|(_, (x, y))| **x == Admission::New && **y == Admission::New)
            .map(|(c, _)| c.id)
            .collect();
        assert!(
            twice.is_empty(),
            "{url}: {} of {} ids admitted as new by both workers, e.g. {:?}",
            twice.len(),
            keyed.len(),
            twice.first()
        );
        for (x, y) in ra.iter().zip(&rb) {
            let new = [x, y].iter().filter(|a| ***a == Admission::New).count();
            assert_eq!(
                new, 1,
                "one of the two is new, the other the same: {x:?}, {y:?}"
            );
            assert!(
                [x, y].contains(&&Admission::Same { accepted: true }),
                "{x:?}, {y:?}"
            );
        }
        a.close().await;
        b.close().await;
    })
    .await;
}

/// A journal made before ids were unique, holding one id under two identities as racing
/// writers left it: opened, it keeps the identity seen first, and the id is unique from
/// then on.
#[tokio::test]
async fn a_journal_from_before_unique_ids_is_repaired_when_opened() {
    on_both(|url| async move {
        sqlx::any::install_default_drivers();
        let pool = sqlx::AnyPool::connect(&url).await.unwrap();
        for statement in [
            "CREATE TABLE journal_identities (identity TEXT PRIMARY KEY, \
             command_id TEXT NOT NULL, fingerprint TEXT NOT NULL, accepted BIGINT NOT NULL, \
             first_seen BIGINT NOT NULL)",
            "CREATE INDEX journal_identities_by_command ON journal_identities (command_id)",
        ] {
            sqlx::query(statement).execute(&pool).await.unwrap();
        }
        let keyed = command(Some(&format!("order-{}", Uuid::new_v4())), 100);
        let plain = Command {
            idempotency_key: None,
            ..keyed.clone()
        };
        let digest = |c: &Command| hex::encode(sha2::Sha256::digest(c.identity().as_str()));
        let id = keyed.id.to_string();
        // Within the retention, or the journal's first prune would take them.
        let now = chrono::Utc::now().timestamp_millis();
        for (c, first_seen) in [(&plain, now - 1_000), (&keyed, now - 2_000)] {
            sqlx::query(
                "INSERT INTO journal_identities \
                 (identity, command_id, fingerprint, accepted, first_seen) \
                 VALUES ($1, $2, $3, 1, $4)",
            )
            .bind(digest(c))
            .bind(&id)
            .bind(c.fingerprint().into_string())
            .bind(first_seen)
            .execute(&pool)
            .await
            .unwrap();
        }

        let j = Journal::open(&url, RETENTION).await.unwrap();
        let held: Vec<(String,)> =
            sqlx::query_as("SELECT identity FROM journal_identities WHERE command_id = $1")
                .bind(&id)
                .fetch_all(&pool)
                .await
                .unwrap();
        assert_eq!(
            held,
            [(digest(&keyed),)],
            "the identity seen first keeps the id"
        );
        assert_eq!(
            j.admit(&plain, true).await.unwrap(),
            Admission::Same { accepted: true }
        );
        let again = sqlx::query(
            "INSERT INTO journal_identities \
             (identity, command_id, fingerprint, accepted, first_seen) \
             VALUES ('another', $1, 'x', 1, $2)",
        )
        .bind(&id)
        .bind(now)
        .execute(&pool)
        .await;
        assert!(again.is_err(), "a second identity for the id is refused");
        // Opening it again changes nothing.
        j.close().await;
        let j = Journal::open(&url, RETENTION).await.unwrap();
        assert_eq!(
            j.admit(&keyed, true).await.unwrap(),
            Admission::Same { accepted: true }
        );
        j.close().await;
        pool.close().await;
    })
    .await;
}

#[tokio::test]
async fn concurrent_operations_in_one_batch_see_each_other() {
    on_both(|url| async move {
        let j = Journal::open(&url, RETENTION).await.unwrap();
        // Per identity: two commands asking for the same thing and one asking for more, all
        // started at once, so batches mix first sights, duplicates and conflicts.
        let groups: Vec<[Command; 3]> = (0..100)
            .map(|i| {
                let key = format!("order-{}", Uuid::new_v4());
                [
                    command(Some(&key), i),
                    command(Some(&key), i),
                    command(Some(&key), i + 1),
                ]
            })
            .collect();
        let step = |c: &Command| Step {
            command_id: c.id,
            run: 0,
            attempt: 1,
        };
        let started =
            futures_like_join(groups.iter().flatten().map(|c| j.start(c, step(c), false))).await;
        let mut fresh = Vec::new();
        for (group, starts) in groups.iter().zip(started.chunks(3)) {
            let starts: Vec<_> = starts.iter().map(|s| s.as_ref().unwrap()).collect();
            let new: Vec<usize> = (0..3)
                .filter(|i| starts[*i].admission == Some(Admission::New))
                .collect();
            assert_eq!(
                new.len(),
                1,
                "one command of an identity is new: {starts:?}"
            );
            let holder = &group[new[0]];
            assert_eq!(starts[new[0]].begin, Some(Begin::Fresh));
            for (i, s) in starts.iter().enumerate().filter(|(i, _)| *i != new[0]) {
                let expected = if group[i].fingerprint() == holder.fingerprint() {
                    Admission::Duplicate {
                        original: holder.id,
                        accepted: true,
                    }
                } else {
                    Admission::Conflict {
                        original: holder.id,
                    }
                };
                assert_eq!(s.admission, Some(expected));
                assert_eq!(s.begin, None, "a duplicate or a conflict never runs");
            }
            fresh.push(step(holder));
        }
        // Each step decided twice at once: one decision wins, the other hears it.
        let decided = futures_like_join(
            fresh
                .iter()
                .flat_map(|s| [j.decide(*s, "first".into()), j.decide(*s, "second".into())]),
        )
        .await;
        for pair in decided.chunks(2) {
            let pair: Vec<_> = pair.iter().map(|d| d.as_ref().unwrap().clone()).collect();
            let won = pair.iter().filter(|d| **d == Decided::Won).count();
            assert_eq!(won, 1, "{pair:?}");
            assert!(pair.iter().any(|d| matches!(d, Decided::Lost(Some(_)))));
        }
        // And a redelivery of a decided step re-sends its decision.
        for s in &fresh {
            assert!(matches!(
                j.begin(*s, true).await.unwrap(),
                Begin::Decided(_)
            ));
        }
        // Commands alone in their batch take the path written together: new, fresh, won;
        // then a second copy of each, also together, is the same command, repeated.
        let lone: Vec<Command> = (0..200).map(|i| command(None, i)).collect();
        for _ in 0..2 {
            let starts = futures_like_join(lone.iter().map(|c| j.start(c, step(c), false))).await;
            let decided =
                futures_like_join(lone.iter().map(|c| j.decide(step(c), "done".into()))).await;
            for (s, d) in starts.into_iter().zip(decided) {
                let (s, d) = (s.unwrap(), d.unwrap());
                match s.admission {
                    Some(Admission::New) => {
                        assert_eq!(s.begin, Some(Begin::Fresh));
                        assert_eq!(d, Decided::Won);
                    }
                    Some(Admission::Same { accepted: true }) => {
                        assert_eq!(s.begin, Some(Begin::Repeated));
                        assert_eq!(d, Decided::Lost(Some("done".into())));
                    }
                    other => panic!("{other:?}"),
                }
            }
        }
        j.close().await;
    })
    .await;
}

/// A fleet's processes open the journal on a fresh database at the same moment: every one
/// must start (PostgreSQL's `CREATE TABLE IF NOT EXISTS` races with itself otherwise).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_opening_a_fresh_database_together_all_start() {
    on_both(|url| async move {
        for _ in 0..3 {
            let fresh = if url.starts_with("sqlite:") {
                TestDatabase::sqlite()
            } else {
                TestDatabase::postgres().await
            };
            let url = fresh.url.clone();
            let opened = futures_like_join((0..6).map(|_| {
                let url = url.clone();
                tokio::spawn(async move { Journal::open(&url, RETENTION).await })
            }))
            .await;
            for j in opened {
                j.unwrap()
                    .expect("every process opens the journal")
                    .close()
                    .await;
            }
            fresh.cleanup().await;
        }
    })
    .await;
}

/// Runs the futures concurrently, in order of results.
async fn futures_like_join<F: std::future::Future>(fs: impl Iterator<Item = F>) -> Vec<F::Output> {
    let handles: Vec<_> = fs.collect();
    let mut out = Vec::with_capacity(handles.len());
    // Polled together through a join of boxed futures.
    let joined = futures::future::join_all(handles);
    out.extend(joined.await);
    out
}

/// How many commands per second the journal takes on SQLite (start, then decide, 64 at a
/// time): a figure, not a pass mark. `cargo test --release -p switchyard-journal -- --ignored
/// --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn throughput_on_sqlite() {
    let db = TestDatabase::sqlite();
    throughput(&db.url, "SQLite").await;
    db.cleanup().await;
}

/// The same on the local PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn throughput_on_postgres() {
    let db = TestDatabase::postgres().await;
    throughput(&db.url, "PostgreSQL").await;
    db.cleanup().await;
}

#[allow(clippy::print_stderr)]
async fn throughput(url: &str, label: &str) {
    let j = Journal::open(url, RETENTION).await.unwrap();
    let n = 20_000usize;
    let started = std::time::Instant::now();
    let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(64));
    let mut tasks = Vec::new();
    for i in 0..n {
        let j = j.clone();
        let permit = sem.clone().acquire_owned().await.unwrap();
        tasks.push(tokio::spawn(async move {
            let c = command(None, i as u64);
            let step = Step {
                command_id: c.id,
                run: 0,
                attempt: 1,
            };
            let s = j.start(&c, step, false).await.unwrap();
            assert_eq!(s.begin, Some(Begin::Fresh));
            assert_eq!(j.decide(step, "{}".into()).await.unwrap(), Decided::Won);
            drop(permit);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "journal on {label}: {n} commands in {secs:.2} s = {:.0}/s",
        n as f64 / secs
    );
    j.close().await;
}
