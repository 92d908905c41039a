// Type declarations of agentwire-client.js (the reference browser/Node client of the agentwire
// gateway, docs/protocol.md). Hand-written to match the JSDoc there; tests/e2e/typescript
// type-checks a TypeScript example against them with `tsc --strict`.

/** Connection states reported to `onStateChange`. */
export declare const ClientState: Readonly<{
  CONNECTING: 'connecting';
  LIVE: 'live';
  RECONNECTING: 'reconnecting';
  CLOSED: 'closed';
  UNAUTHORIZED: 'unauthorized';
}>;
export type ClientStateValue = (typeof ClientState)[keyof typeof ClientState];

/** The subprotocol that carries the token: `new WebSocket(url, [kBearerProtocol, token])`. */
export declare const kBearerProtocol: 'agentwire.bearer';

/** Full-jitter backoff delay in milliseconds for reconnect attempt `attempt` (0-based). */
export declare function backoffDelay(
  attempt: number,
  baseMs: number,
  capMs: number,
  random?: () => number,
): number;

/** The `sub` claim of a JWT, unverified; "" when unreadable. */
export declare function tokenSubject(token: string): string;
/** The `exp` claim of a JWT in ms since the epoch, unverified; 0 when unreadable. */
export declare function tokenExpiry(token: string): number;

/** A bounded set of the most recently seen ids. */
export declare class RecentIds {
  constructor(limit: number);
  /** Whether the id was there (and is now refreshed). */
  touch(id: string): boolean;
  add(id: string): void;
  clear(): void;
  readonly size: number;
}

/** The storage interface the client keeps its cursor in (sessionStorage by default). */
export interface CursorStorage {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
}

/** In-memory CursorStorage (Node, or where sessionStorage is blocked). */
export declare class MemoryStorage implements CursorStorage {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
}

/** The event types of the agentwire schema (docs/schema.md). */
export type AgentEventType =
  | 'agent_started'
  | 'agent_thinking'
  | 'tool_executing'
  | 'tool_completed'
  | 'agent_completed'
  | 'agent_failed'
  | 'message_delta';

/** One event as the gateway sends it (the JSON form of AgentEvent, docs/schema.md). */
export interface AgentEvent {
  event_id: string;
  type: AgentEventType | string;
  user_id: string;
  thread_id: string;
  run_id: string;
  run_seq: number;
  /** RFC 3339 UTC, microseconds. */
  emitted_at: string;
  agent_name?: string;
  trace_id?: string;
  attributes?: Record<string, string>;
  truncated?: { fields: string[]; original_bytes: number; limit_bytes: number };
  agent_started?: { input?: string; model?: string };
  agent_thinking?: { text?: string };
  tool_executing?: { tool_name?: string; input?: string; tool_call_id?: string };
  tool_completed?: {
    tool_name?: string;
    output?: string;
    error?: string;
    duration_ms?: number;
    tool_call_id?: string;
  };
  agent_completed?: { result?: string; duration_ms?: number };
  agent_failed?: { error_code?: string; message?: string };
  message_delta?: { text?: string };
}

export interface EventInfo {
  /** Resume point just after this event. */
  cursor: string;
  /** True while catching up (before `ready`), false when live. */
  replayed: boolean;
}

export interface StateInfo {
  attempt?: number;
  delayMs?: number;
  retryAt?: number;
  /** WebSocket close code of the connection that ended (4001: token expired). */
  code?: number;
  reason?: string;
  /** HTTP status of a rejected upgrade (401, 403, 400, 429, 503...). */
  status?: number;
  error?: string;
  message?: string;
}

/** A JWT, or a function returning one (called before every connection and before `exp`). */
export type TokenSource = string | (() => string | Promise<string>);

export interface AgentwireClientOptions {
  /** `ws(s)://host/v1/events`; default: `v1/events` beside the page. */
  url?: string;
  token: TokenSource;
  threadId?: string;
  runId?: string;
  startFrom?: 'live' | 'earliest';
  storageKey?: string;
  storage?: CursorStorage;
  onEvent?: (event: AgentEvent, info: EventInfo) => void;
  onReady?: (info: { cursor: string; replayed: number }) => void;
  /** `history_unavailable` (clear the view) or `catchup_limit` (older events exist). */
  onReset?: (info: { reason: 'history_unavailable' | 'catchup_limit' | 'bad_cursor' | string }) => void;
  onStateChange?: (state: ClientStateValue, info: StateInfo) => void;
  onError?: (error: Error) => void;
  tokenTransport?: 'protocol' | 'query';
  /** Default globalThis.WebSocket (Node: the `ws` package's WebSocket). */
  WebSocketImpl?: unknown;
  fetchImpl?: typeof fetch | null;
  baseDelayMs?: number;
  maxDelayMs?: number;
  stableAfterMs?: number;
  connectTimeoutMs?: number;
  dedupeSize?: number;
  random?: () => number;
}

export interface ClientCounts {
  events: number;
  duplicates: number;
  connections: number;
  resets: number;
  refreshes: number;
}

/** One logical subscription to a user's events, surviving any number of connections. */
export declare class AgentwireClient {
  constructor(options: AgentwireClientOptions);
  readonly state: ClientStateValue;
  /** The resume point after the last frame received; "" before the first one. */
  readonly cursor: string;
  readonly counts: ClientCounts;
  connect(options?: { token?: TokenSource }): void;
  close(): void;
  forgetCursor(options?: { startFrom?: 'live' | 'earliest' }): void;
}

export default AgentwireClient;
