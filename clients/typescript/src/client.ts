import createClient, { type Client } from "openapi-fetch";
import type { components, paths } from "./schema.js";

/** A task, as every endpoint returns it. */
export type Task = components["schemas"]["Task"];
/** A list, as every endpoint returns it. */
export type List = components["schemas"]["List"];
/** A webhook, as every endpoint returns it (without its secret). */
export type Webhook = components["schemas"]["Webhook"];
/** A webhook as `createWebhook` returns it: with its signing `secret`, shown only then. */
export type CreatedWebhook = components["schemas"]["CreatedWebhook"];
/** One event's delivery to a webhook, as `listWebhookDeliveries` returns it. */
export type WebhookDelivery = components["schemas"]["WebhookDelivery"];
/** The typed client of the whole API (openapi-fetch over the generated `paths`). */
export type TodoClient = Client<paths>;

/** Options of {@link createTodoClient}. */
export interface ClientOptions {
  /** The server, e.g. `http://127.0.0.1:8080` (no trailing `/api`). */
  baseUrl: string;
  /** The bearer token (a JWT whose `sub` is the user id), or a function returning a fresh one. */
  token?: string | (() => string | Promise<string>);
  /** A `fetch` to use instead of the global one. */
  fetch?: typeof fetch;
}

/** Resolves a token option to its current value. */
export async function tokenOf(token: ClientOptions["token"]): Promise<string | undefined> {
  return typeof token === "function" ? await token() : token;
}

/** A typed client that sends `Authorization: Bearer <token>` on every request. */
export function createTodoClient(options: ClientOptions): TodoClient {
  const client = createClient<paths>({ baseUrl: options.baseUrl, fetch: options.fetch });
  client.use({
    async onRequest({ request }) {
      const token = await tokenOf(options.token);
      if (token) request.headers.set("Authorization", `Bearer ${token}`);
      return request;
    },
  });
  return client;
}
