/**
 * Stopping and starting the shared broker, for the restart test. Several suites may share one
 * RabbitMQ, so a restart happens only while holding an exclusive lock on a file
 * (`SWITCHYARD_TEST_BROKER_LOCK`, default /tmp/sy-broker.lock; set it empty when the caller
 * already holds it), taken with flock(1) so shell scripts can take the same lock.
 *
 * Whoever stops the broker must start it again, whatever happens: `stopApp` registers a
 * start on process exit and on SIGINT/SIGTERM until `startApp` has run.
 */
import { type ChildProcessByStdio, execFile, execFileSync, spawn } from 'node:child_process';
import type { Readable, Writable } from 'node:stream';
import { promisify } from 'node:util';

const run = promisify(execFile);

function command(ctl: string, args: string[]): [string, string[]] {
  const [program = 'rabbitmqctl', ...prefix] = ctl.split(/\s+/).filter((s) => s !== '');
  return [program, [...prefix, ...args]];
}

/** Runs `{ctl} {args}` (ctl is `SWITCHYARD_TEST_BROKER_RESTART`, e.g. `rabbitmqctl`). */
export async function brokerCtl(ctl: string, ...args: string[]): Promise<void> {
  const [program, argv] = command(ctl, args);
  await run(program, argv, { timeout: 180_000 });
}

let stoppedBy: string | undefined;

function startAgainNow(): void {
  if (stoppedBy === undefined) return;
  const [program, argv] = command(stoppedBy, ['start_app']);
  stoppedBy = undefined;
  try {
    execFileSync(program, argv, { timeout: 120_000, stdio: 'ignore' });
  } catch {
    // Nothing more can be done from a dying process; the next suite's await_startup will say.
  }
}

process.on('exit', startAgainNow);
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    startAgainNow();
    process.exit(128 + (signal === 'SIGINT' ? 2 : 15));
  });
}

/** `stop_app`; until `startApp`, the broker is started again should this process end. */
export async function stopApp(ctl: string): Promise<void> {
  stoppedBy = ctl;
  await brokerCtl(ctl, 'stop_app');
}

/** `start_app`, then `await_startup`. */
export async function startApp(ctl: string): Promise<void> {
  await brokerCtl(ctl, 'start_app');
  stoppedBy = undefined;
  await brokerCtl(ctl, 'await_startup');
}

/** A held lock; `release` lets others restart the broker. */
export interface BrokerLock {
  release(): Promise<void>;
}

/**
 * Takes the broker-restart lock, waiting up to `waitSeconds` for whoever holds it (then failing,
 * naming the lock), or until `signal` aborts.
 */
export async function lockBroker(waitSeconds: number, signal?: AbortSignal): Promise<BrokerLock> {
  const path = process.env.SWITCHYARD_TEST_BROKER_LOCK ?? '/tmp/sy-broker.lock';
  if (path === '') return { release: async () => undefined };
  // The lock lives as long as `cat` waits on our stdin: closing it (or our dying) releases it.
  const child: ChildProcessByStdio<Writable, Readable, null> = spawn(
    'flock',
    ['-w', String(waitSeconds), path, '-c', 'echo locked; exec cat >/dev/null'],
    { stdio: ['pipe', 'pipe', 'inherit'] },
  );
  const release = (): Promise<void> =>
    new Promise<void>((resolve) => {
      if (child.exitCode !== null || child.signalCode !== null) {
        resolve();
        return;
      }
      child.on('exit', () => resolve());
      child.stdin.end();
    });
  try {
    await new Promise<void>((resolve, reject) => {
      let out = '';
      const onAbort = (): void => {
        child.kill();
        reject(new Error(`gave up waiting for the broker lock ${path}: ${String(signal?.reason)}`));
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      child.stdout.on('data', (chunk: Buffer) => {
        out += chunk.toString();
        if (out.includes('locked')) {
          signal?.removeEventListener('abort', onAbort);
          resolve();
        }
      });
      child.on('error', (err) => reject(new Error(`cannot run flock(1) for ${path}: ${err.message}`)));
      child.on('exit', (code) =>
        reject(
          new Error(
            `the broker lock ${path} stayed held by someone else for ${waitSeconds} s (flock exited ${String(code)}): ` +
              'another suite is restarting the broker; run this one again when it is done',
          ),
        ),
      );
    });
  } catch (err) {
    await release();
    throw err;
  }
  return { release };
}
