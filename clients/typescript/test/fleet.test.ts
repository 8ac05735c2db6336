/**
 * The client against a real fleet (tests/clients.rs starts one and sets the environment):
 * submits over both transports, every kind of outcome, duplicates and conflicts over both,
 * a provider nobody serves, and `unknown` surfaced as its own kind of update.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, test } from 'node:test';

import {
  AuthenticationError,
  type CommandRecord,
  isTerminal,
  IdempotencyConflictError,
  InvalidCommandError,
  type LifecycleEvent,
  OutcomeTimeoutError,
  SwitchyardClient,
  uuidv7,
} from '../src/index.js';
import { charge, deleteQueue, type FleetEnv, fleetEnv, scenario, sms, until } from './support/fleet.js';

const OUTCOME = { timeoutMs: 30_000 };

let env: FleetEnv;
let client: SwitchyardClient;
const errors: Error[] = [];

before(() => {
  env = fleetEnv();
  client = new SwitchyardClient({
    url: env.url,
    token: env.token,
    amqpUrl: env.amqpUrl,
    connectionName: 'switchyard-client tests',
    onError: (e) => errors.push(e),
  });
});

after(async () => {
  await client?.close();
});

/**
 * The ledger's record once it has caught up with the terminal event: it ingests in batches,
 * off the events' path, so right after `outcome` it may still be a moment behind.
 */
async function ledgerRecord(id: string): Promise<CommandRecord> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const record = await client.command(id);
    if (record?.status !== undefined && isTerminal(record.status)) return record;
    if (Date.now() > deadline) throw new Error(`the ledger did not record the end of ${id}: ${JSON.stringify(record)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

for (const via of ['http', 'amqp'] as const) {
  describe(`over ${via}`, () => {
    test('a command is accepted and completes', async () => {
      const submitted = await client.submit(
        { kind: 'payment', provider: 'sandbox', operation: 'charge', payload: charge(), metadata: { order: '42' } },
        { via },
      );
      assert.equal(submitted.via, via);
      assert.equal(submitted.replayed, false);
      assert.equal(submitted.status, 'pending');
      assert.match(submitted.idempotencyKey, /^[0-9a-f-]{36}$/);
      const outcome = await client.outcome(submitted.id, OUTCOME);
      assert.equal(outcome.status, 'completed');
      assert.equal(outcome.command_id, submitted.id);
      assert.deepEqual(outcome.metadata, { order: '42' });
      assert.ok(outcome.result !== undefined && outcome.result !== null, 'completed carries a result');

      const record = await ledgerRecord(submitted.id);
      assert.deepEqual(
        record.events.map((e) => e.status).filter((s) => s !== 'completed'),
        ['pending', 'processing'],
      );
    });

    test('a permanent 4xx from the provider ends failed', async () => {
      const id = uuidv7();
      await scenario(env, id, ['402']);
      const submitted = await client.submit(
        { id, kind: 'payment', provider: 'sandbox', operation: 'charge', payload: charge() },
        { via },
      );
      assert.equal(submitted.id, id);
      const outcome = await client.outcome(id, OUTCOME);
      assert.equal(outcome.status, 'failed');
      assert.equal(outcome.error?.class, 'permanent');
      assert.equal(outcome.error?.http_status, 402);
    });

    test('a transient 503 is retried by the fleet and completes', async () => {
      const id = uuidv7();
      await scenario(env, id, ['503', 'ok']);
      await client.submit({ id, kind: 'payment', provider: 'sandbox', operation: 'charge', payload: charge() }, { via });
      const outcome = await client.outcome(id, OUTCOME);
      assert.equal(outcome.status, 'completed');
      assert.ok(outcome.attempt >= 1);
    });

    test('a repeat with the same key is a duplicate, never run twice', async () => {
      const idempotencyKey = `ts-dup-${randomUUID()}`;
      const command = { kind: 'payment', provider: 'sandbox', operation: 'charge', payload: charge(700), idempotencyKey };
      const first = await client.submit(command, { via });
      assert.equal(first.idempotencyKey, idempotencyKey);
      assert.equal((await client.outcome(first.id, OUTCOME)).status, 'completed');

      const again = await client.submit(command, { via });
      if (via === 'http') {
        // The ingress answers 200 Idempotent-Replayed with the original.
        assert.equal(again.replayed, true);
        assert.equal(again.id, first.id);
        assert.equal((await client.outcome(again.id, OUTCOME)).status, 'completed');
      } else {
        // Over AMQP the repeat has its own id and gets one `duplicate` event naming the original.
        assert.notEqual(again.id, first.id);
        const dup = await client.outcome(again.id, OUTCOME);
        assert.equal(dup.status, 'duplicate');
        assert.equal(dup.duplicate_of, first.id);
      }
    });

    test('the same key asking for something else is a conflict', async () => {
      const idempotencyKey = `ts-conflict-${randomUUID()}`;
      const first = await client.submit(
        { kind: 'payment', provider: 'sandbox', operation: 'charge', payload: charge(800), idempotencyKey },
        { via },
      );
      assert.equal((await client.outcome(first.id, OUTCOME)).status, 'completed');
      const other = { kind: 'payment', provider: 'sandbox', operation: 'charge', payload: charge(801), idempotencyKey };
      if (via === 'http') {
        const err = await client.submit(other, { via }).catch((e: unknown) => e);
        assert.ok(err instanceof IdempotencyConflictError, String(err));
        assert.equal(err.status, 422);
        assert.ok(err.problem.type.endsWith('idempotency_conflict'));
        assert.equal(err.problem.field, 'idempotency_key');
      } else {
        const conflicting = await client.submit(other, { via });
        const failed = await client.outcome(conflicting.id, OUTCOME);
        assert.equal(failed.status, 'failed');
        assert.equal(failed.error?.class, 'invalid');
        assert.equal(failed.error?.code, 'idempotency_conflict');
      }
    });

    test('long-running work: waiting, then completed', async () => {
      const provider = via === 'http' ? 'sandbox_async' : 'sandbox_polled';
      const submitted = await client.submit(
        { kind: 'notification', provider, operation: 'send_sms', payload: sms() },
        { via },
      );
      const outcome = await client.outcome(submitted.id, OUTCOME);
      assert.equal(outcome.status, 'completed');
      const record = await ledgerRecord(submitted.id);
      const statuses = record.events.map((e) => e.status);
      assert.ok(statuses.includes('waiting'), `waiting before completed: ${statuses.join(', ')}`);
    });
  });
}

test('a provider nobody serves: confirmed over AMQP, then failed with code unroutable', async () => {
  const submitted = await client.submit(
    { kind: 'payment', provider: 'nobody_serves_this', operation: 'charge', payload: charge() },
    { via: 'amqp' },
  );
  const outcome = await client.outcome(submitted.id, OUTCOME);
  assert.equal(outcome.status, 'failed');
  assert.equal(outcome.error?.code, 'unroutable');
  assert.equal(outcome.error?.class, 'invalid');
});

test('over HTTP the ingress refuses an unknown provider and a bad payload at the door', async () => {
  const unknown = await client
    .submit({ kind: 'payment', provider: 'nobody_serves_this', operation: 'charge', payload: charge() }, { via: 'http' })
    .catch((e: unknown) => e);
  assert.ok(unknown instanceof InvalidCommandError, String(unknown));
  assert.equal(unknown.problem.field, 'provider');
  const bad = await client
    .submit({ kind: 'payment', provider: 'sandbox', operation: 'charge', payload: { amount: 'lots' } }, { via: 'http' })
    .catch((e: unknown) => e);
  assert.ok(bad instanceof InvalidCommandError, String(bad));
  assert.equal(bad.status, 422);
});

test('a wrong token is an AuthenticationError', async () => {
  const stranger = new SwitchyardClient({ url: env.url, token: 'not-the-token' });
  await assert.rejects(
    stranger.submit({ kind: 'payment', provider: 'sandbox', operation: 'charge', payload: charge() }),
    AuthenticationError,
  );
  await stranger.close();
});

test('outcome() of a command submitted elsewhere: the ledger tells what ended before the call', async () => {
  const elsewhere = new SwitchyardClient({ url: env.url, token: env.token });
  const submitted = await elsewhere.submit({ kind: 'payment', provider: 'sandbox', operation: 'charge', payload: charge() });
  await elsewhere.close();
  // Long enough for it to have completed before anyone here listens.
  await new Promise((r) => setTimeout(r, 1500));
  const outcome = await client.outcome(submitted.id, OUTCOME);
  assert.equal(outcome.status, 'completed');
});

test('unknown is surfaced as its own kind of update, and outcome() keeps waiting on it', async () => {
  const queue = `ts-client-test.unknown.${randomUUID()}`;
  const seen: Array<{ event: LifecycleEvent; type: string }> = [];
  const subscriber = await client.subscribe({
    queue,
    bindings: ['payment.sandbox.*'],
    handler: (event, delivery) => {
      seen.push({ event, type: delivery.type });
    },
  });
  try {
    const id = uuidv7();
    // A 200 whose body is not JSON: the provider acted, and its answer cannot be read.
    await scenario(env, id, ['garbled']);
    await client.submit({ id, kind: 'payment', provider: 'sandbox', operation: 'charge', payload: charge() }, { via: 'amqp' });
    await until('the unknown update', () => seen.some((s) => s.event.command_id === id && s.event.status === 'unknown'));
    const update = seen.find((s) => s.event.command_id === id && s.event.status === 'unknown');
    assert.equal(update?.type, 'unknown');
    const waited = await client.outcome(id, { timeoutMs: 1000 }).catch((e: unknown) => e);
    assert.ok(waited instanceof OutcomeTimeoutError, String(waited));
    assert.equal(waited.lastEvent?.status, 'unknown', 'the timeout says the command is unknown, not failed');
  } finally {
    await subscriber.close();
    await deleteQueue(env, queue);
  }
});
