/**
 * What the suite needs of a real fleet, read from the environment the harness sets
 * (tests/clients.rs). A missing variable fails the suite loudly, saying how to get a fleet:
 * these tests prove the client against the real thing, and skipping them would prove nothing.
 */
import { readFileSync } from 'node:fs';
import { request } from 'node:https';

import { connect } from 'amqplib';

export interface FleetEnv {
  url: string;
  token: string;
  amqpUrl: string;
  sandboxUrl: string;
  sandboxCa: string;
  brokerCtl: string;
}

const VARS = {
  url: 'SWITCHYARD_URL',
  token: 'SWITCHYARD_TOKEN',
  amqpUrl: 'SWITCHYARD_AMQP_URL',
  sandboxUrl: 'SWITCHYARD_SANDBOX_URL',
  sandboxCa: 'SWITCHYARD_SANDBOX_CA',
  brokerCtl: 'SWITCHYARD_TEST_BROKER_RESTART',
} as const satisfies Record<keyof FleetEnv, string>;

/** The fleet's addresses; throws, naming what is missing and how to get a fleet. */
export function fleetEnv(): FleetEnv {
  const missing = Object.values(VARS).filter((name) => (process.env[name] ?? '') === '');
  if (missing.length > 0) {
    throw new Error(
      `The TypeScript client's tests run against a real Switchyard fleet, and ${missing.join(', ')} ` +
        `${missing.length === 1 ? 'is' : 'are'} not set.\n` +
        'Run them through the harness, which starts a fleet and sets the environment:\n' +
        '    cargo test -p switchyard-e2e --test clients the_typescript\n' +
        'or start a fleet by hand and source its environment:\n' +
        '    SWITCHYARD_FLEET_ENV_FILE=/tmp/ts-fleet.env cargo test -p switchyard-e2e --test clients -- --ignored --nocapture serve_a_fleet &\n' +
        '    source /tmp/ts-fleet.env && npm test      # rm /tmp/ts-fleet.env stops the fleet\n' +
        '(RabbitMQ with the management plugin must run: `./dev test` sets it up.)',
    );
  }
  const get = (name: string): string => process.env[name] ?? '';
  return {
    url: get(VARS.url),
    token: get(VARS.token),
    amqpUrl: get(VARS.amqpUrl),
    sandboxUrl: get(VARS.sandboxUrl).replace(/\/+$/, ''),
    sandboxCa: get(VARS.sandboxCa),
    brokerCtl: get(VARS.brokerCtl),
  };
}

/** A request to the HTTPS sandbox, trusting its own CA only. */
async function sandbox(env: FleetEnv, method: string, path: string, body?: unknown): Promise<{ status: number; body: string }> {
  const ca = readFileSync(env.sandboxCa);
  const data = body === undefined ? undefined : JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const req = request(
      `${env.sandboxUrl}${path}`,
      {
        method,
        ca,
        headers: data === undefined ? {} : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data) },
        timeout: 10_000,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString() }));
      },
    );
    req.on('error', reject);
    req.on('timeout', () => req.destroy(new Error(`sandbox ${method} ${path} timed out`)));
    if (data !== undefined) req.write(data);
    req.end();
  });
}

/** Scripts the sandbox's next answers to `commandId`'s requests (e.g. `['402']`, `['slow:500', 'ok']`). */
export async function scenario(env: FleetEnv, commandId: string, steps: string[]): Promise<void> {
  const res = await sandbox(env, 'PUT', `/_sandbox/scenarios/${commandId}`, { steps });
  if (res.status !== 200) throw new Error(`the sandbox refused the scenario ${JSON.stringify(steps)}: ${res.status} ${res.body}`);
}

/** A charge the payment schema accepts. */
export function charge(amount = 500): Record<string, unknown> {
  return { amount, currency: 'eur', payment_method: 'pm_card_visa' };
}

/** An SMS the notification schema accepts. */
export function sms(body = 'Your parcel is on its way'): Record<string, unknown> {
  return { to: '+14155550100', body };
}

/** Resolves once `check` is true, polling the test's own state (not the fleet) every 50 ms. */
export async function until(what: string, check: () => boolean, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Deletes a test's durable queue, so a long-lived fleet does not collect events for nobody. */
export async function deleteQueue(env: FleetEnv, queue: string): Promise<void> {
  const model = await connect(env.amqpUrl);
  try {
    const channel = await model.createChannel();
    await channel.deleteQueue(queue);
  } finally {
    await model.close();
  }
}
