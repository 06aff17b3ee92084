// The typed client: `paths` is generated from the server's OpenAPI spec by openapi-typescript
// (`npm run generate` writes src/schema.d.ts), openapi-fetch turns it into a tiny fetch wrapper
// whose paths, parameters, bodies and responses are all checked by the TypeScript compiler.
import createClient from "openapi-fetch";
import type { components, operations, paths } from "./schema";

export type Task = components["schemas"]["Task"];
export type List = components["schemas"]["List"];
export type Problem = components["schemas"]["ProblemBody"];
export type Priority = components["schemas"]["Priority"];
export type Webhook = components["schemas"]["Webhook"];
/** A webhook as `createWebhook` returns it: with its signing secret, shown only then. */
export type CreatedWebhook = components["schemas"]["CreatedWebhook"];
export type WebhookDelivery = components["schemas"]["WebhookDelivery"];
/** The query parameters of `listTasks` (filters, sort, paging). */
export type ListTasksQuery = NonNullable<operations["listTasks"]["parameters"]["query"]>;
export type TodoClient = ReturnType<typeof createTodoClient>;

/**
 * A client for one signed-in user. In a browser app the token comes from your auth library
 * (e.g. Better Auth's JWT plugin); `baseUrl` is where the API is served.
 * Pass no token to get an anonymous client (every `/api/…` call then answers 401).
 */
export function createTodoClient(baseUrl: string, token?: string) {
  return createClient<paths>({
    baseUrl,
    headers: token ? { Authorization: `Bearer ${token}` } : {},
  });
}
