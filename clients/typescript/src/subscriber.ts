/**
 * A durable subscription to lifecycle events: the core app's own quorum queue on
 * `switchyard.events`, bound with its binding keys, that outlives this process and the broker's
 * restarts, so no event is lost while either is down.
 *
 * What the handler can rely on:
 * - an event is acknowledged only after the handler resolved; one that threw comes back;
 * - an event is handed over once (de-duplicated on `event_id`: the fleet may publish a
 *   transition twice, and a redelivery after a lost connection is the same event);
 * - per command, events are handed over one at a time and never backwards: an event whose
 *   `seq` is below the highest already handled is stale (late or reordered) and goes to
 *   `onStale` instead, so the handler always sees the current status;
 * - `unknown` is flagged as its own kind of update: the provider may have acted, so it is
 *   neither a failure nor something to retry.
 *
 * Webhook-free by design: the subscriber pulls from the broker, so the core app exposes no
 * endpoint and loses nothing while it is down.
 */
import type { Channel, ChannelModel, ConsumeMessage } from 'amqplib';

import { AmqpConnection, type ReconnectPolicy } from './amqp/connection.js';
import { sleep } from './backoff.js';
import { BoundedMap } from './bounded.js';
import { DecodeError, HandlerError, UnavailableError } from './errors.js';
import { isTerminal, parseEvent } from './lifecycle.js';
import type { LifecycleEvent } from './models.js';
import { EVENTS_EXCHANGE } from './outcomes.js';

/** How an update relates to the command's lifecycle. */
export type UpdateType =
  /** pending, processing, retrying, waiting: the command is on its way. */
  | 'progress'
  /**
   * The provider may have acted but its answer could not be read. Not a failure and never to be
   * retried: a status check or an operator (`switchyard resolve`) ends it.
   */
  | 'unknown'
  /** completed, failed, duplicate: the run is over. */
  | 'terminal';

/** What the handler is told besides the event. */
export interface Delivery {
  type: UpdateType;
  /** The routing key, `{kind}.{provider}.{status}`. */
  routingKey: string;
  /** The broker delivered this message before (to this or an earlier connection). */
  redelivered: boolean;
}

/** The handler: resolve to acknowledge, throw to have the event delivered again. */
export type EventHandler = (event: LifecycleEvent, delivery: Delivery) => Promise<void> | void;

/**
 * What the subscriber remembers to de-duplicate and order events. The default keeps it in
 * memory (bounded); a core app that must not see an event twice across its own restarts can
 * keep it in its database instead, in the same transaction as the handler's work.
 */
export interface SubscriberState {
  /** Whether this event was handled already. */
  seen(eventId: string): boolean | Promise<boolean>;
  /** The highest `seq` handled for the command, if any. */
  highestSeq(commandId: string): number | undefined | Promise<number | undefined>;
  /** Records an event as handled (after the handler resolved, before the acknowledgement). */
  record(event: LifecycleEvent): void | Promise<void>;
}

/** The default {@link SubscriberState}: in memory, forgetting the oldest past its bounds. */
export class MemoryState implements SubscriberState {
  private readonly events: BoundedMap<string, true>;
  private readonly seqs: BoundedMap<string, number>;

  constructor(options: { maxEvents?: number; maxCommands?: number } = {}) {
    this.events = new BoundedMap(options.maxEvents ?? 100_000);
    this.seqs = new BoundedMap(options.maxCommands ?? 100_000);
  }

  seen(eventId: string): boolean {
    return this.events.has(eventId);
  }

  highestSeq(commandId: string): number | undefined {
    return this.seqs.get(commandId);
  }

  record(event: LifecycleEvent): void {
    this.events.set(event.event_id, true);
    const highest = this.seqs.get(event.command_id);
    if (highest === undefined || event.seq > highest) this.seqs.set(event.command_id, event.seq);
  }
}

export interface SubscriberOptions {
  /** The broker, e.g. `amqp://user:password@host:5672/vhost`. */
  amqpUrl: string;
  /**
   * The queue's name, yours to choose (e.g. `billing.switchyard-events`). Declared durable and
   * quorum; it keeps events while nobody consumes, so a name is one subscription: give each
   * consuming service its own and let its instances share it.
   */
  queue: string;
  /** Binding keys on `switchyard.events`, e.g. `['payment.#']` or `['*.*.completed', '*.*.failed']`. */
  bindings: readonly string[];
  handler: EventHandler;
  /** Events handled at once (across commands; one command's are handled one by one). Default 16. */
  prefetch?: number;
  state?: SubscriberState;
  /**
   * An event handled already (same `event_id`), delivered again: the fleet republished a
   * transition, or the broker redelivered after a lost connection. Acknowledged, not handled.
   */
  onDuplicate?: (event: LifecycleEvent) => void;
  /** An event older (lower `seq`) than one already handled for its command. Acknowledged, not handled. */
  onStale?: (event: LifecycleEvent, highestSeq: number) => void;
  /** Connection losses, handler failures and undecodable messages (which are rejected, not requeued). */
  onError?: (error: Error) => void;
  /** How long a failed event waits before it is put back for another try. Default 1 s. */
  retryDelayMs?: number;
  /** How long `subscribe` waits for the queue to be declared, bound and consumed. Default 30 s. */
  startTimeoutMs?: number;
  /** Shown in the broker's management UI. Default `switchyard-client subscriber {queue}`. */
  connectionName?: string;
  reconnect?: ReconnectPolicy;
}

/** A running subscription; see {@link subscribe}. */
export class Subscriber {
  private connection: AmqpConnection | undefined;
  private channel: Channel | undefined;
  private closing = false;
  /** One chain per command, so its events are handled in order and one at a time. */
  private readonly chains = new Map<string, Promise<void>>();
  private readonly inFlight = new Set<Promise<void>>();
  private readonly state: SubscriberState;
  private readonly onError: (error: Error) => void;
  private started: (() => void) | undefined;
  private consumers = 0;
  private consumerTag: string | undefined;

  private constructor(private readonly options: SubscriberOptions) {
    this.state = options.state ?? new MemoryState();
    this.onError = options.onError ?? (() => undefined);
  }

  /** Declares the queue, binds it and starts consuming; resolves once it consumes. */
  static async start(options: SubscriberOptions): Promise<Subscriber> {
    if (options.bindings.length === 0) throw new TypeError('a subscriber needs at least one binding key');
    const subscriber = new Subscriber(options);
    const consuming = new Promise<void>((resolve) => {
      subscriber.started = resolve;
    });
    subscriber.connection = await AmqpConnection.open({
      url: options.amqpUrl,
      name: options.connectionName ?? `switchyard-client subscriber ${options.queue}`,
      ...(options.reconnect === undefined ? {} : { reconnect: options.reconnect }),
      onError: (err) => subscriber.onError(err),
    });
    subscriber.connection.onConnect((model, generation) => {
      void subscriber.setUp(model, generation);
    });
    const timeoutMs = options.startTimeoutMs ?? 30_000;
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<'timeout'>((resolve) => {
      timer = setTimeout(() => resolve('timeout'), timeoutMs);
    });
    const first = await Promise.race([consuming, timedOut]);
    clearTimeout(timer);
    if (first === 'timeout') {
      await subscriber.close();
      throw new UnavailableError(`the subscriber was not consuming ${options.queue} within ${timeoutMs} ms`, 0);
    }
    return subscriber;
  }

  /** How many times the queue was (re)consumed: 1 after the start, +1 per recovery. */
  get consumerStarts(): number {
    return this.consumers;
  }

  /** Stops consuming, lets the handlers in flight finish (and be acknowledged), then disconnects. */
  async close(): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    const channel = this.channel;
    if (channel !== undefined) {
      try {
        if (this.consumerTag !== undefined) await channel.cancel(this.consumerTag);
      } catch {
        // The channel may already be gone; the connection's close ends the consumer anyway.
      }
    }
    await Promise.allSettled([...this.inFlight]);
    await this.connection?.close();
  }

  private async setUp(model: ChannelModel, generation: number): Promise<void> {
    const { queue, bindings } = this.options;
    let channel: Channel | undefined;
    try {
      channel = await model.createChannel();
      const ch = channel;
      ch.on('error', (err: Error) => this.onError(err));
      ch.on('close', () => {
        if (this.channel === ch) this.channel = undefined;
        // Closed by the broker while the connection lives (a channel error): start over on it.
        this.retryLater(model, generation);
      });
      await ch.prefetch(this.options.prefetch ?? 16);
      await ch.assertExchange(EVENTS_EXCHANGE, 'topic', { durable: true });
      await ch.assertQueue(queue, { durable: true, arguments: { 'x-queue-type': 'quorum' } });
      for (const key of bindings) await ch.bindQueue(queue, EVENTS_EXCHANGE, key);
      const { consumerTag } = await ch.consume(queue, (msg) => this.receive(ch, msg), { noAck: false });
      this.consumerTag = consumerTag;
      this.channel = ch;
      this.consumers += 1;
      this.started?.();
      this.started = undefined;
    } catch (err) {
      this.onError(err instanceof Error ? err : new Error(String(err)));
      await channel?.close().catch(() => undefined);
    }
  }

  private retryLater(model: ChannelModel, generation: number): void {
    setTimeout(() => {
      if (!this.closing && this.channel === undefined && this.connection?.currentGeneration === generation) {
        void this.setUp(model, generation);
      }
    }, 1_000);
  }

  private receive(channel: Channel, msg: ConsumeMessage | null): void {
    if (msg === null) return; // cancelled by the broker (queue deleted): the channel closes next
    let event: LifecycleEvent;
    try {
      event = parseEvent(msg.content);
    } catch (err) {
      this.onError(err instanceof DecodeError ? err : new DecodeError(String(err)));
      settle(channel, msg, 'reject');
      return;
    }
    const id = event.command_id;
    const previous = this.chains.get(id) ?? Promise.resolve();
    const next = previous.then(() => this.handle(channel, msg, event));
    this.chains.set(id, next);
    this.inFlight.add(next);
    void next.finally(() => {
      this.inFlight.delete(next);
      if (this.chains.get(id) === next) this.chains.delete(id);
    });
  }

  private async handle(channel: Channel, msg: ConsumeMessage, event: LifecycleEvent): Promise<void> {
    try {
      if (await this.state.seen(event.event_id)) {
        this.options.onDuplicate?.(event);
        settle(channel, msg, 'ack');
        return;
      }
      const highest = await this.state.highestSeq(event.command_id);
      if (highest !== undefined && event.seq <= highest) {
        this.options.onStale?.(event, highest);
        settle(channel, msg, 'ack');
        return;
      }
      const delivery: Delivery = {
        type: event.status === 'unknown' ? 'unknown' : isTerminal(event.status) ? 'terminal' : 'progress',
        routingKey: msg.fields.routingKey,
        redelivered: msg.fields.redelivered,
      };
      await this.options.handler(event, delivery);
      await this.state.record(event);
      settle(channel, msg, 'ack');
    } catch (err) {
      this.onError(new HandlerError(event, err));
      if (!this.closing) await sleep(this.options.retryDelayMs ?? 1_000);
      settle(channel, msg, 'requeue');
    }
  }
}

/**
 * Settles a delivery on the channel it came from. When that channel is gone (the connection
 * dropped) there is nothing to settle: the broker redelivers the message on the next
 * connection, and the state's `seen` recognises an event that was already handled.
 */
function settle(channel: Channel, msg: ConsumeMessage, how: 'ack' | 'requeue' | 'reject'): void {
  try {
    if (how === 'ack') channel.ack(msg);
    else channel.nack(msg, false, how === 'requeue');
  } catch {
    // Channel closed: see above.
  }
}

/** Starts a {@link Subscriber}: resolves once its queue is declared, bound and consumed. */
export function subscribe(options: SubscriberOptions): Promise<Subscriber> {
  return Subscriber.start(options);
}

