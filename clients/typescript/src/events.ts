import { createParser } from "eventsource-parser";
import type { ClientOptions, List, Task } from "./client.js";
import { tokenOf } from "./client.js";
import type { components } from "./schema.js";

/** The type of an event (`task.created`, …, `list.deleted`, `reminder.fired`). */
export type EventType = components["schemas"]["EventType"];

/** A task's reminder: `{ id, at }` or `{ id, before_due }`. */
export type Reminder = components["schemas"]["Reminder"];

/** One change from `GET /api/{user_id}/events`. */
export type TodoEvent =
  | { id: string; type: "task.created" | "task.updated"; data: { task: Task } }
  | { id: string; type: "list.created" | "list.updated"; data: { list: List } }
  | { id: string; type: "task.deleted" | "list.deleted"; data: { id: string } }
  | {
      id: string;
      type: "reminder.fired";
      /** The task as it is now, the reminder, and the time it was due (RFC 3339). */
      data: { task: Task; reminder: Reminder; scheduled_for: string };
    };

/** Why a stream stopped for good: the server refused it (the status says why). */
export class Refused extends Error {
  constructor(
    /** 400 (bad `Last-Event-ID`), 401, 403, 410 (token too old: resync), …. */
    readonly status: number,
    readonly body: unknown,
  ) {
    super(`the server refused the request with ${status}`);
    this.name = "Refused";
  }
}

/** Options of {@link streamEvents}. */
export interface StreamOptions {
  /** The server, e.g. `http://127.0.0.1:8080`. */
  baseUrl: string;
  /** The user whose changes to follow (the token's `sub`). */
  userId: string;
  /** The bearer token, or a function returning a fresh one (called on every reconnect). */
  token: ClientOptions["token"];
  /** Resume after this event id (or a `/changes` token): replayed first, then live. */
  lastEventId?: string;
  /** Ends the stream; {@link streamEvents} then resolves. */
  signal?: AbortSignal;
  /** Called for each event, in commit order; awaited before the next. */
  onEvent: (event: TodoEvent) => void | Promise<void>;
  /** Called when the connection is (re)established. */
  onOpen?: () => void;
  /** Milliseconds before reconnecting after a drop (default 1000; the server's `retry:` wins). */
  retryMs?: number;
  /** A `fetch` to use instead of the global one. */
  fetch?: typeof fetch;
}

const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve) => {
    if (signal?.aborted) return resolve();
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      signal?.removeEventListener("abort", done);
      resolve();
    }
    signal?.addEventListener("abort", done, { once: true });
  });

/**
 * Follows a user's event stream with `fetch` (browsers' `EventSource` cannot send an
 * `Authorization` header). Reconnects after a drop, sending `Last-Event-ID` so nothing is
 * missed or repeated. Resolves when `signal` aborts; rejects with {@link Refused} when the
 * server refuses the stream (a 410 means the last id is too old: resync with `/changes`).
 */
export async function streamEvents(options: StreamOptions): Promise<void> {
  const doFetch = options.fetch ?? fetch;
  const url = `${options.baseUrl.replace(/\/$/, "")}/api/${encodeURIComponent(options.userId)}/events`;
  let lastEventId = options.lastEventId;
  let retryMs = options.retryMs ?? 1000;
  const { signal } = options;
  while (!signal?.aborted) {
    const headers: Record<string, string> = { Accept: "text/event-stream" };
    const token = await tokenOf(options.token);
    if (token) headers.Authorization = `Bearer ${token}`;
    if (lastEventId) headers["Last-Event-ID"] = lastEventId;
    let response: Response;
    try {
      response = await doFetch(url, { headers, signal, cache: "no-store" });
    } catch (e) {
      if (signal?.aborted) return;
      await sleep(retryMs, signal);
      continue;
    }
    if (response.status === 429 || response.status === 503) {
      const after = Number(response.headers.get("Retry-After") ?? "1");
      await response.body?.cancel();
      await sleep(Math.max(1, after) * 1000, signal);
      continue;
    }
    if (!response.ok || !response.body) {
      const body = await response.json().catch(() => undefined);
      throw new Refused(response.status, body);
    }
    options.onOpen?.();
    const queue: TodoEvent[] = [];
    const parser = createParser({
      onEvent(message) {
        if (!message.event || message.id === undefined) return;
        queue.push({ id: message.id, type: message.event as EventType, data: JSON.parse(message.data) } as TodoEvent);
      },
      onRetry(ms) {
        retryMs = ms;
      },
    });
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        parser.feed(value);
        while (queue.length > 0) {
          const event = queue.shift()!;
          await options.onEvent(event);
          lastEventId = event.id;
        }
      }
    } catch {
      // A dropped connection (or the abort): reconnect below, or return.
    }
    if (signal?.aborted) return;
    // The server ended the stream (shutdown, token expiry) or the network dropped it: resume.
    await sleep(retryMs, signal);
  }
}
