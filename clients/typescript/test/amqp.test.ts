/**
 * The AMQP publish itself, against the fleet's broker: shaped as the fleet's own publisher
 * shapes commands, and a publish that nothing routes is an error, never a silent loss.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, test } from 'node:test';

import { type Channel, type ChannelModel, connect, type ConsumeMessage } from 'amqplib';

import { AmqpConnection } from '../src/amqp/connection.js';
import { Publisher } from '../src/amqp/publisher.js';
import { COMMANDS_EXCHANGE, COMMAND_TYPE_V1, PublishError, SwitchyardClient, UnroutableError } from '../src/index.js';
import { charge, type FleetEnv, fleetEnv } from './support/fleet.js';

let env: FleetEnv;
let model: ChannelModel;
let channel: Channel;

before(async () => {
  env = fleetEnv();
  model = await connect(env.amqpUrl);
  channel = await model.createChannel();
});

after(async () => {
  await model?.close();
});

test('a command goes out persistent, as JSON, with its id as message id and the v1 type', async () => {
  // A provider no worker serves, bound to a queue of ours: the command lands here, untouched.
  const provider = `ts_probe_${randomUUID().replace(/-/g, '').slice(0, 12)}`;
  const { queue } = await channel.assertQueue('', { exclusive: true });
  await channel.bindQueue(queue, COMMANDS_EXCHANGE, `payment.${provider}.charge`);
  const client = new SwitchyardClient({ amqpUrl: env.amqpUrl });
  try {
    const submitted = await client.submit(
      { kind: 'payment', provider, operation: 'charge', payload: charge(), metadata: { order: '7' }, idempotencyKey: 'k-probe' },
      { via: 'amqp', traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01' },
    );
    const msg = await new Promise<ConsumeMessage>((resolve) => {
      void channel.consume(queue, (m) => m !== null && resolve(m), { noAck: true });
    });
    assert.equal(msg.properties.deliveryMode, 2);
    assert.equal(msg.properties.contentType, 'application/json');
    assert.equal(msg.properties.messageId, submitted.id);
    assert.equal(msg.properties.type, COMMAND_TYPE_V1);
    assert.equal(typeof msg.properties.timestamp, 'number');
    assert.equal(msg.properties.headers?.traceparent, '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01');
    const body = JSON.parse(msg.content.toString()) as Record<string, unknown>;
    assert.equal(body.id, submitted.id);
    assert.equal(body.idempotency_key, 'k-probe');
    assert.deepEqual(body.metadata, { order: '7' });
    assert.equal(typeof body.created_at, 'string');
    assert.match(String(body.id), /^[0-9a-f]{8}-[0-9a-f]{4}-7/);
  } finally {
    await client.close();
  }
});

test('a publish nothing routes comes back and is an UnroutableError; a missing exchange is not_found', async () => {
  const exchange = `ts-client-test.no-route.${randomUUID()}`;
  await channel.assertExchange(exchange, 'topic', { durable: false, autoDelete: false });
  const connection = await AmqpConnection.open({ url: env.amqpUrl, name: 'switchyard-client tests (publisher)' });
  const publisher = new Publisher(connection);
  try {
    const message = (ex: string) => ({
      exchange: ex,
      routingKey: 'payment.nobody.charge',
      body: Buffer.from('{}'),
      properties: { messageId: randomUUID(), persistent: true },
    });
    await assert.rejects(publisher.publish(message(exchange), Date.now() + 10_000), UnroutableError);
    const missing = await publisher.publish(message(`${exchange}.missing`), Date.now() + 10_000).catch((e: unknown) => e);
    assert.ok(missing instanceof PublishError, String(missing));
    assert.equal(missing.reason, 'not_found');
  } finally {
    await channel.deleteExchange(exchange);
    await publisher.close();
    await connection.close();
  }
});
