/**
 * The client a core app holds: submit commands (HTTP or AMQP), await their outcome, ask the
 * ledger, and start durable subscribers, over one broker connection.
 */
import { AmqpConnection, type ReconnectPolicy } from './amqp/connection.js';
import { Publisher } from './amqp/publisher.js';
import { ConfigurationError, ClosedError } from './errors.js';
import { type CommandBody, type CommandRecord, IngressClient, type RetryPolicy } from './http.js';
import { newIdempotencyKey, uuidv7 } from './ids.js';
import type { TerminalEvent } from './lifecycle.js';
import type { Command, Metadata, Status } from './models.js';
import { OutcomeWatcher, type OutcomeOptions } from './outcomes.js';
import { subscribe, type Subscriber, type SubscriberOptions } from './subscriber.js';

/** The commands exchange of the contract. */
export const COMMANDS_EXCHANGE = 'switchyard.commands';
/** The AMQP `type` of a v1 command, as the fleet sets it. */
export const COMMAND_TYPE_V1 = 'switchyard.command.v1';

export interface ClientOptions {
  /** The ingress base URL (HTTP submits, and the ledger's `GET /v1/commands/{id}`). */
  url?: string;
  /** A bearer token of the ingress; required with `url`. */
  token?: string;
  /** The broker (AMQP submits, `outcome`, subscribers), e.g. `amqp://user:pass@host:5672/vhost`. */
  amqpUrl?: string;
  /** A `fetch` to use instead of the global one. */
  fetch?: typeof fetch;
  /** One HTTP request's time limit. Default 10 s. */
  requestTimeoutMs?: number;
  /** How HTTP submits are retried on 503/429/lost connections. */
  retry?: RetryPolicy;
  /** How long an AMQP submit may take, reconnects and republishes included. Default 30 s. */
  publishTimeoutMs?: number;
  /** How long `outcome` keeps the terminal event of a command submitted here. Default 15 min. */
  keepOutcomesMs?: number;
  /** Shown in the broker's management UI. Default `switchyard-client`. */
  connectionName?: string;
  reconnect?: ReconnectPolicy;
  /** Connection losses and other background errors, for logging. Default: ignored. */
  onError?: (error: Error) => void;
}

/** A command to submit. `id`, `idempotencyKey` and `created_at` are made when absent. */
export interface CommandInput {
  kind: string;
  provider: string;
  operation: string;
  payload: Record<string, unknown>;
  metadata?: Metadata;
  /** Schedule-to-close: past it the command ends `failed` with class `expired`. */
  deadline?: Date | string;
  /**
   * The command's identity. When absent the client makes one for this logical command and
   * reuses it on every retry of this call; it is returned so you can keep it and reuse it
   * should you submit the same command again (after a crash, say).
   */
  idempotencyKey?: string;
  /** Over AMQP, the command's id (made when absent). Over HTTP, sent when given; else the ingress derives it from the key. */
  id?: string;
}

export interface SubmitOptions {
  /** `http` (default when `url` is configured) or `amqp`. */
  via?: 'http' | 'amqp';
  /** A W3C `traceparent`, carried on the command and its events. */
  traceparent?: string;
  signal?: AbortSignal;
}

/** What a submit produced. */
export interface Submission {
  /** The command to ask `outcome` about: over HTTP, the original when the identity was known. */
  id: string;
  /** The idempotency key the command went with (yours, or the one made for it). */
  idempotencyKey: string;
  via: 'http' | 'amqp';
  /**
   * HTTP: the ingress answered `200 Idempotent-Replayed: true` (the identity was known, from an
   * earlier submit or from an earlier try of this one whose answer was lost). AMQP: always
   * `false`; a repeat of an earlier command gets a `duplicate` event instead.
   */
  replayed: boolean;
  /** The status when answered: `pending` for a new command. */
  status: Status;
  /** Tries made (HTTP requests; 1 over AMQP, whose republishes are internal). */
  attempts: number;
}

function toIso(deadline: Date | string | undefined): string | undefined {
  if (deadline === undefined) return undefined;
  return deadline instanceof Date ? deadline.toISOString() : deadline;
}

export class SwitchyardClient {
  private readonly ingress: IngressClient | undefined;
  private readonly options: ClientOptions;
  private amqp: Promise<{ connection: AmqpConnection; publisher: Publisher; watcher: OutcomeWatcher }> | undefined;
  private readonly subscribers = new Set<Subscriber>();
  private closed = false;

  constructor(options: ClientOptions) {
    if (options.url === undefined && options.amqpUrl === undefined) {
      throw new ConfigurationError('configure url (and token) for HTTP, amqpUrl for AMQP, or both');
    }
    if (options.url !== undefined && (options.token === undefined || options.token === '')) {
      throw new ConfigurationError('an ingress url needs a token');
    }
    this.options = options;
    if (options.url !== undefined && options.token !== undefined) {
      this.ingress = new IngressClient({
        url: options.url,
        token: options.token,
        ...(options.fetch === undefined ? {} : { fetch: options.fetch }),
        ...(options.requestTimeoutMs === undefined ? {} : { requestTimeoutMs: options.requestTimeoutMs }),
        ...(options.retry === undefined ? {} : { retry: options.retry }),
      });
    }
  }

  /**
   * A client configured from `SWITCHYARD_URL`, `SWITCHYARD_TOKEN` and `SWITCHYARD_AMQP_URL`
   * (each optional, at least one of the URLs set), plus `overrides`.
   */
  static fromEnv(env: NodeJS.ProcessEnv = process.env, overrides: Partial<ClientOptions> = {}): SwitchyardClient {
    const options: ClientOptions = { ...overrides };
    if (env.SWITCHYARD_URL !== undefined && env.SWITCHYARD_URL !== '') options.url = env.SWITCHYARD_URL;
    if (env.SWITCHYARD_TOKEN !== undefined && env.SWITCHYARD_TOKEN !== '') options.token = env.SWITCHYARD_TOKEN;
    if (env.SWITCHYARD_AMQP_URL !== undefined && env.SWITCHYARD_AMQP_URL !== '') options.amqpUrl = env.SWITCHYARD_AMQP_URL;
    return new SwitchyardClient(options);
  }

  /**
   * Submits a command and resolves once the fleet holds it durably: over HTTP when the ingress
   * answered 202 (or 200 for a known identity), over AMQP when the broker confirmed the publish.
   * When the client has a broker URL, the outcome queue is bound first, so `outcome(id)` can
   * never miss the command's terminal event, however soon it comes.
   */
  async submit(command: CommandInput, options: SubmitOptions = {}): Promise<Submission> {
    this.assertOpen();
    const via = options.via ?? (this.ingress !== undefined ? 'http' : 'amqp');
    const idempotencyKey = command.idempotencyKey ?? newIdempotencyKey();
    const amqp = this.options.amqpUrl === undefined ? undefined : await this.broker();

    if (via === 'amqp') {
      if (amqp === undefined) throw new ConfigurationError('an AMQP submit needs amqpUrl');
      const deadline = Date.now() + (this.options.publishTimeoutMs ?? 30_000);
      const envelope: Command = {
        id: command.id ?? uuidv7(),
        kind: command.kind,
        provider: command.provider,
        operation: command.operation,
        payload: command.payload,
        idempotency_key: idempotencyKey,
        created_at: new Date().toISOString(),
      };
      if (command.metadata !== undefined) envelope.metadata = command.metadata;
      const deadlineIso = toIso(command.deadline);
      if (deadlineIso !== undefined) envelope.deadline = deadlineIso;
      await amqp.watcher.watch(command.kind, command.provider, deadline);
      amqp.watcher.expect(envelope.id);
      await amqp.publisher.publish(
        {
          exchange: COMMANDS_EXCHANGE,
          routingKey: `${command.kind}.${command.provider}.${command.operation}`,
          // Serialised once: a republish after a lost connection sends the same bytes.
          body: Buffer.from(JSON.stringify(envelope)),
          properties: {
            persistent: true,
            contentType: 'application/json',
            messageId: envelope.id,
            type: COMMAND_TYPE_V1,
            timestamp: Math.floor(Date.now() / 1000),
            ...(options.traceparent === undefined ? {} : { headers: { traceparent: options.traceparent } }),
          },
        },
        deadline,
      );
      return { id: envelope.id, idempotencyKey, via, replayed: false, status: 'pending', attempts: 1 };
    }

    if (this.ingress === undefined) throw new ConfigurationError('an HTTP submit needs url and token');
    const body: CommandBody = {
      kind: command.kind,
      provider: command.provider,
      operation: command.operation,
      payload: command.payload,
    };
    if (command.id !== undefined) body.id = command.id;
    if (command.metadata !== undefined) body.metadata = command.metadata;
    const deadlineIso = toIso(command.deadline);
    if (deadlineIso !== undefined) body.deadline = deadlineIso;
    if (amqp !== undefined) {
      // Bound before the POST, so the terminal event is caught however fast it comes. A broker
      // that cannot be reached does not stop the submit: `outcome` then asks the ledger.
      await amqp.watcher
        .watch(command.kind, command.provider, Date.now() + 5_000)
        .catch((err: unknown) => this.options.onError?.(err instanceof Error ? err : new Error(String(err))));
    }
    const accepted = await this.ingress.submit(body, idempotencyKey, {
      ...(options.traceparent === undefined ? {} : { traceparent: options.traceparent }),
      ...(options.signal === undefined ? {} : { signal: options.signal }),
    });
    amqp?.watcher.expect(accepted.id);
    return {
      id: accepted.id,
      idempotencyKey,
      via,
      replayed: accepted.replayed,
      status: accepted.status,
      attempts: accepted.attempts,
    };
  }

  /**
   * The command's terminal event (`completed`, `failed` or `duplicate`), waiting for it up to
   * `timeoutMs` (default 60 s); throws {@link OutcomeTimeoutError} (with the last status seen)
   * when it does not come. Needs `amqpUrl`.
   */
  async outcome(id: string, options: OutcomeOptions = {}): Promise<TerminalEvent> {
    this.assertOpen();
    if (this.options.amqpUrl === undefined) {
      throw new ConfigurationError('outcome() listens on switchyard.events: configure amqpUrl');
    }
    return (await this.broker()).watcher.outcome(id, options);
  }

  /** The ledger's record of the command (status, events, attempts), or `undefined` if unknown. */
  async command(id: string, signal?: AbortSignal): Promise<CommandRecord | undefined> {
    this.assertOpen();
    if (this.ingress === undefined) throw new ConfigurationError('the ledger is asked over HTTP: configure url and token');
    return this.ingress.command(id, signal);
  }

  /** Starts a durable subscriber on this client's broker; it is closed with the client. */
  async subscribe(options: Omit<SubscriberOptions, 'amqpUrl'>): Promise<Subscriber> {
    this.assertOpen();
    if (this.options.amqpUrl === undefined) throw new ConfigurationError('a subscriber needs amqpUrl');
    const subscriber = await subscribe({
      ...(this.options.reconnect === undefined ? {} : { reconnect: this.options.reconnect }),
      ...options,
      amqpUrl: this.options.amqpUrl,
    });
    this.subscribers.add(subscriber);
    return subscriber;
  }

  /** Closes the subscribers it started and the broker connection; pending `outcome` calls reject. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await Promise.allSettled([...this.subscribers].map((s) => s.close()));
    if (this.amqp !== undefined) {
      const { connection, publisher, watcher } = await this.amqp;
      await watcher.close();
      await publisher.close();
      await connection.close();
    }
  }

  private assertOpen(): void {
    if (this.closed) throw new ClosedError('the client is closed');
  }

  private broker(): Promise<{ connection: AmqpConnection; publisher: Publisher; watcher: OutcomeWatcher }> {
    const url = this.options.amqpUrl;
    if (url === undefined) throw new ConfigurationError('no amqpUrl configured');
    this.amqp ??= (async () => {
      const onError = this.options.onError ?? (() => undefined);
      const connection = await AmqpConnection.open({
        url,
        name: this.options.connectionName ?? 'switchyard-client',
        ...(this.options.reconnect === undefined ? {} : { reconnect: this.options.reconnect }),
        onError,
      });
      const publisher = new Publisher(connection);
      const watcher = new OutcomeWatcher(connection, this.ingress, onError, this.options.keepOutcomesMs);
      return { connection, publisher, watcher };
    })();
    return this.amqp;
  }
}
