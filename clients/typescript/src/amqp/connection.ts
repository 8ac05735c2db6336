/**
 * One supervised AMQP connection: amqplib's recovering connection (capped exponential backoff
 * with jitter, forever) plus what this client needs on top of it: the current connection for
 * whoever asks, waiting (within a deadline) while there is none, and a hook that runs on every
 * new connection so each user redeclares its channels, queues and bindings there.
 */
import { type ChannelModel, connect, type RecoveringChannelModel } from 'amqplib';

import { ClosedError, PublishError } from '../errors.js';

/** How the connection reconnects. */
export interface ReconnectPolicy {
  /** The first reconnect delay. Default 200 ms. */
  initialDelayMs?: number;
  /** No reconnect delay is longer. Default 10 s. */
  maxDelayMs?: number;
}

export interface ConnectionOptions {
  /** e.g. `amqp://user:password@host:5672/vhost`. A `heartbeat` query parameter is added (10 s) when absent. */
  url: string;
  /** Shown in the broker's management UI, so an operator can tell whose connection it is. */
  name: string;
  reconnect?: ReconnectPolicy;
  /** Connection losses and failed reconnects, for logging. */
  onError?: (error: Error) => void;
}

type Waiter = { resolve: (model: ChannelModel) => void; reject: (error: Error) => void };

/** 10 s heartbeats, as the fleet uses: a dead peer is noticed in about 20 s even when idle. */
function withHeartbeat(url: string): string {
  if (/[?&]heartbeat=/.test(url)) return url;
  return `${url}${url.includes('?') ? '&' : '?'}heartbeat=10`;
}

export class AmqpConnection {
  private readonly recovering: RecoveringChannelModel;
  private model: ChannelModel | undefined;
  private generation = 0;
  private closed = false;
  private readonly waiters = new Set<Waiter>();
  private readonly connectHooks = new Set<(model: ChannelModel, generation: number) => void>();

  private constructor(
    recovering: RecoveringChannelModel,
    private readonly onError: (error: Error) => void,
  ) {
    this.recovering = recovering;
    recovering.on('connect', (model: ChannelModel) => {
      this.model = model;
      this.generation += 1;
      const generation = this.generation;
      for (const waiter of this.waiters) waiter.resolve(model);
      this.waiters.clear();
      for (const hook of this.connectHooks) hook(model, generation);
    });
    recovering.on('disconnect', (error: Error) => {
      this.model = undefined;
      this.onError(error);
    });
    recovering.on('connect-failed', (error: Error) => this.onError(error));
    // An 'error' event without a listener would crash the process.
    recovering.on('error', (error: Error) => this.onError(error));
  }

  /** Starts connecting; resolves at once (the first connection is made in the background). */
  static async open(options: ConnectionOptions): Promise<AmqpConnection> {
    const recovering = await connectRecovering(options);
    return new AmqpConnection(recovering, options.onError ?? (() => undefined));
  }

  /** The number of the current connection (1 for the first); 0 before the first. */
  get currentGeneration(): number {
    return this.model === undefined ? 0 : this.generation;
  }

  /**
   * Runs `hook` on every new connection, and at once if connected now. Returns a function that
   * removes it.
   */
  onConnect(hook: (model: ChannelModel, generation: number) => void): () => void {
    this.connectHooks.add(hook);
    if (this.model !== undefined) hook(this.model, this.generation);
    return () => this.connectHooks.delete(hook);
  }

  /** The current connection, waiting for one until `deadline` (epoch ms). */
  async current(deadline: number): Promise<ChannelModel> {
    if (this.closed) throw new ClosedError('the AMQP connection is closed');
    if (this.model !== undefined) return this.model;
    return new Promise<ChannelModel>((resolve, reject) => {
      const waiter: Waiter = {
        resolve: (model) => {
          clearTimeout(timer);
          resolve(model);
        },
        reject: (error) => {
          clearTimeout(timer);
          reject(error);
        },
      };
      const timer = setTimeout(() => {
        this.waiters.delete(waiter);
        reject(new PublishError('unavailable', 'no connection to the broker'));
      }, Math.max(0, deadline - Date.now()));
      this.waiters.add(waiter);
    });
  }

  /** Closes the connection and stops reconnecting. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const waiter of this.waiters) waiter.reject(new ClosedError('the AMQP connection is closed'));
    this.waiters.clear();
    this.connectHooks.clear();
    this.model = undefined;
    await this.recovering.close();
  }
}

function connectRecovering(options: ConnectionOptions): Promise<RecoveringChannelModel> {
  return connect(withHeartbeat(options.url), {
    clientProperties: { connection_name: options.name },
    recovery: {
      initialDelay: options.reconnect?.initialDelayMs ?? 200,
      maxDelay: options.reconnect?.maxDelayMs ?? 10_000,
      factor: 2,
      jitter: 0.5,
      waitForConnect: false,
    },
  });
}
