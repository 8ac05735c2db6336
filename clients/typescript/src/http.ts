/**
 * The HTTP side: `POST /v1/commands` on the ingress and `GET /v1/commands/{id}` on the ledger's
 * query API (served on the ingress's address too), over the built-in `fetch`.
 *
 * A POST is retried only where that is safe and useful: the body carries a stable idempotency
 * key, so a repeat can never run the command twice, and only answers that mean "nothing was
 * accepted, try later" (503, 429, a gateway's 502/504, a lost connection or a timed-out
 * request) are retried, waiting at least what `Retry-After` asks.
 */
import { fullJitter, parseRetryAfter, sleep } from './backoff.js';
import {
  AuthenticationError,
  IdempotencyConflictError,
  InvalidCommandError,
  NotFoundError,
  type Problem,
  ProblemError,
  UnavailableError,
} from './errors.js';
import { STATUSES } from './lifecycle.js';
import type { ErrorInfo, LifecycleEvent, Metadata, Status } from './models.js';

/** How a request that may be repeated is repeated. */
export interface RetryPolicy {
  /** Requests at most, the first included. Default 6. */
  maxAttempts?: number;
  /** The first backoff's ceiling; doubles each time. Default 250 ms. */
  baseDelayMs?: number;
  /** No single wait is longer (a longer `Retry-After` ends the retries). Default 10 s. */
  maxDelayMs?: number;
}

/** How to reach the ingress. */
export interface HttpOptions {
  /** The ingress base URL, e.g. `http://127.0.0.1:8080`. */
  url: string;
  /** A token from `[ingress] tokens`, sent as `Authorization: Bearer`. */
  token: string;
  /** A `fetch` to use instead of the global one (e.g. one with an undici Agent for custom TLS). */
  fetch?: typeof fetch;
  /** One request's time limit. Default 10 s. */
  requestTimeoutMs?: number;
  retry?: RetryPolicy;
}

/** The command body of `POST /v1/commands`; the idempotency key goes in the header. */
export interface CommandBody {
  id?: string;
  kind: string;
  provider: string;
  operation: string;
  payload: Record<string, unknown>;
  metadata?: Metadata;
  deadline?: string;
  created_at?: string;
}

/** What the ingress answered to an accepted (or replayed) command. */
export interface Accepted {
  /** The command's id: on a replay, the command that already held this identity. */
  id: string;
  /** Its status when answered (`pending` for a new command). */
  status: Status;
  /** Its ledger address, relative to the base URL. */
  statusUrl: string;
  /** `true` when the ingress answered `200 Idempotent-Replayed: true`: the identity was known. */
  replayed: boolean;
  /** Requests made, retries included. */
  attempts: number;
}

/** The ledger's answer to `GET /v1/commands/{id}` (docs/ledger.md). */
export interface CommandRecord {
  id: string;
  /** The status fields are absent while only attempt records have arrived. */
  kind?: string;
  provider?: string;
  operation?: string;
  status?: Status;
  seq?: number;
  run?: number;
  attempt?: number;
  provider_reference?: string | null;
  result?: unknown;
  error?: ErrorInfo | null;
  metadata?: Metadata;
  created_at?: string;
  updated_at?: string;
  /** Every event, in `seq` order. */
  events: LifecycleEvent[];
  /** Every provider request and answer, redacted. */
  attempts: Record<string, unknown>[];
  resolution?: Record<string, unknown> | null;
}

const RETRYABLE_STATUS = new Set([429, 502, 503, 504]);

function isStatus(value: unknown): value is Status {
  return (STATUSES as readonly unknown[]).includes(value);
}

class Retryable extends Error {
  constructor(
    message: string,
    readonly retryAfterMs: number | undefined,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Reads a problem answer; a non-problem error body becomes a problem with that text as detail. */
async function readProblem(res: Response): Promise<Problem> {
  const text = await res.text();
  try {
    const body: unknown = JSON.parse(text);
    if (isRecord(body) && typeof body.type === 'string') {
      return {
        ...body,
        type: body.type,
        title: typeof body.title === 'string' ? body.title : res.statusText,
        status: typeof body.status === 'number' ? body.status : res.status,
      };
    }
  } catch {
    // Not JSON: fall through.
  }
  return { type: 'about:blank', title: res.statusText, status: res.status, detail: text.slice(0, 500) };
}

/** The typed error for a problem answer. */
export function problemError(problem: Problem): ProblemError {
  if (problem.status === 422 && problem.type.endsWith('idempotency_conflict')) {
    return new IdempotencyConflictError(problem);
  }
  switch (problem.status) {
    case 400:
    case 413:
    case 415:
    case 422:
      return new InvalidCommandError(problem);
    case 401:
    case 403:
      return new AuthenticationError(problem);
    case 404:
      return new NotFoundError(problem);
    default:
      return new ProblemError(problem);
  }
}

/** A client of the ingress and the ledger's query API. */
export class IngressClient {
  private readonly base: string;
  private readonly token: string;
  private readonly fetchFn: typeof fetch;
  private readonly requestTimeoutMs: number;
  private readonly retry: Required<RetryPolicy>;

  constructor(options: HttpOptions) {
    this.base = options.url.replace(/\/+$/, '');
    this.token = options.token;
    this.fetchFn = options.fetch ?? globalThis.fetch;
    this.requestTimeoutMs = options.requestTimeoutMs ?? 10_000;
    this.retry = {
      maxAttempts: options.retry?.maxAttempts ?? 6,
      baseDelayMs: options.retry?.baseDelayMs ?? 250,
      maxDelayMs: options.retry?.maxDelayMs ?? 10_000,
    };
  }

  /**
   * Submits a command. Resolves once the ingress answered 202 (the broker confirmed it) or 200
   * (the identity was already known); throws a {@link ProblemError} subclass for a refusal and
   * {@link UnavailableError} when the retries ran out.
   */
  async submit(
    body: CommandBody,
    idempotencyKey: string,
    options: { traceparent?: string; signal?: AbortSignal } = {},
  ): Promise<Accepted> {
    // Serialised once: every retry sends the same bytes under the same key.
    const bytes = JSON.stringify(body);
    const headers: Record<string, string> = {
      authorization: `Bearer ${this.token}`,
      'content-type': 'application/json',
      accept: 'application/json, application/problem+json',
      'idempotency-key': idempotencyKey,
    };
    if (options.traceparent !== undefined) headers.traceparent = options.traceparent;

    let last: Retryable | undefined;
    for (let attempt = 1; attempt <= this.retry.maxAttempts; attempt += 1) {
      if (last !== undefined) {
        const wait = Math.max(last.retryAfterMs ?? 0, fullJitter(attempt - 1, this.retry.baseDelayMs, this.retry.maxDelayMs));
        if (wait > this.retry.maxDelayMs) break;
        await sleep(wait, options.signal);
      }
      try {
        const res = await this.request('POST', '/v1/commands', headers, bytes, options.signal);
        if (res.status === 200 || res.status === 202) {
          const answer: unknown = await res.json();
          if (!isRecord(answer) || typeof answer.id !== 'string') {
            throw new UnavailableError('the ingress answered without a command id', attempt);
          }
          return {
            id: answer.id,
            status: isStatus(answer.status) ? answer.status : 'pending',
            statusUrl: typeof answer.status_url === 'string' ? answer.status_url : `/v1/commands/${answer.id}`,
            replayed: res.status === 200 && res.headers.get('idempotent-replayed') === 'true',
            attempts: attempt,
          };
        }
        if (RETRYABLE_STATUS.has(res.status)) {
          const problem = await readProblem(res);
          last = new Retryable(
            `${res.status} ${problem.title}`,
            parseRetryAfter(res.headers.get('retry-after')),
            { cause: problemError(problem) },
          );
          continue;
        }
        throw problemError(await readProblem(res));
      } catch (err) {
        if (options.signal?.aborted) throw err;
        if (err instanceof ProblemError || err instanceof UnavailableError) throw err;
        // fetch failed (connection refused or reset) or our per-request timeout fired: the
        // command may or may not have been accepted, and the same key makes asking again safe.
        last = new Retryable(err instanceof Error ? err.message : String(err), undefined, { cause: err });
      }
    }
    throw new UnavailableError(
      `the ingress did not accept the command after ${this.retry.maxAttempts} attempts: ${last?.message ?? 'no answer'}`,
      this.retry.maxAttempts,
      { cause: last?.cause },
    );
  }

  /** The ledger's record of a command, or `undefined` when it never heard of the id. */
  async command(id: string, signal?: AbortSignal): Promise<CommandRecord | undefined> {
    const res = await this.request(
      'GET',
      `/v1/commands/${encodeURIComponent(id)}`,
      { authorization: `Bearer ${this.token}`, accept: 'application/json, application/problem+json' },
      undefined,
      signal,
    );
    if (res.status === 404) {
      await res.body?.cancel();
      return undefined;
    }
    if (res.status !== 200) throw problemError(await readProblem(res));
    const record: unknown = await res.json();
    if (!isRecord(record) || typeof record.id !== 'string' || !Array.isArray(record.events)) {
      throw new ProblemError({
        type: 'about:blank',
        title: 'Unexpected answer',
        status: res.status,
        detail: 'the ledger answered without an id and events',
      });
    }
    return record as unknown as CommandRecord;
  }

  private async request(
    method: string,
    path: string,
    headers: Record<string, string>,
    body: string | undefined,
    signal: AbortSignal | undefined,
  ): Promise<Response> {
    const timeout = AbortSignal.timeout(this.requestTimeoutMs);
    const init: RequestInit = {
      method,
      headers,
      signal: signal === undefined ? timeout : AbortSignal.any([signal, timeout]),
    };
    if (body !== undefined) init.body = body;
    return this.fetchFn(`${this.base}${path}`, init);
  }
}
