import type { List, Task, TodoClient } from "./client.js";
import { createTodoClient, type ClientOptions } from "./client.js";
import { Refused, streamEvents, type TodoEvent } from "./events.js";

/** A local copy of one user's tasks and lists, and the token it is current to. */
export interface Replica {
  tasks: Map<string, Task>;
  lists: Map<string, List>;
  /** The `next` of the last `/changes` page or the id of the last event applied. */
  token?: string;
}

/** An empty replica. */
export function emptyReplica(): Replica {
  return { tasks: new Map(), lists: new Map() };
}

/** Applies one live event to a replica (and advances its token). */
export function applyEvent(replica: Replica, event: TodoEvent): void {
  switch (event.type) {
    case "task.created":
    case "task.updated":
      replica.tasks.set(event.data.task.id, event.data.task);
      break;
    case "list.created":
    case "list.updated":
      replica.lists.set(event.data.list.id, event.data.list);
      break;
    case "task.deleted":
      replica.tasks.delete(event.data.id);
      break;
    case "list.deleted":
      replica.lists.delete(event.data.id);
      break;
    case "reminder.fired":
      // A firing changes no record: only the token moves past it.
      break;
  }
  replica.token = event.id;
}

/**
 * Brings a replica up to date through `GET /changes`: from its token (or from scratch), page by
 * page while `has_more`, applying records and tombstones. A 410 (the token is older than the
 * tombstones kept) starts over from scratch. Returns how many pages were read.
 */
export async function pullChanges(client: TodoClient, userId: string, replica: Replica, limit = 500): Promise<number> {
  let pages = 0;
  for (;;) {
    // `/changes` is typed loosely so the package builds against specs with or without it.
    const get = client.GET as unknown as (path: string, init: unknown) => Promise<{ data?: any; error?: any; response: Response }>;
    const { data, response, error } = await get("/api/{user_id}/changes", {
      params: { path: { user_id: userId }, query: replica.token ? { since: replica.token, limit } : { limit } },
    });
    if (response.status === 410) {
      replica.tasks.clear();
      replica.lists.clear();
      replica.token = undefined;
      continue;
    }
    if (!response.ok || !data) throw new Refused(response.status, error);
    pages += 1;
    const fromScratch = replica.token === undefined;
    if (fromScratch && pages === 1) {
      replica.tasks.clear();
      replica.lists.clear();
    }
    for (const t of data.data.tasks as Task[]) replica.tasks.set(t.id, t);
    for (const l of data.data.lists as List[]) replica.lists.set(l.id, l);
    for (const d of data.data.deleted as { kind: "task" | "list"; id: string }[]) {
      (d.kind === "task" ? replica.tasks : replica.lists).delete(d.id);
    }
    replica.token = data.meta.next;
    if (!data.meta.has_more) return pages;
  }
}

/** Options of {@link sync}. */
export interface SyncOptions extends ClientOptions {
  /** The user to follow. */
  userId: string;
  /** A replica to continue (kept by the caller across sessions); default empty. */
  replica?: Replica;
  /** Stops following. */
  signal?: AbortSignal;
  /** Called after each change is applied (from `/changes` or live). */
  onChange?: (replica: Replica) => void;
}

/**
 * Keeps a replica in step with the server: pulls `/changes` (from the replica's token, or
 * everything), then follows `/events` from that token, applying each event. When the stream is
 * refused with 410, pulls again (from scratch) and follows on. Resolves when `signal` aborts.
 */
export async function sync(options: SyncOptions): Promise<Replica> {
  const replica = options.replica ?? emptyReplica();
  const client = createTodoClient(options);
  while (!options.signal?.aborted) {
    await pullChanges(client, options.userId, replica);
    options.onChange?.(replica);
    try {
      await streamEvents({
        baseUrl: options.baseUrl,
        userId: options.userId,
        token: options.token,
        fetch: options.fetch,
        lastEventId: replica.token,
        signal: options.signal,
        onEvent(event) {
          applyEvent(replica, event);
          options.onChange?.(replica);
        },
      });
    } catch (e) {
      if (e instanceof Refused && e.status === 410) continue;
      throw e;
    }
  }
  return replica;
}
