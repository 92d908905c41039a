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

/** How a run ended, from its first terminal event (docs/runs.md). */
export type RunOutcome = 'completed' | 'failed' | 'cancelled' | 'worker_lost';

/**
 * `completed` for agent_completed; for agent_failed, `cancelled` or `worker_lost` by its
 * error_code, else `failed`; "" for an event that ends nothing.
 */
export declare function runOutcome(event: {
  type?: string;
  agent_failed?: { error_code?: string };
}): RunOutcome | '';

/** What `onRunEnd` gets, once per run, at the run's first terminal event. */
export interface RunEndInfo {
  runId: string;
  threadId: string;
  outcome: RunOutcome;
  /** The `agent_failed.error_code` ("" for `completed`). */
  errorCode: string;
  /** The `agent_failed.message` ("" for `completed`). */
  message: string;
  /** The terminal event (onEvent got it just before). */
  event: AgentEvent & { type: 'agent_completed' | 'agent_failed' };
  /** Resume point just after it. */
  cursor: string;
  replayed: boolean;
}

/** The gateway's answer to a Stop (docs/runs.md). */
export type CancelResultName =
  | 'requested'
  | 'unknown_run'
  | 'run_ended'
  | 'bad_run_id'
  | 'control_unavailable';

/** How an ended run ended, as the gateway reports it with `run_ended`. */
export interface RunEnd {
  type: 'agent_completed' | 'agent_failed' | string;
  error_code?: string;
  cursor?: string;
}

export interface CancelResult {
  result: CancelResultName;
  /** With `run_ended`. */
  end?: RunEnd;
  /** How the answer came: a frame, HTTP, or the client itself (`bad_run_id`). */
  via: 'websocket' | 'http' | 'local';
}

export interface CancelOptions {
  /** `auto` (default): the open WebSocket, else `POST /v1/runs/{run_id}/cancel`. */
  via?: 'auto' | 'websocket' | 'http';
  /** Reject when no answer came by then; default the client's `cancelTimeoutMs` (10 s). */
  timeoutMs?: number;
}

/** A rejected cancel(): no answer in time, or an HTTP answer that is not a result. */
export interface CancelError extends Error {
  /** HTTP status (401, 403, ...) when the gateway answered. */
  status?: number;
  /** The gateway's error code, when its body had one. */
  error?: string;
}

/** Offsets of the user's partition that exist nowhere (retention deleted them, no archive has them): [from_offset, to_offset). */
export interface MissingRange {
  partition: number;
  from_offset: number;
  to_offset: number;
}

export interface ThreadPageOptions {
  /** Events per page, 1..1000; default the gateway's (100). */
  limit?: number;
}

/** What loadThread() resolves with, once the thread's newest page went to onEvent. */
export interface ThreadLoaded {
  /** How many of the page's events onEvent got. */
  delivered: number;
  /** Older events of the thread may exist: offer loadOlder(). */
  hasMore: boolean;
  /** Holes the page met (usually none). */
  missing: MissingRange[];
}

/** What loadOlder() resolves with. */
export interface OlderPage {
  /** The events just before the oldest one loaded so far, OLDEST FIRST: prepend them. */
  events: AgentEvent[];
  /** False once the thread's beginning is reached. */
  hasMore: boolean;
  missing: MissingRange[];
}

/** A rejected loadThread()/loadOlder(). */
export interface ThreadError extends Error {
  /** HTTP status (400, 401, 403, 404, 503...); 0 when the gateway did not answer. */
  status?: number;
  /** The gateway's error code (`bad_cursor`, `history_unavailable`...). */
  error?: string;
  /** With 503: when to try again. */
  retryAfterMs?: number;
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
  /** Each new event, in order; never an event of a run that has already ended. */
  onEvent?: (event: AgentEvent, info: EventInfo) => void;
  /** Once per run, at its first terminal event (right after onEvent got it). */
  onRunEnd?: (info: RunEndInfo) => void;
  /** An event of a run that had already ended, dropped (for logs and counters). */
  onLateEvent?: (event: AgentEvent, info: EventInfo) => void;
  onReady?: (info: { cursor: string; replayed: number }) => void;
  /**
   * `history_unavailable` (clear the view) or `catchup_limit` (older events exist). With
   * `missing`, only those offsets are lost: keep the view, the stream goes on after them.
   */
  onReset?: (info: {
    reason: 'history_unavailable' | 'catchup_limit' | 'bad_cursor' | string;
    missing?: MissingRange;
  }) => void;
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
  /** How many ended runs to remember (to drop their late events), default 10000. */
  endedRunsSize?: number;
  /** How long cancel() waits for the gateway's answer, default 10000. */
  cancelTimeoutMs?: number;
  random?: () => number;
}

export interface ClientCounts {
  events: number;
  duplicates: number;
  connections: number;
  resets: number;
  refreshes: number;
  /** onRunEnd calls. */
  runEnds: number;
  /** Events of ended runs, dropped. */
  lateEvents: number;
}

/** One logical subscription to a user's events, surviving any number of connections. */
export declare class AgentwireClient {
  constructor(options: AgentwireClientOptions);
  readonly state: ClientStateValue;
  /** The resume point after the last frame received; "" before the first one. */
  readonly cursor: string;
  readonly counts: ClientCounts;
  /** Events of already ended runs that were dropped (not passed to onEvent). */
  readonly lateEvents: number;
  /** Asks the gateway to stop a run; its end arrives as an event (outcome `cancelled`). */
  cancel(runId: string, options?: CancelOptions): Promise<CancelResult>;
  /**
   * Opens a thread: its newest page goes to onEvent, then its live events from the page's
   * end_cursor (no gap, no duplicate). Resolves once the page was delivered; rejects with a
   * ThreadError when retrying cannot help (401, 400, 403, 404) or close()/loadThread() came first.
   */
  loadThread(threadId: string, options?: ThreadPageOptions): Promise<ThreadLoaded>;
  /** The page before the oldest event loaded, oldest first (not passed to onEvent); rejects with a ThreadError. */
  loadOlder(options?: ThreadPageOptions): Promise<OlderPage>;
  /** Whether loadOlder() may return more events. */
  readonly hasOlder: boolean;
  connect(options?: { token?: TokenSource }): void;
  close(): void;
  forgetCursor(options?: { startFrom?: 'live' | 'earliest' }): void;
}

export default AgentwireClient;
