/**
 * Identifiers the client makes itself.
 *
 * Command ids are UUIDv7, as the ingress makes them: time-ordered, so the ledger's indexes and
 * a human reading logs see commands in the order they were made. Idempotency keys are random
 * (UUIDv4): a key must never collide with another logical command's.
 */
import { randomBytes, randomUUID } from 'node:crypto';

/** A new UUIDv7 (RFC 9562): 48 bits of Unix milliseconds, then random bits. */
export function uuidv7(nowMs: number = Date.now()): string {
  const bytes = randomBytes(16);
  bytes.writeUIntBE(nowMs, 0, 6);
  bytes[6] = ((bytes[6] ?? 0) & 0x0f) | 0x70;
  bytes[8] = ((bytes[8] ?? 0) & 0x3f) | 0x80;
  const hex = bytes.toString('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/** A fresh idempotency key for one logical command. */
export function newIdempotencyKey(): string {
  return randomUUID();
}
