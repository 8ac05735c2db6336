/**
 * The client's parts that need no fleet: identifiers, event decoding, Retry-After, the
 * subscriber's memory, and the HTTP retry policy against a local server that plays an
 * unavailable ingress.
 */
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { describe, test } from 'node:test';

import {
  AuthenticationError,
  ConfigurationError,
  DecodeError,
  IdempotencyConflictError,
  InvalidCommandError,
  MemoryState,
  parseEvent,
  SwitchyardClient,
  UnavailableError,
  uuidv7,
} from '../src/index.js';
import { parseRetryAfter } from '../src/backoff.js';
import type { LifecycleEvent } from '../src/models.js';

function event(overrides: Partial<LifecycleEvent> = {}): LifecycleEvent {
  return {
    event_id: '00000000-0000-5000-8000-000000000001',
    command_id: '0193f0c1-0000-7000-8000-000000000001',
    seq: 5,
    status: 'processing',
    kind: 'payment',
    provider: 'sandbox',
    operation: 'charge',
    attempt: 1,
    occurred_at: '2026-11-25T10:00:00Z',
    ...overrides,
  };
}

describe('identifiers', () => {
  test('uuidv7 is a version-7, RFC 9562 variant UUID, ordered by time', () => {
    const a = uuidv7(1_700_000_000_000);
    const b = uuidv7(1_700_000_000_001);
    assert.match(a, /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    assert.ok(a < b);
  });
});

describe('events', () => {
  test('a v1 event decodes, unknown extra fields kept', () => {
    const e = parseEvent(Buffer.from(JSON.stringify({ ...event(), future_field: 1 })));
    assert.equal(e.status, 'processing');
    assert.equal(e.future_field, 1);
  });

  test('what is not a v1 event is a DecodeError', () => {
    assert.throws(() => parseEvent(Buffer.from('not json')), DecodeError);
    assert.throws(() => parseEvent({ ...event(), seq: -1 }), DecodeError);
    assert.throws(() => parseEvent({ ...event(), status: 'exploded' }), DecodeError);
    const { event_id: _dropped, ...noId } = event();
    assert.throws(() => parseEvent(noId), DecodeError);
  });
});

describe('Retry-After', () => {
  test('delta-seconds and HTTP dates', () => {
    assert.equal(parseRetryAfter('2'), 2000);
    assert.equal(parseRetryAfter(new Date(10_000).toUTCString(), 4_000), 6_000);
    assert.equal(parseRetryAfter(null), undefined);
    assert.equal(parseRetryAfter('soon'), undefined);
  });
});

describe('MemoryState', () => {
  test('remembers handled events and the highest seq per command, within its bounds', () => {
    const state = new MemoryState({ maxEvents: 2, maxCommands: 2 });
    state.record(event({ event_id: 'e1', seq: 5 }));
    state.record(event({ event_id: 'e2', seq: 7 }));
    state.record(event({ event_id: 'e3', seq: 6 }));
    assert.equal(state.highestSeq(event().command_id), 7);
    assert.equal(state.seen('e3'), true);
    assert.equal(state.seen('e1'), false, 'the oldest event id is forgotten past maxEvents');
  });
});

describe('configuration', () => {
  test('a client needs a URL, and an ingress URL needs a token', () => {
    assert.throws(() => new SwitchyardClient({}), ConfigurationError);
    assert.throws(() => new SwitchyardClient({ url: 'http://127.0.0.1:1' }), ConfigurationError);
  });

  test('outcome() without a broker says what to configure', async () => {
    const client = new SwitchyardClient({ url: 'http://127.0.0.1:1', token: 't' });
    await assert.rejects(client.outcome('x'), ConfigurationError);
    await client.close();
  });
});

/** A local HTTP server answering each request with the next of `answers`. */
async function ingress(
  answers: Array<(req: IncomingMessage, res: ServerResponse) => void>,
): Promise<{ url: string; requests: Array<{ headers: IncomingMessage['headers']; body: string; at: number }>; close: () => Promise<void> }> {
  const requests: Array<{ headers: IncomingMessage['headers']; body: string; at: number }> = [];
  const server = createServer((req, res) => {
    let body = '';
    req.on('data', (c: Buffer) => (body += c.toString()));
    req.on('end', () => {
      requests.push({ headers: req.headers, body, at: Date.now() });
      const answer = answers[Math.min(requests.length - 1, answers.length - 1)];
      answer?.(req, res);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

function problem(res: ServerResponse, status: number, type: string, extra: Record<string, string> = {}): void {
  res.writeHead(status, { 'content-type': 'application/problem+json', ...extra });
  res.end(JSON.stringify({ type: `urn:switchyard:problem:${type}`, title: type, status, detail: 'd', field: 'idempotency_key' }));
}

describe('HTTP submit', () => {
  const command = { kind: 'payment', provider: 'sandbox', operation: 'charge', payload: { amount: 1 } };

  test('a 503 is retried after its Retry-After, with the same key and the same bytes', async () => {
    const server = await ingress([
      (_req, res) => problem(res, 503, 'unavailable', { 'retry-after': '1' }),
      (_req, res) => {
        res.writeHead(202, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ id: 'c1', status: 'pending', status_url: '/v1/commands/c1' }));
      },
    ]);
    const client = new SwitchyardClient({ url: server.url, token: 't' });
    try {
      const submitted = await client.submit(command);
      assert.equal(submitted.id, 'c1');
      assert.equal(submitted.attempts, 2);
      assert.equal(submitted.replayed, false);
      const [first, second] = server.requests;
      assert.ok(first !== undefined && second !== undefined);
      assert.ok(second.at - first.at >= 1000, `waited ${second.at - first.at} ms, Retry-After asked 1 s`);
      assert.equal(first.headers['idempotency-key'], submitted.idempotencyKey);
      assert.equal(second.headers['idempotency-key'], submitted.idempotencyKey);
      assert.equal(second.body, first.body);
      assert.equal(first.headers.authorization, 'Bearer t');
    } finally {
      await client.close();
      await server.close();
    }
  });

  test('problem answers become typed errors, and are not retried', async () => {
    const server = await ingress([
      (_req, res) => problem(res, 422, 'idempotency_conflict'),
      (_req, res) => problem(res, 422, 'invalid'),
      (_req, res) => problem(res, 401, 'unauthenticated'),
    ]);
    const client = new SwitchyardClient({ url: server.url, token: 't' });
    try {
      const conflict = await client.submit(command).catch((e: unknown) => e);
      assert.ok(conflict instanceof IdempotencyConflictError);
      assert.equal(conflict.problem.field, 'idempotency_key');
      assert.ok(conflict.problem.type.endsWith('idempotency_conflict'));
      await assert.rejects(client.submit(command), InvalidCommandError);
      await assert.rejects(client.submit(command), AuthenticationError);
      assert.equal(server.requests.length, 3);
    } finally {
      await client.close();
      await server.close();
    }
  });

  test('an ingress that cannot be reached is UnavailableError after the retry budget', async () => {
    const server = await ingress([]);
    const url = server.url;
    await server.close(); // nothing listens there now
    const client = new SwitchyardClient({ url, token: 't', retry: { maxAttempts: 3, baseDelayMs: 10 } });
    const err = await client.submit(command).catch((e: unknown) => e);
    assert.ok(err instanceof UnavailableError, String(err));
    assert.equal(err.attempts, 3);
    await client.close();
  });
});
