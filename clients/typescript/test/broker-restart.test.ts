/**
 * The broker stops and starts again (`rabbitmqctl stop_app` / `start_app`) under a subscriber,
 * a client publishing, and the fleet: the subscriber reconnects, redeclares and loses no event,
 * an event whose handler was running when the connection dropped is handed over once, and a
 * submit made while the broker is down goes through once it is back.
 *
 * The broker may be shared with other suites: the restart happens under the broker lock
 * (support/broker.ts), and the broker is always started again, whatever fails.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { before, test } from 'node:test';

import { type LifecycleEvent, type Subscriber, SwitchyardClient } from '../src/index.js';
import { brokerCtl, type BrokerLock, lockBroker, startApp, stopApp } from './support/broker.js';
import { charge, deleteQueue, type FleetEnv, fleetEnv, until } from './support/fleet.js';

let env: FleetEnv;

before(() => {
  env = fleetEnv();
});

/** How long the test waits for another suite's restart to finish before failing. */
const LOCK_WAIT_S = 240;

test('the subscriber survives a broker restart and loses no event', { timeout: (LOCK_WAIT_S + 240) * 1000 }, async (t) => {
  const queue = `ts-client-test.restart.${randomUUID()}`;
  const handled: LifecycleEvent[] = [];
  const again: LifecycleEvent[] = [];
  let release: () => void = () => undefined;
  const gate = new Promise<void>((resolve) => {
    release = resolve;
  });
  let blockedOn: string | undefined;
  let first: string | undefined;

  const client = new SwitchyardClient({
    url: env.url,
    token: env.token,
    amqpUrl: env.amqpUrl,
    publishTimeoutMs: 120_000,
    reconnect: { initialDelayMs: 200, maxDelayMs: 2_000 },
    retry: { maxAttempts: 30, maxDelayMs: 5_000 },
  });
  let subscriber: Subscriber | undefined;
  let lock: BrokerLock | undefined;
  let stopped = false;
  try {
    // First the lock: nothing of this test runs while another suite restarts the broker.
    lock = await lockBroker(LOCK_WAIT_S, t.signal);
    subscriber = await client.subscribe({
      queue,
      bindings: ['payment.sandbox.*'],
      reconnect: { initialDelayMs: 200, maxDelayMs: 2_000 },
      onDuplicate: (e) => again.push(e),
      handler: async (e) => {
        handled.push(e);
        if (e.command_id === first && e.status === 'completed') {
          // Still running when the broker goes: its acknowledgement can only come after.
          blockedOn = e.event_id;
          await gate;
        }
      },
    });

    const a = await client.submit({ kind: 'payment', provider: 'sandbox', operation: 'charge', payload: charge(101) }, { via: 'amqp' });
    first = a.id;
    await until('the handler is busy with the first command', () => blockedOn !== undefined, 30_000);
    // Published just before the stop: its events straddle the restart.
    const b = await client.submit({ kind: 'payment', provider: 'sandbox', operation: 'charge', payload: charge(102) }, { via: 'amqp' });

    // Never stop the broker for a test that has already been given up on (timed out).
    t.signal.throwIfAborted();
    stopped = true;
    await stopApp(env.brokerCtl);
    // Submitted while the broker is down: confirmed once it is back, same id and key.
    const during = client.submit({ kind: 'payment', provider: 'sandbox', operation: 'charge', payload: charge(103) }, { via: 'amqp' });
    await new Promise((r) => setTimeout(r, 3_000));
    await startApp(env.brokerCtl);
    stopped = false;
    release();
    const c = await during;
    // The ingress answers 503 + Retry-After until its own connection is back; the client waits.
    const d = await client.submit({ kind: 'payment', provider: 'sandbox', operation: 'charge', payload: charge(104) }, { via: 'http' });

    const ids = [a.id, b.id, c.id, d.id];
    for (const id of ids) assert.equal((await client.outcome(id, { timeoutMs: 90_000 })).status, 'completed');
    await until(
      'every command completed at the subscriber',
      () => ids.every((id) => handled.some((e) => e.command_id === id && e.status === 'completed')),
      90_000,
    );

    const ids_handled = handled.map((e) => e.event_id);
    assert.equal(new Set(ids_handled).size, ids_handled.length, 'no event handed over twice');
    assert.ok(subscriber.consumerStarts >= 2, 'the subscriber consumed again after the restart');
    assert.ok(
      again.some((e) => e.event_id === blockedOn),
      'the event whose handler outlived the connection came back, and was not handed over again',
    );
    for (const id of ids) {
      const statuses = handled.filter((e) => e.command_id === id).map((e) => e.status);
      assert.ok(statuses.includes('processing') && statuses.at(-1) === 'completed', `${id}: ${statuses.join(', ')}`);
    }
  } finally {
    release();
    if (stopped) await startApp(env.brokerCtl).catch(() => undefined);
    await brokerCtl(env.brokerCtl, 'await_startup').catch(() => undefined);
    await lock?.release();
    await subscriber?.close();
    await client.close();
    await deleteQueue(env, queue);
  }
});
