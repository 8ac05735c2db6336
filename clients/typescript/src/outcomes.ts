/**
 * Waiting for a command's outcome without polling and without missing it.
 *
 * The watcher owns a private, exclusive queue on `switchyard.events`, bound to the terminal
 * statuses (and `waiting`/`unknown`, to say where a command stands when the wait times out) of
 * each `{kind}.{provider}` this client submitted to. `submit` binds *before* it publishes, so an
 * event cannot slip between the publish and the `outcome` call: it is kept until asked for.
 *
 * What the queue cannot have seen is asked of the ledger once (when the client knows the
 * ingress URL): a command that ended before the binding existed (a duplicate's original, a
 * command submitted elsewhere) and anything published while the connection was down (an
 * exclusive queue does not outlive its connection), once after each reconnect. A last look at
 * the ledger is taken when the wait times out. Nothing is polled.
 */
import type { Channel, ChannelModel, ConsumeMessage } from 'amqplib';

import { BoundedMap } from './bounded.js';
import { ClosedError, ConfigurationError, OutcomeTimeoutError, UnavailableError } from './errors.js';
import type { CommandRecord, IngressClient } from './http.js';
import { eventRoutingKey, isTerminalEvent, parseEvent, type TerminalEvent } from './lifecycle.js';
import type { AmqpConnection } from './amqp/connection.js';
import type { LifecycleEvent, Status } from './models.js';

/** The events exchange of the contract. */
export const EVENTS_EXCHANGE = 'switchyard.events';

/** The statuses the watcher listens to for every `{kind}.{provider}` it watches. */
const WATCHED: readonly Status[] = ['completed', 'failed', 'duplicate', 'waiting', 'unknown'];

export interface OutcomeOptions {
  /** How long to wait for the terminal event. Default 60 s. */
  timeoutMs?: number;
  signal?: AbortSignal;
  /**
   * The command's kind and provider, for a command this client did not submit and cannot look
   * up in the ledger (no ingress URL configured).
   */
  kind?: string;
  provider?: string;
}

interface Lane {
  generation: number;
  channel: Channel;
  queue: string;
  bound: Set<string>;
  closed: boolean;
}

type Waiter = { resolve: (event: TerminalEvent) => void; reject: (error: Error) => void };

/** The terminal event with the highest `seq` among a ledger record's events, if its latest is terminal. */
export function terminalOf(record: CommandRecord | undefined): TerminalEvent | undefined {
  if (record === undefined || record.events.length === 0) return undefined;
  let latest = record.events[0];
  for (const event of record.events) if (latest === undefined || event.seq > latest.seq) latest = event;
  return latest !== undefined && isTerminalEvent(latest) ? latest : undefined;
}

export class OutcomeWatcher {
  private readonly pairs = new Set<string>();
  private lane: Lane | undefined;
  private laneWaiters = new Set<() => void>();
  /** Terminal events of any command the queue saw, newest last. */
  private readonly recent = new BoundedMap<string, TerminalEvent>(4096);
  /** Commands submitted through this client, until when their outcome is kept (epoch ms). */
  private readonly expected = new Map<string, number>();
  /** Terminal events of expected commands: kept until their time is up, however many others arrive. */
  private readonly kept = new Map<string, TerminalEvent>();
  /** The latest open status of expected or awaited commands. */
  private readonly latest = new BoundedMap<string, LifecycleEvent>(4096);
  private readonly waiters = new Map<string, Set<Waiter>>();
  private closed = false;
  private readonly detach: () => void;

  constructor(
    private readonly connection: AmqpConnection,
    private readonly ledger: IngressClient | undefined,
    private readonly onError: (error: Error) => void,
    private readonly keepMs: number = 15 * 60_000,
  ) {
    this.detach = connection.onConnect((model, generation) => {
      void this.setUp(model, generation);
    });
  }

  /** Remembers that this client submitted `id`, so its outcome is kept until asked for. */
  expect(id: string): void {
    const now = Date.now();
    for (const [known, until] of this.expected) {
      if (until > now) break; // insertion order is expiry order
      this.expected.delete(known);
      this.kept.delete(known);
    }
    this.expected.delete(id);
    this.expected.set(id, now + this.keepMs);
    const seen = this.recent.get(id);
    if (seen !== undefined) this.kept.set(id, seen);
  }

  /** Binds the watcher's queue to `{kind}.{provider}`'s statuses; resolves once the broker has the bindings. */
  async watch(kind: string, provider: string, deadline: number): Promise<void> {
    const pair = `${kind}.${provider}`;
    this.pairs.add(pair);
    for (;;) {
      const lane = await this.readyLane(deadline);
      if (lane.bound.has(pair)) return;
      try {
        await bind(lane, pair);
        return;
      } catch (err) {
        if (!lane.closed) throw err;
        // The connection went while binding: the next lane binds every pair, this one included.
      }
    }
  }

  /** The terminal event of `id`; see {@link OutcomeOptions}. */
  async outcome(id: string, options: OutcomeOptions = {}): Promise<TerminalEvent> {
    if (this.closed) throw new ClosedError('the client is closed');
    const timeoutMs = options.timeoutMs ?? 60_000;
    const deadline = Date.now() + timeoutMs;
    const known = this.known(id);
    if (known !== undefined) return known;

    if (!this.expected.has(id)) {
      let { kind, provider } = options;
      if (kind === undefined || provider === undefined) {
        if (this.ledger === undefined) {
          throw new ConfigurationError(
            `command ${id} was not submitted by this client: pass { kind, provider }, or configure the ingress URL so the ledger can be asked`,
          );
        }
        const record = await this.ledger.command(id, options.signal);
        const ended = terminalOf(record);
        if (ended !== undefined) return ended;
        if (record?.kind === undefined || record.provider === undefined) {
          throw new ConfigurationError(
            `the ledger does not know command ${id} yet: pass { kind, provider } to wait for it`,
          );
        }
        kind = record.kind;
        provider = record.provider;
      }
      await this.watch(kind, provider, deadline);
    }

    return new Promise<TerminalEvent>((resolve, reject) => {
      let settled = false;
      const finish = (result: { event: TerminalEvent } | { error: unknown }): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        options.signal?.removeEventListener('abort', onAbort);
        const set = this.waiters.get(id);
        set?.delete(waiter);
        if (set?.size === 0) this.waiters.delete(id);
        if ('event' in result) resolve(result.event);
        else reject(result.error);
      };
      const waiter: Waiter = { resolve: (event) => finish({ event }), reject: (error) => finish({ error }) };
      const onAbort = (): void => finish({ error: options.signal?.reason });
      const timer = setTimeout(() => {
        // One last look before giving up: the ledger may have what the queue could not see.
        void this.askLedger(id).then(
          (event) => finish(event === undefined ? { error: this.timeoutError(id, timeoutMs) } : { event }),
          () => finish({ error: this.timeoutError(id, timeoutMs) }),
        );
      }, Math.max(0, deadline - Date.now()));
      options.signal?.addEventListener('abort', onAbort, { once: true });
      let set = this.waiters.get(id);
      if (set === undefined) {
        set = new Set();
        this.waiters.set(id, set);
      }
      set.add(waiter);
      // Registered, and the queue is bound: anything from now on reaches the waiter. What ended
      // before (a replayed command's original) is in the ledger.
      const now = this.known(id);
      if (now !== undefined) {
        finish({ event: now });
        return;
      }
      void this.askLedger(id).then(
        (event) => {
          if (event !== undefined) finish({ event });
        },
        (err: unknown) => this.onError(err instanceof Error ? err : new Error(String(err))),
      );
    });
  }

  /** Stops watching: pending `outcome` calls reject with {@link ClosedError}. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.detach();
    const lane = this.lane;
    this.lane = undefined;
    const error = new ClosedError('the client is closed');
    for (const set of [...this.waiters.values()]) for (const waiter of [...set]) waiter.reject(error);
    if (lane !== undefined && !lane.closed) await lane.channel.close().catch(() => undefined);
  }

  private timeoutError(id: string, timeoutMs: number): OutcomeTimeoutError {
    return new OutcomeTimeoutError(id, timeoutMs, this.latest.get(id));
  }

  private known(id: string): TerminalEvent | undefined {
    return this.kept.get(id) ?? this.recent.get(id);
  }

  private async askLedger(id: string): Promise<TerminalEvent | undefined> {
    if (this.ledger === undefined) return undefined;
    const event = terminalOf(await this.ledger.command(id));
    if (event !== undefined) this.record(event);
    return event;
  }

  private record(event: LifecycleEvent): void {
    const id = event.command_id;
    if (isTerminalEvent(event)) {
      const earlier = this.recent.get(id);
      if (earlier !== undefined && earlier.seq > event.seq) return;
      this.recent.set(id, event);
      if (this.expected.has(id)) this.kept.set(id, event);
      const set = this.waiters.get(id);
      if (set !== undefined) for (const waiter of [...set]) waiter.resolve(event);
    } else if (this.expected.has(id) || this.waiters.has(id)) {
      const earlier = this.latest.get(id);
      if (earlier === undefined || earlier.seq < event.seq) this.latest.set(id, event);
    }
  }

  private readyLane(deadline: number): Promise<Lane> {
    const ready = (): Lane | undefined => {
      const lane = this.lane;
      return lane !== undefined && !lane.closed && lane.generation === this.connection.currentGeneration
        ? lane
        : undefined;
    };
    const now = ready();
    if (now !== undefined) return Promise.resolve(now);
    return new Promise<Lane>((resolve, reject) => {
      const check = (): void => {
        const lane = ready();
        if (lane === undefined) return;
        clearTimeout(timer);
        this.laneWaiters.delete(check);
        resolve(lane);
      };
      const timer = setTimeout(() => {
        this.laneWaiters.delete(check);
        reject(new UnavailableError('no broker connection to bind the outcome queue in time', 0));
      }, Math.max(0, deadline - Date.now()));
      this.laneWaiters.add(check);
    });
  }

  private async setUp(model: ChannelModel, generation: number): Promise<void> {
    let channel: Channel | undefined;
    try {
      channel = await model.createChannel();
      const lane: Lane = { generation, channel, queue: '', bound: new Set(), closed: false };
      channel.on('error', (err: Error) => this.onError(err));
      channel.on('close', () => {
        lane.closed = true;
        // A channel closed by the broker while the connection lives (e.g. a refused binding)
        // would otherwise leave the watcher deaf until the next reconnect.
        if (!this.closed && this.connection.currentGeneration === generation) {
          setTimeout(() => {
            if (!this.closed && this.connection.currentGeneration === generation && this.lane === lane) {
              void this.setUp(model, generation);
            }
          }, 1_000);
        }
      });
      await channel.assertExchange(EVENTS_EXCHANGE, 'topic', { durable: true });
      const { queue } = await channel.assertQueue('', { exclusive: true, autoDelete: true, durable: false });
      lane.queue = queue;
      for (const pair of this.pairs) await bind(lane, pair);
      await channel.consume(queue, (msg) => this.deliver(msg), { noAck: true });
      if (this.closed) {
        await channel.close().catch(() => undefined);
        return;
      }
      this.lane = lane;
      for (const wake of [...this.laneWaiters]) wake();
      if (generation > 1 || this.waiters.size > 0) {
        // Whatever was published while no queue of ours existed is in the ledger.
        for (const id of [...this.waiters.keys()]) {
          this.askLedger(id).catch((err: unknown) => this.onError(err instanceof Error ? err : new Error(String(err))));
        }
      }
    } catch (err) {
      this.onError(err instanceof Error ? err : new Error(String(err)));
      await channel?.close().catch(() => undefined);
      setTimeout(() => {
        if (!this.closed && this.connection.currentGeneration === generation) void this.setUp(model, generation);
      }, 2_000);
    }
  }

  private deliver(msg: ConsumeMessage | null): void {
    if (msg === null) return; // consumer cancelled: the channel's close sets up a new one
    try {
      this.record(parseEvent(msg.content));
    } catch (err) {
      this.onError(err instanceof Error ? err : new Error(String(err)));
    }
  }
}

async function bind(lane: Lane, pair: string): Promise<void> {
  const [kind = '', provider = ''] = pair.split('.');
  for (const status of WATCHED) {
    await lane.channel.bindQueue(lane.queue, EVENTS_EXCHANGE, eventRoutingKey(kind, provider, status));
  }
  lane.bound.add(pair);
}
