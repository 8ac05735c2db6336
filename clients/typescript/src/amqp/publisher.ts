/**
 * Publishing commands the way the fleet's own publisher does (crates/switchyard-amqp): on a
 * confirm channel, `mandatory`, persistent, and successful only once the broker confirmed it.
 *
 * A publish that is not confirmed (the connection dropped, the broker refused it) is sent again,
 * byte for byte, on the next connection until the publish budget runs out: the command carries
 * its id and idempotency key, so a second copy is never run twice. A returned publish (nothing
 * routes it, not even the alternate exchange) and a missing exchange are not retried: they mean
 * the topology is not in place.
 */
import type { ChannelModel, ConfirmChannel, Message, Options } from 'amqplib';

import { fullJitter, sleep } from '../backoff.js';
import { PublishError, SwitchyardError, UnroutableError } from '../errors.js';
import type { AmqpConnection } from './connection.js';

/** One message to publish. */
export interface Outgoing {
  exchange: string;
  routingKey: string;
  body: Buffer;
  /** `messageId` is required: it is how a returned message is matched to its publish. */
  properties: Options.Publish & { messageId: string };
}

/** A confirm channel of one connection, and what the broker said on it. */
interface Lane {
  generation: number;
  channel: ConfirmChannel;
  closed: boolean;
  /** Why the broker closed the channel, when it said (e.g. 404 NOT_FOUND for a missing exchange). */
  closeError: (Error & { code?: number }) | undefined;
  /** Returned messages by message id: a `basic.return` arrives before its publish's ack. */
  returned: Map<string, string>;
}

export class Publisher {
  private lane: Lane | undefined;
  private opening: Promise<Lane> | undefined;

  constructor(private readonly connection: AmqpConnection) {}

  /** Publishes and waits for the broker's confirm, retrying until `deadline` (epoch ms). */
  async publish(message: Outgoing, deadline: number): Promise<void> {
    let lastError: unknown;
    let reason: 'nacked' | 'unavailable' = 'unavailable';
    for (let attempt = 1; Date.now() < deadline; attempt += 1) {
      if (attempt > 1) {
        await sleep(Math.min(fullJitter(attempt - 1, 100, 2_000), Math.max(0, deadline - Date.now())));
      }
      let lane: Lane;
      try {
        lane = await this.openLane(deadline);
      } catch (err) {
        lastError = err;
        continue;
      }
      const outcome = await this.publishOn(lane, message, deadline);
      if (outcome === 'confirmed') return;
      if (outcome === 'timeout') break;
      const returned = lane.returned.get(message.properties.messageId);
      if (outcome === 'returned' && returned !== undefined) {
        lane.returned.delete(message.properties.messageId);
        throw new UnroutableError(message.routingKey, returned);
      }
      if (lane.closeError?.code === 404) {
        throw new PublishError('not_found', `the broker refused the publish: ${lane.closeError.message}`, {
          cause: lane.closeError,
        });
      }
      reason = outcome === 'nacked' ? 'nacked' : 'unavailable';
      lastError = lane.closeError ?? new SwitchyardError(`publish ${outcome}`);
    }
    throw new PublishError(
      Date.now() >= deadline && reason === 'unavailable' ? 'timeout' : reason,
      `the broker did not confirm command ${message.properties.messageId} in time (${reason})`,
      { cause: lastError },
    );
  }

  private publishOn(
    lane: Lane,
    message: Outgoing,
    deadline: number,
  ): Promise<'confirmed' | 'returned' | 'nacked' | 'closed' | 'timeout'> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => resolve('timeout'), Math.max(0, deadline - Date.now()));
      try {
        lane.channel.publish(
          message.exchange,
          message.routingKey,
          message.body,
          { ...message.properties, mandatory: true },
          (err) => {
            clearTimeout(timer);
            if (err === null || err === undefined) {
              resolve(lane.returned.has(message.properties.messageId) ? 'returned' : 'confirmed');
            } else {
              resolve(lane.closed ? 'closed' : 'nacked');
            }
          },
        );
      } catch {
        // The channel closed under us (amqplib throws synchronously then).
        clearTimeout(timer);
        lane.closed = true;
        resolve('closed');
      }
    });
  }

  private async openLane(deadline: number): Promise<Lane> {
    const generation = this.connection.currentGeneration;
    if (this.lane !== undefined && !this.lane.closed && this.lane.generation === generation) {
      return this.lane;
    }
    this.opening ??= (async () => {
      const model: ChannelModel = await this.connection.current(deadline);
      const channel = await model.createConfirmChannel();
      const lane: Lane = {
        generation: this.connection.currentGeneration,
        channel,
        closed: false,
        closeError: undefined,
        returned: new Map(),
      };
      channel.on('return', (msg: Message) => {
        const id = msg.properties.messageId as unknown;
        // A return's fields carry the broker's reason (e.g. NO_ROUTE); the type only knows deliveries'.
        const { replyText } = msg.fields as unknown as { replyText?: unknown };
        if (typeof id === 'string') lane.returned.set(id, typeof replyText === 'string' ? replyText : 'returned');
      });
      channel.on('error', (err: Error & { code?: number }) => {
        lane.closeError = err;
      });
      channel.on('close', () => {
        lane.closed = true;
      });
      this.lane = lane;
      return lane;
    })().finally(() => {
      this.opening = undefined;
    });
    return this.opening;
  }

  /** Closes the channel (the connection is its owner's to close). */
  async close(): Promise<void> {
    const lane = this.lane;
    this.lane = undefined;
    if (lane !== undefined && !lane.closed) await lane.channel.close().catch(() => undefined);
  }
}
