/**
 * `@switchyard/client`: submit commands to Switchyard over HTTP or AMQP, await their outcome,
 * and follow lifecycle events with a durable subscriber.
 *
 * @packageDocumentation
 */
export {
  SwitchyardClient,
  COMMANDS_EXCHANGE,
  COMMAND_TYPE_V1,
  type ClientOptions,
  type CommandInput,
  type SubmitOptions,
  type Submission,
} from './client.js';
export { EVENTS_EXCHANGE, type OutcomeOptions } from './outcomes.js';
export {
  subscribe,
  Subscriber,
  MemoryState,
  type Delivery,
  type EventHandler,
  type SubscriberOptions,
  type SubscriberState,
  type UpdateType,
} from './subscriber.js';
export type { CommandRecord, RetryPolicy } from './http.js';
export type { ReconnectPolicy } from './amqp/connection.js';
export {
  TERMINAL_STATUSES,
  STATUSES,
  isTerminal,
  isTerminalEvent,
  parseEvent,
  type TerminalEvent,
  type TerminalStatus,
} from './lifecycle.js';
export {
  SwitchyardError,
  ConfigurationError,
  ProblemError,
  InvalidCommandError,
  IdempotencyConflictError,
  AuthenticationError,
  NotFoundError,
  UnavailableError,
  PublishError,
  UnroutableError,
  OutcomeTimeoutError,
  DecodeError,
  HandlerError,
  ClosedError,
  type Problem,
  type PublishFailure,
} from './errors.js';
export type * from './models.js';
export { uuidv7, newIdempotencyKey } from './ids.js';
