/** Types shared by the app and its route modules. */
import type { Config } from '../config.js';
import type { Db } from '../db/client.js';
import type { Registry } from '../metrics.js';
import type { BackgroundResponses } from './background-responses.js';
import type { ConversationLocks } from './conversation-locks.js';
import type { Logger, Services } from './services.js';

export interface AppDeps {
  config: Config;
  db: Db;
  services: Services;
  /** Where HTTP metrics are registered and /metrics reads from; a fresh registry when absent. */
  metrics?: Registry;
  /** Defaults to JSON lines on stderr. */
  logger?: Logger;
  /** Shared with the server: while draining, /readyz answers 503 and new generations get 503. */
  lifecycle?: Lifecycle;
}

export interface Lifecycle {
  draining: boolean;
  /**
   * Set by the app: settles once the work it runs apart from any request (background responses) is
   * done. The server waits for it while draining, and again after the services close (which ends
   * what still runs) before it closes the database.
   */
  settled?: () => Promise<void>;
  /**
   * Set by the app: starts again the work an earlier run of the server left unfinished (background
   * responses), once the model is ready; how many. The server calls it once it listens.
   */
  resume?: () => Promise<number>;
}

/** AppDeps with defaults filled in: what route modules receive. */
export interface RouteDeps {
  config: Config;
  db: Db;
  services: Services;
  metrics: Registry;
  logger: Logger;
  lifecycle: Lifecycle;
  /** Background responses while they run (read, streamed and cancelled by the responses routes, cancelled when their user is erased). */
  background: BackgroundResponses;
  /** The conversations a response is running in (taken by POST /v1/responses, respected by the conversation routes). */
  conversationLocks: ConversationLocks;
}

export interface AppEnv {
  Variables: { requestId: string };
}
