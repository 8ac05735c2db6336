/**
 * The durable subscriber against the fleet's broker: events published straight to
 * `switchyard.events` in an order the fleet can produce (late, twice, out of order) are handed
 * over once each, never backwards, and only acknowledged once the handler resolved.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, test } from 'node:test';

import { type Channel, type ChannelModel, connect } from 'amqplib';

import { type Delivery, EVENTS_EXCHANGE, type LifecycleEvent, type Status, subscribe } from '../src/index.js';
import { type FleetEnv, fleetEnv, until } from './support/fleet.js';

let env: FleetEnv;
let model: ChannelModel;
let channel: Channel;

before(async () => {
  env = fleetEnv();
  model = await connect(env.amqpUrl);
  channel = await model.createConfirmChannel();
});

after(async () => {
  await model?.close();
});

const PROVIDER = 'ts_synthetic';

/** An event as the fleet would publish it; `event_id` is per (command, seq, status), as in the contract. */
function event(commandId: string, seq: number, status: Status): LifecycleEvent {
  return {
    event_id: `${commandId.slice(0, 24)}${String(seq).padStart(4, '0')}${status.slice(0, 8).padEnd(8, '0')}`,
    command_id: commandId,
    seq,
    status,
    kind: 'payment',
    provider: PROVIDER,
    operation: 'charge',
    attempt: Math.floor(seq / 4),
    run: 0,
    occurred_at: new Date().toISOString(),
  };
}

async function publish(...events: LifecycleEvent[]): Promise<void> {
  for (const e of events) {
    channel.publish(EVENTS_EXCHANGE, `${e.kind}.${e.provider}.${e.status}`, Buffer.from(JSON.stringify(e)), {
      persistent: true,
      contentType: 'application/json',
      messageId: e.event_id,
    });
  }
  await (channel as Channel & { waitForConfirms(): Promise<void> }).waitForConfirms();
}

test('events are handed over once each, in seq order per command, stale ones set aside', async () => {
  const queue = `ts-client-test.order.${randomUUID()}`;
  const handled: Array<{ event: LifecycleEvent; delivery: Delivery }> = [];
  const stale: Array<{ event: LifecycleEvent; highest: number }> = [];
  const subscriber = await subscribe({
    amqpUrl: env.amqpUrl,
    queue,
    bindings: [`payment.${PROVIDER}.*`],
    handler: (event, delivery) => {
      handled.push({ event, delivery });
    },
    onStale: (event, highest) => stale.push({ event, highest }),
  });
  try {
    const a = randomUUID();
    const b = randomUUID();
    await publish(
      event(a, 0, 'pending'),
      event(a, 5, 'processing'),
      event(a, 7, 'completed'),
      event(a, 5, 'processing'), // the same transition again
      event(a, 6, 'retrying'), // late: completed is already handled
      event(a, 7, 'completed'), // again
      event(b, 5, 'processing'),
      event(b, 6, 'unknown'),
    );
    await until('every event settled', () => handled.length + stale.length >= 6);
    await new Promise((r) => setTimeout(r, 300)); // nothing more may follow
    assert.deepEqual(
      handled.filter((h) => h.event.command_id === a).map((h) => `${h.event.seq}:${h.event.status}:${h.delivery.type}`),
      ['0:pending:progress', '5:processing:progress', '7:completed:terminal'],
    );
    assert.deepEqual(
      stale.map((s) => `${s.event.seq}:${s.event.status}<${s.highest}`),
      ['6:retrying<7'],
    );
    const unknown = handled.find((h) => h.event.command_id === b && h.event.status === 'unknown');
    assert.equal(unknown?.delivery.type, 'unknown');
    assert.equal(handled.length, 5);
  } finally {
    await subscriber.close();
    await channel.deleteQueue(queue);
  }
});

test('a handler that throws gets the event again; one that resolves has it acknowledged', async () => {
  const queue = `ts-client-test.ack.${randomUUID()}`;
  const id = randomUUID();
  const calls: boolean[] = [];
  const errors: Error[] = [];
  const subscriber = await subscribe({
    amqpUrl: env.amqpUrl,
    queue,
    bindings: [`payment.${PROVIDER}.*`],
    retryDelayMs: 100,
    onError: (e) => errors.push(e),
    handler: (e, delivery) => {
      if (e.command_id !== id) return;
      calls.push(delivery.redelivered);
      if (calls.length === 1) throw new Error('the database is down');
    },
  });
  try {
    await publish(event(id, 7, 'completed'));
    await until('the second try', () => calls.length === 2);
    assert.deepEqual(calls, [false, true], 'the second delivery is the broker redelivering it');
    assert.equal(errors[0]?.name, 'HandlerError');
  } finally {
    await subscriber.close();
  }
  // Closing a consumer puts back what it had not acknowledged: nothing is left.
  const { messageCount } = await channel.checkQueue(queue);
  assert.equal(messageCount, 0);
  assert.equal(calls.length, 2);
  await channel.deleteQueue(queue);
});
