// End-to-end check of @todo-backend/client against a running server:
//
//   TODO_BASE_URL=http://127.0.0.1:8080 TODO_JWT_SECRET=… npm run e2e
//
// Two clients of one user (two devices): one writes, the other's replica converges through
// live events (across a dropped connection, resumed with Last-Event-ID), then, after an offline
// period, through `/changes`. Exits non-zero on the first failed check.
import assert from "node:assert/strict";
import { createHmac, randomUUID } from "node:crypto";
import { applyEvent, createTodoClient, emptyReplica, pullChanges, streamEvents, sync, type Replica, type TodoEvent } from "../src/index.js";

const baseUrl = process.env.TODO_BASE_URL ?? "http://127.0.0.1:8080";
const secret = process.env.TODO_JWT_SECRET;
if (!secret) throw new Error("set TODO_JWT_SECRET to the server's secret");

function mintToken(sub: string): string {
  const b64 = (v: object) => Buffer.from(JSON.stringify(v)).toString("base64url");
  const body = `${b64({ alg: "HS256", typ: "JWT" })}.${b64({ sub, exp: Math.floor(Date.now() / 1000) + 600 })}`;
  return `${body}.${createHmac("sha256", secret!).update(body).digest("base64url")}`;
}

async function until(what: string, ok: () => boolean, ms = 3000): Promise<void> {
  const start = Date.now();
  while (!ok()) {
    if (Date.now() - start > ms) throw new Error(`timed out: ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const user = `ts-pkg-${randomUUID().slice(0, 8)}`;
const token = mintToken(user);
const writer = createTodoClient({ baseUrl, token });
const path = { user_id: user };

async function serverState(): Promise<Map<string, unknown>> {
  const { data, response } = await writer.GET("/api/{user_id}/tasks", { params: { path, query: { limit: 100 } } });
  assert.equal(response.status, 200);
  return new Map(data!.data.map((t) => [t.id, t]));
}

function assertConverged(replica: Replica, server: Map<string, unknown>) {
  assert.deepEqual(new Map([...replica.tasks].sort()), new Map([...server].sort()));
}

// 1. Live events reach the other device; a dropped connection resumes without gap or duplicate.
{
  const seen: TodoEvent[] = [];
  const replica = emptyReplica();
  const stop = new AbortController();
  let connections = 0;
  // Cuts the first connection right after its first event, like a flaky network.
  const flaky: typeof fetch = async (input, init) => {
    const response = await fetch(input, init);
    connections += 1;
    if (connections !== 1 || !response.body) return response;
    let events = 0;
    const cut = new TransformStream<Uint8Array, Uint8Array>({
      transform(chunk, controller) {
        controller.enqueue(chunk);
        if (new TextDecoder().decode(chunk).includes("event: ")) events += 1;
        if (events >= 1) controller.error(new Error("network drop"));
      },
    });
    return new Response(response.body.pipeThrough(cut), { status: response.status, headers: response.headers });
  };
  let opened = 0;
  const following = streamEvents({
    baseUrl,
    userId: user,
    token,
    signal: stop.signal,
    fetch: flaky,
    retryMs: 100,
    onOpen: () => (opened += 1),
    onEvent(e) {
      seen.push(e);
      applyEvent(replica, e);
    },
  });
  await until("the stream opens", () => opened === 1);
  const titles = ["one", "two", "three", "four"];
  for (const title of titles) {
    const { response } = await writer.POST("/api/{user_id}/tasks", { params: { path }, body: { title } });
    assert.equal(response.status, 201);
  }
  await until("every task arrives", () => replica.tasks.size === titles.length);
  assert.ok(connections >= 2, "the connection was dropped and resumed");
  const created = seen.filter((e) => e.type === "task.created").map((e) => (e.data as { task: { title: string } }).task.title);
  assert.deepEqual(created, titles, "each task created once, in order, across the drop");
  assertConverged(replica, await serverState());
  stop.abort();
  await following;
  console.log("ok - live events converge across a dropped connection");
}

// 2. sync(): a replica follows live; offline, it misses writes; back online, /changes catches up.
{
  const stop = new AbortController();
  const replica = emptyReplica();
  const running = sync({ baseUrl, userId: user, token, replica, signal: stop.signal });
  await until("the initial pull", () => replica.tasks.size === 4 && replica.token !== undefined);
  const { data: made } = await writer.POST("/api/{user_id}/tasks", { params: { path }, body: { title: "live" } });
  await until("the live create", () => replica.tasks.has(made!.data.id));
  assertConverged(replica, await serverState());
  console.log("ok - sync(): initial pull then live events");

  // Offline: stop following, then write, update and delete.
  stop.abort();
  await running;
  const [first] = [...replica.tasks.keys()];
  const { response: patched } = await writer.PATCH("/api/{user_id}/tasks/{task_id}", {
    params: { path: { ...path, task_id: made!.data.id } },
    body: { title: "edited offline" },
  });
  assert.equal(patched.status, 200);
  const { response: deleted } = await writer.DELETE("/api/{user_id}/tasks/{task_id}", { params: { path: { ...path, task_id: first } } });
  assert.equal(deleted.status, 204);
  await writer.POST("/api/{user_id}/tasks", { params: { path }, body: { title: "while away" } });
  assert.notEqual(replica.tasks.get(made!.data.id)?.title, "edited offline");

  // Back online: /changes from the replica's token.
  const pages = await pullChanges(createTodoClient({ baseUrl, token }), user, replica, 2);
  assert.ok(pages >= 1);
  assertConverged(replica, await serverState());
  assert.equal(replica.tasks.get(made!.data.id)?.title, "edited offline");
  assert.ok(!replica.tasks.has(first), "the deletion arrived as a tombstone");
  console.log("ok - after an offline period /changes converges the replica");
}
