// @todo-backend/client: the typed API client, the live event reader and the replica helper.
export {
  createTodoClient,
  tokenOf,
  type ClientOptions,
  type CreatedWebhook,
  type List,
  type Task,
  type TodoClient,
  type Webhook,
  type WebhookDelivery,
} from "./client.js";
export { streamEvents, Refused, type EventType, type Reminder, type StreamOptions, type TodoEvent } from "./events.js";
export { applyEvent, emptyReplica, pullChanges, sync, type Replica, type SyncOptions } from "./sync.js";
export type { components, paths } from "./schema.js";
