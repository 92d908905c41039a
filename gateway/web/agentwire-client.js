/**
 * agentwire client: receives a user's agent events from a gateway over WebSocket and keeps
 * receiving them, exactly once and in order, across disconnects, gateway restarts and deploys.
 *
 * No dependencies. Load it as an ES module (`import { AgentwireClient } from
 * "/agentwire-client.js"`); it also sets `globalThis.AgentwireClient`, so classic scripts on a
 * page that loads it with `<script type="module" src="/agentwire-client.js">` can use
 * `window.AgentwireClient` once the module has run (modules run before DOMContentLoaded).
 * In Node, pass the `ws` package as `WebSocketImpl` (and a `storage`, or the in-memory default).
 *
 * What the client does for the application (see docs/protocol.md for the wire protocol):
 * - keeps the cursor of the last frame in `storage` (sessionStorage in browsers), keyed by
 *   gateway URL, user (the token's `sub`) and filters, and resumes from it after a reconnect
 *   or a page reload;
 * - sends the token in the `Sec-WebSocket-Protocol` header (`agentwire.bearer, <token>`),
 *   which no proxy or load balancer writes to its access log, instead of the `access_token`
 *   query parameter (option `tokenTransport: 'query'` for gateways older than this);
 * - reconnects with exponential backoff and full jitter (250 ms base, 10 s cap), starting
 *   over once a connection has stayed up for `stableAfterMs`; a replica that is full (HTTP 503)
 *   is retried the same way, never sooner than its `Retry-After` when the probe can read it;
 * - drops an event whose `event_id` it has already delivered (bounded set of recent ids), so
 *   a replayed event is never handed to `onEvent` twice;
 * - ends each run at its first terminal event (`agent_completed` or `agent_failed`, whatever
 *   its `error_code`), calls `onRunEnd` once for it, and drops the run's later events ("late
 *   events", e.g. from a worker that woke up after the supervisor ended its run): they are
 *   counted (`lateEvents`), never handed to `onEvent` (docs/runs.md, "first terminal wins");
 * - asks the gateway to stop a run (`cancel(runId)`): a `cancel` frame on the open WebSocket,
 *   else `POST /v1/runs/{run_id}/cancel`;
 * - opens one thread (`loadThread(threadId)`): its newest page of events from
 *   `GET /v1/threads/{thread_id}/events` goes to `onEvent`, then its live events follow from
 *   the page's `end_cursor` over the WebSocket, with no gap and no duplicate; `loadOlder()`
 *   returns the page before the oldest event loaded, for the application to prepend, until
 *   `hasMore` is false. The gateway reads those pages from Kafka or from its archive past
 *   Kafka's retention, so a reloaded page shows the whole thread;
 * - on a `reset` frame (cursor older than the retained log) forgets the cursor and the ids,
 *   calls `onReset` so the application clears its view, and reconnects with `cursor=earliest`
 *   (after loadThread(): fetches the thread's newest page again);
 *   a `reset` with reason `catchup_limit` (no cursor, and the log holds more than the gateway
 *   replays to such a client) only calls `onReset`: the catch-up goes on from that bound;
 *   a `reset` that names `missing` offsets (`{partition, from_offset, to_offset}`: retention
 *   deleted them and no archive holds them) only calls `onReset` with it: everything delivered
 *   stays valid and the events after the hole follow on the same connection. The application
 *   keeps its view and may mark the place ("some events of this history are lost"); it must
 *   not clear the view or reload, which would only meet the same hole;
 * - stops on HTTP 401 (state `unauthorized`) and 403 (state `closed`); a 400 caused by a
 *   stored cursor is treated like a reset; a close with 1000 or 1009 from the gateway ends
 *   the subscription (state `closed`), every other close or network error means reconnect.
 *
 * @module agentwire-client
 */

/**
 * Connection states reported to `onStateChange`.
 * - `connecting`: the first connection attempt (or one after `connect()`) is under way.
 * - `live`: the gateway sent `ready`; events arrive as they are published.
 * - `reconnecting`: the connection dropped; the next attempt is scheduled (`info.delayMs`).
 * - `closed`: stopped by `close()`, or by an error that retrying cannot fix (`info.status`).
 * - `unauthorized`: the gateway rejected the token (HTTP 401); supply a new one and `connect()`.
 * @enum {string}
 */
export const ClientState = Object.freeze({
  CONNECTING: 'connecting',
  LIVE: 'live',
  RECONNECTING: 'reconnecting',
  CLOSED: 'closed',
  UNAUTHORIZED: 'unauthorized',
});

/**
 * How a run ended, from its first terminal event (docs/runs.md): `completed`, `cancelled` (the
 * user pressed Stop), `worker_lost` (the worker went silent past its lease and the supervisor
 * ended the run) or `failed` (any other `error_code`).
 * @param {{type?: string, agent_failed?: {error_code?: string}}} event
 * @returns {'completed'|'failed'|'cancelled'|'worker_lost'|''} "" for an event that ends nothing
 */
export function runOutcome(event) {
  if (!event) return '';
  if (event.type === 'agent_completed') return 'completed';
  if (event.type !== 'agent_failed') return '';
  const code = (event.agent_failed && event.agent_failed.error_code) || '';
  return code === 'cancelled' || code === 'worker_lost' ? code : 'failed';
}

/** What the gateway refuses as a run id (docs/runs.md): empty, over 256 bytes, control characters. */
function isValidRunId(runId) {
  return (
    typeof runId === 'string' &&
    runId.length > 0 &&
    new TextEncoder().encode(runId).length <= 256 &&
    !/[\u0000-\u001f\u007f]/.test(runId)
  );
}

/** A page size of the thread history endpoint: 1..1000, or undefined for the gateway's default. */
function pageLimit(limit) {
  if (limit === undefined || limit === null) return undefined;
  if (!Number.isInteger(limit) || limit < 1 || limit > 1000) {
    throw new RangeError(`agentwire: limit must be an integer 1..1000 (got ${limit})`);
  }
  return limit;
}

/** The rejection of a request that something newer superseded (close(), a reload). */
function abortError(why) {
  return Object.assign(new Error(`agentwire: ${why}`), { name: 'AbortError' });
}

/** Close code the client uses when it drops a connection itself to start over after `reset`. */
const kCloseForReset = 4000;

/** The subprotocol that carries the token: `new WebSocket(url, [kBearerProtocol, token])`. */
export const kBearerProtocol = 'agentwire.bearer';

/** RFC 7230 token characters: what a Sec-WebSocket-Protocol entry may hold (a JWT does). */
const kProtocolToken = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

/**
 * Delay before reconnect attempt number `attempt` (0-based): "full jitter", a uniformly random
 * delay between 0 and min(cap, base * 2^attempt), so clients dropped together by a replica
 * restart do not come back together.
 * @param {number} attempt
 * @param {number} baseMs
 * @param {number} capMs
 * @param {() => number} [random] returns [0, 1)
 * @returns {number} milliseconds
 */
export function backoffDelay(attempt, baseMs, capMs, random = Math.random) {
  const ceiling = Math.min(capMs, baseMs * 2 ** Math.min(attempt, 30));
  return Math.floor(random() * ceiling);
}

/**
 * A set of the most recently added ids, bounded in size; the oldest id is evicted first and a
 * hit refreshes an id, so ids a replay may still repeat stay in.
 */
export class RecentIds {
  #limit;
  /** @type {Set<string>} */
  #ids;

  /** @param {number} limit */
  constructor(limit) {
    this.#limit = Math.max(1, limit);
    this.#ids = new Set();
  }

  /** @param {string} id @returns {boolean} whether it was there (and is now refreshed) */
  touch(id) {
    if (!this.#ids.has(id)) return false;
    this.#ids.delete(id);
    this.#ids.add(id);
    return true;
  }

  /** @param {string} id */
  add(id) {
    this.#ids.add(id);
    if (this.#ids.size > this.#limit) this.#ids.delete(this.#ids.values().next().value);
  }

  clear() {
    this.#ids.clear();
  }

  get size() {
    return this.#ids.size;
  }
}

/** A Storage-like map for environments without sessionStorage (Node, sandboxed iframes). */
export class MemoryStorage {
  /** @type {Map<string, string>} */
  #map = new Map();

  /** @param {string} key @returns {string|null} */
  getItem(key) {
    return this.#map.has(key) ? this.#map.get(key) : null;
  }
  /** @param {string} key @param {string} value */
  setItem(key, value) {
    this.#map.set(key, String(value));
  }
  /** @param {string} key */
  removeItem(key) {
    this.#map.delete(key);
  }
}

/**
 * The `sub` claim of a JWT, read without verifying it (the gateway verifies; the client only
 * needs a stable name to key its stored cursor by).
 * @param {string} token
 * @returns {string} the subject, or "" when the token is not a readable JWT
 */
export function tokenSubject(token) {
  const claims = tokenClaims(token);
  return typeof claims.sub === 'string' ? claims.sub : '';
}

/**
 * When a JWT expires (its `exp`, in ms since the epoch), read without verifying it.
 * @param {string} token
 * @returns {number} 0 when the token is not a readable JWT or has no exp
 */
export function tokenExpiry(token) {
  const exp = tokenClaims(token).exp;
  return typeof exp === 'number' && Number.isFinite(exp) ? exp * 1000 : 0;
}

function tokenClaims(token) {
  try {
    const part = String(token).split('.')[1];
    const base64 = part.replace(/-/g, '+').replace(/_/g, '/');
    const binary = atob(base64 + '='.repeat((4 - (base64.length % 4)) % 4));
    const bytes = Uint8Array.from(binary, (c) => c.charCodeAt(0));
    const claims = JSON.parse(new TextDecoder().decode(bytes));
    return claims && typeof claims === 'object' ? claims : {};
  } catch {
    return {};
  }
}

/** Close codes of the token lifetime (docs/protocol.md). */
const kCloseTokenExpired = 4001;
const kCloseRefreshRefused = 4003;

// When to refresh a token in-band: a minute before exp, or a fifth of what is left when the
// token is short-lived, never sooner than a second from now.
function refreshDelayMs(expiresAtMs, now) {
  const left = expiresAtMs - now;
  return Math.max(1000, left - Math.min(60000, left / 5));
}

function defaultStorage() {
  try {
    // Reading the property itself throws where storage is blocked (sandboxed iframe, cookies off).
    const storage = globalThis.sessionStorage;
    if (storage) return storage;
  } catch {
    // fall through to memory
  }
  return new MemoryStorage();
}

function defaultUrl() {
  const location = globalThis.location;
  if (!location || !location.host) return '';
  return new URL('v1/events', location.href).href.replace(/^http/, 'ws');
}

/**
 * HTTP status of a failed upgrade, if the WebSocket implementation tells it. The `ws` package
 * reports "Unexpected server response: 401"; browsers tell nothing (then the client probes).
 * @param {string} message
 * @returns {number}
 */
function statusFromError(message) {
  const match = /Unexpected server response: (\d{3})/.exec(message || '');
  return match ? Number(match[1]) : 0;
}

/**
 * @typedef {object} EventInfo
 * @property {string} cursor resume point just after this event
 * @property {boolean} replayed true while catching up (before `ready`), false when live
 */

/**
 * @typedef {object} StateInfo
 * @property {number} [attempt] reconnect attempt number (state `reconnecting`)
 * @property {number} [delayMs] delay before that attempt
 * @property {number} [retryAt] `Date.now()` value when it starts
 * @property {number} [code] WebSocket close code of the connection that ended
 * @property {string} [reason] close reason, or what went wrong
 * @property {number} [status] HTTP status of a rejected upgrade (401, 403, 400, 429...)
 * @property {string} [error] the gateway's error code from its JSON body, when known
 * @property {string} [message] the gateway's human-readable message, when known
 */

/**
 * @typedef {object} RunEndInfo
 * @property {string} runId
 * @property {string} threadId
 * @property {'completed'|'failed'|'cancelled'|'worker_lost'} outcome see {@link runOutcome}
 * @property {string} errorCode the `agent_failed.error_code` ("" for `completed`)
 * @property {string} message the `agent_failed.message` ("" for `completed`)
 * @property {object} event the terminal event itself (also passed to onEvent just before)
 * @property {string} cursor resume point just after it
 * @property {boolean} replayed true while catching up
 */

/**
 * @typedef {object} CancelResult
 * @property {'requested'|'unknown_run'|'run_ended'|'bad_run_id'|'control_unavailable'} result
 *   `requested`: the run was open and the Stop is on its way (its end arrives as an event);
 *   `unknown_run`: no run of this id for this user; `run_ended`: too late, `end` says how it
 *   ended; `bad_run_id`: not a valid run id (checked before anything is sent);
 *   `control_unavailable`: the gateway could not pass the Stop on, try again
 * @property {{type: string, error_code?: string, cursor?: string}} [end] with `run_ended`
 * @property {'websocket'|'http'|'local'} via how the answer came
 */

/**
 * @typedef {object} CancelOptions
 * @property {'auto'|'websocket'|'http'} [via] `auto` (default): the open WebSocket, else HTTP
 * @property {number} [timeoutMs] reject when no answer came by then; default the client's
 *   `cancelTimeoutMs`
 */

/**
 * @typedef {object} MissingRange offsets of the user's partition that exist nowhere (retention
 *   deleted them before any archive stored them): [from_offset, to_offset)
 * @property {number} partition
 * @property {number} from_offset
 * @property {number} to_offset
 */

/**
 * @typedef {object} ThreadLoaded what loadThread() resolves with, once the newest page went to
 *   onEvent
 * @property {number} delivered how many of the page's events onEvent got
 * @property {boolean} hasMore older events of the thread may exist: offer loadOlder()
 * @property {MissingRange[]} missing holes the page met (usually none)
 */

/**
 * @typedef {object} OlderPage what loadOlder() resolves with
 * @property {object[]} events the events just before the oldest one loaded so far, oldest first
 * @property {boolean} hasMore false once the thread's beginning is reached
 * @property {MissingRange[]} missing holes the page met (usually none)
 */

/**
 * @typedef {object} AgentwireClientOptions
 * @property {string} [url] `ws(s)://host/v1/events`; default: `v1/events` beside the page
 * @property {string | (() => string | Promise<string>)} token JWT, or a function (getToken)
 *   called before every connection attempt and, on an open connection, before the token's
 *   `exp`: its result is sent in-band (`{"type":"refresh"}`) so the gateway does not close the
 *   connection with 4001; after a 4001 the client reconnects at once with a fresh token
 * @property {string} [threadId] deliver only this thread's events
 * @property {string} [runId] deliver only this run's events
 * @property {'live'|'earliest'} [startFrom] where to start when there is no stored cursor:
 *   `live` (default) from now on, `earliest` every retained event of the user
 * @property {string} [storageKey] where the cursor is stored; default derived from the URL,
 *   the token's user and the filters
 * @property {{getItem(k:string):string|null, setItem(k:string,v:string):void,
 *   removeItem(k:string):void}} [storage] default sessionStorage, else in memory
 * @property {(event: object, info: EventInfo) => void} [onEvent] each new event, in order;
 *   never an event of a run that has already ended
 * @property {(info: RunEndInfo) => void} [onRunEnd] once per run, at its first terminal event
 *   (right after onEvent got it)
 * @property {(event: object, info: EventInfo) => void} [onLateEvent] an event of a run that had
 *   already ended, dropped (for logs and counters; never show it as part of the run)
 * @property {(info: {cursor: string, replayed: number}) => void} [onReady] caught up; live now
 * @property {(info: {reason: string, missing?: MissingRange}) => void} [onReset] history is
 *   unavailable: clear the view; the client replays from the earliest retained event next (or,
 *   after loadThread(), the thread's newest page). With `missing`, only those offsets are
 *   lost: keep the view, the stream goes on after them. With reason `catchup_limit`: keep the
 *   view, older events exist
 * @property {(state: string, info: StateInfo) => void} [onStateChange]
 * @property {(error: Error) => void} [onError] a frame that could not be parsed, or a callback
 *   that threw (the stream goes on)
 * @property {'protocol' | 'query'} [tokenTransport] how the token travels: 'protocol' (default)
 *   in the Sec-WebSocket-Protocol header, out of every access log; 'query' as `access_token=`
 *   (gateways older than the header support). A token that is not a valid header token goes in
 *   the query either way.
 * @property {typeof WebSocket} [WebSocketImpl] default globalThis.WebSocket (Node: `ws`)
 * @property {typeof fetch | null} [fetchImpl] used to learn the HTTP status of a rejected
 *   upgrade in browsers; null disables the probe
 * @property {number} [baseDelayMs] backoff base, default 250
 * @property {number} [maxDelayMs] backoff cap, default 10000
 * @property {number} [stableAfterMs] a connection up this long resets the backoff, default 5000
 * @property {number} [connectTimeoutMs] give up on a handshake after this long, default 15000
 * @property {number} [dedupeSize] how many recent event ids to remember, default 10000
 * @property {number} [endedRunsSize] how many ended runs to remember (to drop their late
 *   events), default 10000
 * @property {number} [cancelTimeoutMs] how long cancel() waits for the gateway, default 10000
 * @property {() => number} [random] jitter source, default Math.random
 */

/**
 * One logical subscription to a user's events, surviving any number of connections.
 * Not thread-safe in any sense that matters to JavaScript: callbacks run on the event loop.
 */
export class AgentwireClient {
  #url;
  #token;
  #threadId;
  #runId;
  #startFrom;
  #explicitKey;
  #storage;
  #onEvent;
  #onRunEnd;
  #onLateEvent;
  #onReady;
  #onReset;
  #onStateChange;
  #onError;
  #webSocket;
  #tokenTransport;
  #fetch;
  #baseDelayMs;
  #maxDelayMs;
  #stableAfterMs;
  #connectTimeoutMs;
  #random;
  #seen;
  #ended;  // run ids whose first terminal event was delivered
  #cancelTimeoutMs;
  /** @type {Map<string, Array<{socket: object, resolve: Function, reject: Function, timer: any, deadline: number}>>} */
  #cancels = new Map();  // cancel frames sent and not answered yet, by run id, oldest first
  #state = ClientState.CLOSED;
  #key = '';  // storage key of the current user and filters
  #cursor = '';
  #fromEarliest = false;  // set by a reset: the next connection replays everything
  #ignoreStored = false;  // forgetCursor() before the first connection
  #attempt = 0;
  #generation = 0;  // bumps on connect()/close(); stale async work checks it
  #opening = -1;  // the generation whose connection attempt is under way
  #socket = null;
  #timer = null;
  /**
   * Set by loadThread(): the thread, its page size, and the paging state of loadOlder().
   * `epoch` changes whenever the newest page is fetched anew (a reset), so an older page asked
   * for before that is not handed out after it.
   * @type {null | {id: string, limit: number, oldestCursor: string, hasMore: boolean, epoch: number,
   *   pending: null | {resolve: Function, reject: Function}, older: null | Promise<object>}}
   */
  #thread = null;
  #counts = { events: 0, duplicates: 0, connections: 0, resets: 0, refreshes: 0, runEnds: 0, lateEvents: 0 };
  #onOnline = () => {
    if (this.#state === ClientState.RECONNECTING) this.#reconnect(0);
  };

  /** @param {AgentwireClientOptions} options */
  constructor(options) {
    const o = options || {};
    if (!o.token) throw new TypeError('AgentwireClient: options.token is required');
    this.#url = o.url || defaultUrl();
    if (!this.#url) throw new TypeError('AgentwireClient: options.url is required outside a browser');
    this.#token = o.token;
    this.#threadId = o.threadId || '';
    this.#runId = o.runId || '';
    this.#startFrom = o.startFrom === 'earliest' ? 'earliest' : 'live';
    this.#explicitKey = o.storageKey || '';
    this.#storage = o.storage || defaultStorage();
    this.#onEvent = o.onEvent || (() => {});
    this.#onRunEnd = o.onRunEnd || (() => {});
    this.#onLateEvent = o.onLateEvent || (() => {});
    this.#onReady = o.onReady || (() => {});
    this.#onReset = o.onReset || (() => {});
    this.#onStateChange = o.onStateChange || (() => {});
    this.#onError = o.onError || ((error) => console.error('agentwire:', error));
    this.#webSocket = o.WebSocketImpl || globalThis.WebSocket;
    if (!this.#webSocket) throw new TypeError('AgentwireClient: no WebSocket; pass WebSocketImpl');
    this.#tokenTransport = o.tokenTransport === 'query' ? 'query' : 'protocol';
    // Bound: browsers throw "Illegal invocation" for fetch called on another object.
    const fetchImpl = o.fetchImpl === undefined ? globalThis.fetch : o.fetchImpl;
    this.#fetch = typeof fetchImpl === 'function' ? fetchImpl.bind(globalThis) : null;
    this.#baseDelayMs = o.baseDelayMs ?? 250;
    this.#maxDelayMs = o.maxDelayMs ?? 10000;
    this.#stableAfterMs = o.stableAfterMs ?? 5000;
    this.#connectTimeoutMs = o.connectTimeoutMs ?? 15000;
    this.#random = o.random || Math.random;
    this.#seen = new RecentIds(o.dedupeSize ?? 10000);
    this.#ended = new RecentIds(o.endedRunsSize ?? 10000);
    this.#cancelTimeoutMs = o.cancelTimeoutMs ?? 10000;
  }

  /** The current state (one of {@link ClientState}). */
  get state() {
    return this.#state;
  }

  /** The resume point after the last frame received; "" before the first one. */
  get cursor() {
    return this.#cursor;
  }

  /**
   * Counters since construction: events delivered to onEvent, duplicates dropped, connections
   * opened, resets received, token refreshes sent, runs ended (onRunEnd calls) and late events
   * dropped.
   */
  get counts() {
    return { ...this.#counts };
  }

  /** Events of already ended runs that were dropped (not passed to onEvent) since construction. */
  get lateEvents() {
    return this.#counts.lateEvents;
  }

  /**
   * Asks the gateway to stop a run of this user (docs/runs.md, "Stop"). The run's end then
   * arrives like any other: an `agent_failed` with `error_code` `cancelled` (onRunEnd with
   * outcome `cancelled`), or, when the worker finished first, its own end.
   *
   * Over the open WebSocket (a `cancel` frame, answered by the `cancel_result` frame of the same
   * run id) or, when none is open, `POST /v1/runs/{run_id}/cancel` beside the events URL. A
   * WebSocket that closes before the answer hands the request over to HTTP (Stop is
   * idempotent). Resolves with the gateway's answer; rejects when there is none within the
   * timeout, when the gateway refuses the token (the error's `status`: 401, 403) or answers
   * something else.
   * @param {string} runId
   * @param {CancelOptions} [options]
   * @returns {Promise<CancelResult>}
   */
  async cancel(runId, options) {
    const o = options || {};
    if (!isValidRunId(runId)) return { result: 'bad_run_id', via: 'local' };
    const via = o.via || 'auto';
    const timeoutMs = o.timeoutMs ?? this.#cancelTimeoutMs;
    const socket = this.#socket;
    const open = Boolean(socket) && socket.readyState === 1;
    if (via === 'websocket' || (via === 'auto' && open)) {
      if (!open) throw new Error('agentwire: cancel: no open WebSocket');
      return this.#cancelOverSocket(socket, runId, timeoutMs);
    }
    return this.#cancelOverHttp(runId, Date.now() + timeoutMs);
  }

  /**
   * Opens one thread (a chat): its newest page of events, then its live events, with no gap and
   * no duplicate between them; loadOlder() then pages back through its history.
   *
   * Restarts the client as a subscription to `threadId` (whatever it was subscribed to before;
   * the client's `runId` filter must be unset). It asks `GET /v1/threads/{thread_id}/events`
   * beside the events URL (same token, in `Authorization`) for the newest `limit` events and
   * delivers them to onEvent in order (`info.replayed` true, run ends and duplicates handled as
   * for any event), then opens the WebSocket with `cursor=<the page's end_cursor>` and
   * `thread_id`: every later event of the thread follows through onEvent, as after a
   * reconnect. The page comes from whichever tier holds it (Kafka, or the gateway's archive past
   * Kafka's retention), so a reloaded page shows the thread's history, not only what the log
   * retains.
   *
   * Resolves once the page has been delivered (before the WebSocket is open) with
   * `{delivered, hasMore, missing}`: how many of its events went to onEvent, whether older
   * events may exist (then offer loadOlder()), and the holes the page met (offsets that exist
   * nowhere; usually []). A gateway that cannot serve the page now (503, e.g. its archive is
   * down, or a network error) is asked again with the client's backoff, the state
   * `reconnecting` meanwhile; the promise rejects when retrying cannot help (401: state
   * `unauthorized`; 400, 403, 404: state `closed`; the error's `status` and `error` say which),
   * or when close() or another loadThread() comes first.
   *
   * A `reset` (history_unavailable) later, or forgetCursor(), clears the thread's events too:
   * onReset tells the application to clear its view, and the client fetches the newest page
   * again (delivered through onEvent) instead of replaying from `earliest`.
   * @param {string} threadId
   * @param {{limit?: number}} [options] events per page, 1..1000 (default: the gateway's, 100);
   *   loadOlder() uses it too
   * @returns {Promise<ThreadLoaded>}
   */
  loadThread(threadId, options) {
    let limit;
    try {
      limit = pageLimit(options && options.limit);
    } catch (error) {
      return Promise.reject(error);
    }
    if (typeof threadId !== 'string' || !threadId) {
      return Promise.reject(new TypeError('agentwire: loadThread needs a thread id'));
    }
    if (this.#runId) {
      return Promise.reject(new TypeError('agentwire: loadThread on a client with a runId filter'));
    }
    if (typeof this.#fetch !== 'function') {
      return Promise.reject(new TypeError('agentwire: loadThread needs fetch'));
    }
    this.#detach();
    const previous = this.#thread && this.#thread.pending;
    if (previous) previous.reject(abortError('another loadThread() came first'));
    const promise = new Promise((resolve, reject) => {
      this.#thread = { id: threadId, limit, oldestCursor: '', hasMore: false, epoch: 0, pending: { resolve, reject }, older: null };
    });
    this.#threadId = threadId;
    // A new key (this thread's): the stored cursor of an earlier life is not resumed, since the
    // view is built from the newest page.
    this.#key = '';
    this.#ignoreStored = true;
    this.#cursor = '';
    this.#fromEarliest = false;
    this.#start();
    return promise;
  }

  /**
   * The page of the thread just before the oldest event loaded so far (by loadThread() or an
   * earlier loadOlder()): `GET /v1/threads/{thread_id}/events?before=<its cursor>`. Resolves
   * with `{events, hasMore, missing}`: the events OLDEST FIRST (prepend them to the view), not
   * passed to onEvent (they come before everything it got) nor to onRunEnd (use
   * runOutcome(event)); duplicates and events after their run's end within the history are
   * dropped as for onEvent (counted, onLateEvent). `hasMore` false means the thread's beginning
   * is reached: further calls resolve with no events without asking the gateway. One request
   * at a time: a call while one is in flight gets the same promise. Rejects on a network error,
   * an HTTP error (the error's `status`, `error`; 503 with `retryAfterMs`: try again then), or
   * when the thread was reloaded meanwhile (a reset, forgetCursor(), another loadThread(); the
   * error's name is `AbortError`: the view starts over from the newest page anyway). close()
   * leaves it alone.
   * @param {{limit?: number}} [options] events per page; default loadThread's
   * @returns {Promise<OlderPage>}
   */
  loadOlder(options) {
    const thread = this.#thread;
    if (!thread) return Promise.reject(new TypeError('agentwire: loadOlder() before loadThread()'));
    if (thread.older) return thread.older;
    if (!thread.hasMore || !thread.oldestCursor) return Promise.resolve({ events: [], hasMore: false, missing: [] });
    let limit = thread.limit;
    try {
      if (options && options.limit !== undefined) limit = pageLimit(options.limit);
    } catch (error) {
      return Promise.reject(error);
    }
    const older = this.#fetchOlder(thread, limit).finally(() => {
      if (thread.older === older) thread.older = null;
    });
    thread.older = older;
    return older;
  }

  /** Whether loadOlder() may return more events: false before loadThread() and at the thread's beginning. */
  get hasOlder() {
    return Boolean(this.#thread && this.#thread.hasMore && this.#thread.oldestCursor);
  }

  /**
   * Starts (or restarts after close()/unauthorized) the subscription. Idempotent while
   * connecting or connected.
   * @param {{token?: AgentwireClientOptions['token']}} [options] a replacement token
   */
  connect(options) {
    if (options && options.token) this.#token = options.token;
    if (this.#state !== ClientState.CLOSED && this.#state !== ClientState.UNAUTHORIZED) return;
    this.#start();
  }

  #start() {
    this.#generation++;
    this.#attempt = 0;
    if (typeof globalThis.addEventListener === 'function') {
      globalThis.addEventListener('online', this.#onOnline);
    }
    this.#setState(ClientState.CONNECTING, {});
    this.#open();
  }

  /** Stops for good (until connect()). The stored cursor is kept, so a later connect resumes. */
  close() {
    this.#stop(ClientState.CLOSED, {});
  }

  /**
   * Forgets the stored cursor and the delivered ids: the next connection starts per
   * `startFrom` (or `options.startFrom`); after loadThread(), from the thread's newest page.
   * Call before connect(), e.g. to replay history.
   * @param {{startFrom?: 'live'|'earliest'}} [options]
   */
  forgetCursor(options) {
    if (options && options.startFrom) this.#startFrom = options.startFrom;
    if (this.#key) this.#storageRemove(this.#key);
    else this.#ignoreStored = true;  // the key is known once the token is
    this.#cursor = '';
    this.#fromEarliest = false;
    this.#seen.clear();
    this.#ended.clear();  // the next replay shows those runs again, ends included
    this.#restartThread();
  }

  // Stops the current connection (and any retry), leaving the state to the caller.
  #detach() {
    this.#generation++;
    clearTimeout(this.#timer);
    this.#timer = null;
    if (this.#socket) this.#handOverCancels(this.#socket);
    if (typeof globalThis.removeEventListener === 'function') {
      globalThis.removeEventListener('online', this.#onOnline);
    }
    const socket = this.#socket;
    this.#socket = null;
    if (socket) {
      try {
        socket.close(1000, 'client closed');
      } catch {
        // already closing
      }
    }
  }

  // `error`: why a loadThread() still waiting for its page fails (default: the client stopped).
  #stop(state, info, error) {
    this.#detach();
    const pending = this.#thread && this.#thread.pending;
    if (pending) {
      this.#thread.pending = null;
      pending.reject(error || abortError('the client was closed before the thread was loaded'));
    }
    this.#setState(state, info);
  }

  #setState(state, info) {
    this.#state = state;
    this.#call(this.#onStateChange, state, info);
  }

  #call(callback, ...args) {
    try {
      callback(...args);
    } catch (error) {
      this.#onError(error);
    }
  }

  // Keeps an open connection alive past its token: shortly before exp, asks the token function
  // for a fresh token and sends it in-band. Only with a token function: a fixed token cannot
  // be renewed, and the gateway closes with 4001 at its exp.
  #scheduleRefresh(socket, connection, token) {
    if (typeof this.#token !== 'function') return;
    const expiresAt = tokenExpiry(token);
    if (!expiresAt) return;
    clearTimeout(connection.refreshTimer);
    connection.refreshTimer = setTimeout(async () => {
      let fresh;
      try {
        fresh = await this.#resolveToken();
      } catch (error) {
        this.#onError(error);  // the gateway closes with 4001 at exp; reconnecting asks again
        return;
      }
      if (this.#socket !== socket || socket.readyState !== 1) return;
      socket.send(JSON.stringify({ type: 'refresh', token: fresh }));
      this.#counts.refreshes++;
      if (tokenExpiry(fresh) > expiresAt) this.#scheduleRefresh(socket, connection, fresh);
    }, refreshDelayMs(expiresAt, Date.now()));
  }

  async #resolveToken() {
    return typeof this.#token === 'function' ? await this.#token() : this.#token;
  }

  // The storage key names what a cursor is valid for: one gateway URL, one user, one filter set.
  #keyFor(token) {
    if (this.#explicitKey) return this.#explicitKey;
    const user = tokenSubject(token) || 'anonymous';
    return `agentwire:cursor:${this.#url}|${user}|${this.#threadId}|${this.#runId}`;
  }

  #storageGet(key) {
    try {
      return this.#storage.getItem(key) || '';
    } catch {
      return '';
    }
  }
  #storageSet(key, value) {
    try {
      this.#storage.setItem(key, value);
    } catch {
      // Quota or blocked storage: the in-memory cursor still covers reconnects.
    }
  }
  #storageRemove(key) {
    try {
      this.#storage.removeItem(key);
    } catch {
      // nothing stored then
    }
  }

  #setCursor(cursor) {
    if (!cursor) return;
    this.#cursor = cursor;
    this.#storageSet(this.#key, cursor);
  }

  #urlFor(token) {
    const url = new URL(this.#url);
    const inHeader = this.#tokenTransport === 'protocol' && kProtocolToken.test(token);
    if (!inHeader) url.searchParams.set('access_token', token);
    const cursor = this.#cursor || (this.#fromEarliest || this.#startFrom === 'earliest' ? 'earliest' : '');
    if (cursor) url.searchParams.set('cursor', cursor);
    if (this.#threadId) url.searchParams.set('thread_id', this.#threadId);
    if (this.#runId) url.searchParams.set('run_id', this.#runId);
    return { href: url.href, sentCursor: cursor, protocols: inHeader ? [kBearerProtocol, token] : null };
  }

  // One attempt at a time: a retry (or an `online` event) while a thread page is being fetched
  // waits for that attempt instead of starting a second one.
  async #open() {
    const generation = this.#generation;
    if (this.#opening === generation) return;
    this.#opening = generation;
    try {
      await this.#attemptOpen(generation);
    } finally {
      if (this.#opening === generation) this.#opening = -1;
    }
  }

  async #attemptOpen(generation) {
    let token;
    try {
      token = await this.#resolveToken();
    } catch (error) {
      if (generation !== this.#generation) return;
      this.#onError(error);
      this.#scheduleReconnect({ reason: 'token unavailable' });
      return;
    }
    if (generation !== this.#generation) return;

    const key = this.#keyFor(token);
    if (key !== this.#key) {
      // First connection, or another user/filter set: its own cursor and its own ids.
      this.#key = key;
      if (this.#ignoreStored) this.#storageRemove(key);
      this.#ignoreStored = false;
      this.#cursor = this.#storageGet(key);
      this.#seen.clear();
      this.#ended.clear();
    }
    if (this.#thread && !this.#cursor) {
      if (!(await this.#openThread(token, generation))) return;
    }
    const { href, sentCursor, protocols } = this.#urlFor(token);
    // The probe after a refused upgrade sends the token as a header too, never in the URL.
    const probeToken = protocols ? token : '';

    let socket;
    try {
      socket = protocols ? new this.#webSocket(href, protocols) : new this.#webSocket(href);
    } catch (error) {
      this.#onError(error);
      this.#scheduleReconnect({ reason: String(error && error.message) });
      return;
    }
    this.#socket = socket;
    const connection = { opened: false, openedAt: 0, ready: false, error: '', resetting: false, refreshTimer: null };
    const handshakeTimer = setTimeout(() => {
      if (!connection.opened && this.#socket === socket) socket.close();
    }, this.#connectTimeoutMs);

    socket.onopen = () => {
      if (this.#socket !== socket) return;
      clearTimeout(handshakeTimer);
      connection.opened = true;
      connection.openedAt = Date.now();
      this.#counts.connections++;
      this.#scheduleRefresh(socket, connection, token);
    };
    socket.onerror = (event) => {
      connection.error = (event && (event.message || (event.error && event.error.message))) || '';
    };
    socket.onmessage = (message) => {
      if (this.#socket !== socket) return;
      this.#handleFrame(socket, connection, message.data);
    };
    socket.onclose = (event) => {
      clearTimeout(handshakeTimer);
      clearTimeout(connection.refreshTimer);
      this.#handOverCancels(socket);
      if (this.#socket !== socket) return;  // closed by close() or superseded
      this.#socket = null;
      this.#handleClose(connection, event || {}, href, sentCursor, generation, probeToken);
    };
  }

  #handleFrame(socket, connection, data) {
    let frame;
    try {
      frame = JSON.parse(typeof data === 'string' ? data : new TextDecoder().decode(data));
    } catch (error) {
      if (!connection.resetting) this.#onError(new Error(`agentwire: unparseable frame: ${error.message}`));
      return;
    }
    // The answer to a Stop is valid whatever else this connection is doing.
    if (frame && frame.type === 'cancel_result') {
      this.#answerCancel(socket, frame);
      return;
    }
    // After a reset this connection goes on live, but the client starts over from the earliest
    // event on a new one: anything more here would come before the history and out of order.
    if (connection.resetting || !frame) return;
    switch (frame.type) {
      case 'event':
        this.#deliver(frame, !connection.ready);
        return;
      case 'ready':
        connection.ready = true;
        this.#fromEarliest = false;
        this.#setCursor(frame.cursor);
        this.#setState(ClientState.LIVE, {});
        this.#call(this.#onReady, { cursor: frame.cursor || '', replayed: frame.replayed || 0 });
        return;
      case 'reset':
        this.#counts.resets++;
        if (frame.missing && typeof frame.missing === 'object') {
          // Only the named offsets are gone (retention deleted them and no archive holds them);
          // the events after them follow on this connection. What was delivered stays valid.
          this.#call(this.#onReset, { reason: frame.reason || 'history_unavailable', missing: frame.missing });
          return;
        }
        if (frame.reason === 'catchup_limit') {
          // No cursor was sent and the log holds more than the gateway replays to such a
          // client: the catch-up starts at that bound on this connection. Older events are
          // not coming; reconnecting would only get the same answer.
          this.#call(this.#onReset, { reason: frame.reason });
          return;
        }
        this.#forgetHistory();
        this.#call(this.#onReset, { reason: frame.reason || 'reset' });
        // Start over right away from the oldest retained event on a fresh connection.
        connection.resetting = true;
        socket.close(kCloseForReset, 'reset');
        return;
      default:
        return;  // a frame type from a newer gateway: ignore
    }
  }

  // One event frame, from the socket or from a thread page: the cursor moves past it (dropped
  // ones included); a duplicate or an event of a run that has already ended is dropped;
  // anything else goes to onEvent, then to onRunEnd when it is its run's first end.
  #deliver(frame, replayed) {
    this.#setCursor(frame.cursor);
    const event = frame.event || {};
    const id = event.event_id;
    if (id && this.#seen.touch(id)) {
      this.#counts.duplicates++;
      return;
    }
    if (id) this.#seen.add(id);
    const runId = typeof event.run_id === 'string' ? event.run_id : '';
    const info = { cursor: frame.cursor || '', replayed };
    if (runId && this.#ended.touch(runId)) {
      // The run already ended (first terminal wins): a zombie worker's event, or a second
      // end that lost the race. Never shown.
      this.#counts.lateEvents++;
      this.#call(this.#onLateEvent, event, info);
      return;
    }
    this.#counts.events++;
    this.#call(this.#onEvent, event, info);
    const outcome = runOutcome(event);
    if (runId && outcome) {
      this.#ended.add(runId);
      this.#counts.runEnds++;
      const failed = event.agent_failed || {};
      this.#call(this.#onRunEnd, {
        runId,
        threadId: event.thread_id || '',
        outcome,
        errorCode: outcome === 'completed' ? '' : String(failed.error_code || ''),
        message: outcome === 'completed' ? '' : String(failed.message || ''),
        event,
        ...info,
      });
    }
  }

  #forgetHistory() {
    this.#storageRemove(this.#key);
    this.#cursor = '';
    this.#seen.clear();
    this.#ended.clear();
    this.#fromEarliest = true;
    this.#restartThread();
  }

  // The thread's events are forgotten with the cursor: the next connection fetches its newest
  // page again, and an older page on its way is not handed out.
  #restartThread() {
    if (!this.#thread) return;
    this.#thread.epoch++;
    this.#thread.oldestCursor = '';
    this.#thread.hasMore = false;
  }

  // GET /v1/threads/{thread_id}/events: the parsed page, or an Error with the HTTP `status`,
  // the gateway's `error` and `retryAfterMs` (status 0: no answer or not a page).
  async #fetchThreadPage(threadId, token, query) {
    const params = new URLSearchParams();
    if (query.before) params.set('before', query.before);
    if (query.limit) params.set('limit', String(query.limit));
    const search = params.toString();
    const url = this.#apiUrl(`threads/${encodeURIComponent(threadId)}/events${search ? `?${search}` : ''}`);
    const what = `the history of thread ${threadId}`;
    let answer;
    try {
      answer = await this.#httpRequest('GET', url, token, Date.now() + this.#connectTimeoutMs, what);
    } catch (error) {
      throw Object.assign(error, { status: 0, error: '', retryAfterMs: 0 });
    }
    const { response, body, retryAfterMs } = answer;
    const error = typeof body.error === 'string' ? body.error : '';
    if (response.status === 200 && Array.isArray(body.events)) {
      body.events = body.events.filter((frame) => frame && frame.type === 'event');
      body.missing = Array.isArray(body.missing) ? body.missing : [];
      return body;
    }
    throw Object.assign(
      new Error(`agentwire: ${what}: HTTP ${response.status}${error ? ` ${error}` : ''}` +
        `${body.message ? `: ${body.message}` : ''}`),
      { status: response.status === 200 ? 0 : response.status, error, message: String(body.message || ''), retryAfterMs },
    );
  }

  // Thread mode without a cursor (loadThread(), or a reset since): the newest page goes to
  // onEvent and its end_cursor becomes the cursor the WebSocket resumes from, so the page and
  // the live stream meet with no gap (the cursor is the log's end as the page was read) and no
  // duplicate (the socket sends only what comes after it). False when the client stopped or
  // retries later: the failure is handled here.
  async #openThread(token, generation) {
    const thread = this.#thread;
    let page;
    try {
      page = await this.#fetchThreadPage(thread.id, token, { limit: thread.limit });
    } catch (error) {
      if (generation !== this.#generation) return false;
      const details = { reason: error.message, status: error.status, error: error.error, message: error.message };
      if (error.status === 401) {
        this.#stop(ClientState.UNAUTHORIZED, details, error);
      } else if (error.status === 400 || error.status === 403 || error.status === 404) {
        this.#stop(ClientState.CLOSED, details, error);
      } else {
        this.#scheduleReconnect({ ...details, retryAfterMs: error.retryAfterMs });
      }
      return false;
    }
    if (generation !== this.#generation) return false;
    thread.epoch++;
    thread.oldestCursor = page.events.length > 0 ? String(page.events[0].cursor || '') : '';
    thread.hasMore = Boolean(page.has_more_before) && page.events.length > 0;
    const before = this.#counts.events;
    for (const frame of page.events) {
      this.#deliver(frame, true);
      if (generation !== this.#generation) return false;  // a callback closed or restarted the client
    }
    this.#setCursor(typeof page.end_cursor === 'string' ? page.end_cursor : '');
    const pending = thread.pending;
    thread.pending = null;
    if (pending) pending.resolve({ delivered: this.#counts.events - before, hasMore: thread.hasMore, missing: page.missing });
    if (this.#cursor) return true;
    // Neither an end_cursor nor an event: not a page of this protocol.
    this.#onError(new Error(`agentwire: the history of thread ${thread.id} came without end_cursor`));
    this.#scheduleReconnect({ reason: 'no end_cursor' });
    return false;
  }

  async #fetchOlder(thread, limit) {
    const epoch = thread.epoch;
    const stale = () => this.#thread !== thread || thread.epoch !== epoch;
    const token = await this.#resolveToken();
    if (stale()) throw abortError('the thread was reloaded');
    const page = await this.#fetchThreadPage(thread.id, token, { before: thread.oldestCursor, limit });
    if (stale()) throw abortError('the thread was reloaded');
    const events = [];
    const endedHere = new Set();  // runs whose first end is in this page
    for (const frame of page.events) {
      const event = frame.event || {};
      const id = event.event_id;
      if (id && this.#seen.touch(id)) {
        this.#counts.duplicates++;
        continue;
      }
      if (id) this.#seen.add(id);
      const runId = typeof event.run_id === 'string' ? event.run_id : '';
      if (runId && endedHere.has(runId)) {
        this.#counts.lateEvents++;
        this.#call(this.#onLateEvent, event, { cursor: frame.cursor || '', replayed: true });
        continue;
      }
      if (runId && runOutcome(event)) {
        endedHere.add(runId);
        this.#ended.add(runId);  // a live event of it now would be a zombie's
      }
      events.push(event);
    }
    if (page.events.length > 0) thread.oldestCursor = String(page.events[0].cursor || '');
    // An empty page names no older position to ask from: the beginning, whatever it says.
    thread.hasMore = Boolean(page.has_more_before) && page.events.length > 0 && Boolean(thread.oldestCursor);
    return { events, hasMore: thread.hasMore, missing: page.missing };
  }

  #cancelOverSocket(socket, runId, timeoutMs) {
    return new Promise((resolve, reject) => {
      const pending = { socket, resolve, reject, timer: null, deadline: Date.now() + timeoutMs };
      pending.timer = setTimeout(() => {
        if (!this.#takeCancel(runId, pending)) return;
        reject(new Error(`agentwire: no answer to the cancel of run ${runId} within ${timeoutMs} ms`));
      }, timeoutMs);
      const queue = this.#cancels.get(runId) || [];
      queue.push(pending);
      this.#cancels.set(runId, queue);
      try {
        socket.send(JSON.stringify({ type: 'cancel', run_id: runId }));
      } catch (error) {
        this.#takeCancel(runId, pending);
        clearTimeout(pending.timer);
        reject(error);
      }
    });
  }

  // Removes one pending cancel; false when it was already answered, timed out or handed over.
  #takeCancel(runId, pending) {
    const queue = this.#cancels.get(runId);
    const index = queue ? queue.indexOf(pending) : -1;
    if (index < 0) return false;
    queue.splice(index, 1);
    if (queue.length === 0) this.#cancels.delete(runId);
    return true;
  }

  // A `cancel_result` frame answers the oldest cancel of that run id sent on this socket (the
  // frame carries no request id; two answers about one run say the same about it anyway).
  // One nobody here asked for is ignored.
  #answerCancel(socket, frame) {
    const runId = typeof frame.run_id === 'string' ? frame.run_id : '';
    const pending = (this.#cancels.get(runId) || []).find((entry) => entry.socket === socket);
    if (!pending) return;
    this.#takeCancel(runId, pending);
    clearTimeout(pending.timer);
    const answer = { result: String(frame.result || ''), via: 'websocket' };
    if (frame.end && typeof frame.end === 'object') answer.end = frame.end;
    pending.resolve(answer);
  }

  // The socket closed (or the client did) before the gateway answered: asks again over HTTP
  // within what is left of each request's time. A Stop is idempotent, so one that did reach
  // the gateway is merely repeated.
  #handOverCancels(socket) {
    for (const [runId, queue] of [...this.#cancels]) {
      for (const pending of queue.filter((entry) => entry.socket === socket)) {
        this.#takeCancel(runId, pending);
        clearTimeout(pending.timer);
        this.#cancelOverHttp(runId, pending.deadline).then(pending.resolve, pending.reject);
      }
    }
  }

  // An endpoint beside the events URL: wss://host/v1/events + "runs/r/cancel" ->
  // https://host/v1/runs/r/cancel.
  #apiUrl(relative) {
    const events = new URL(this.#url.replace(/^ws/, 'http'));
    events.pathname = events.pathname.replace(/\/+$/, '');
    return new URL(relative, events).href;
  }

  // One HTTP request to the gateway with the token in `Authorization` (never in the URL), given
  // up at `deadline`. Resolves with the response, its JSON body ({} when it has none) and its
  // Retry-After in ms (0 when absent); rejects on a network error or timeout, naming `what`.
  async #httpRequest(method, url, token, deadline, what) {
    const left = Math.max(1, deadline - Date.now());
    const controller = typeof AbortController === 'function' ? new AbortController() : null;
    const timer = controller ? setTimeout(() => controller.abort(), left) : null;
    let response;
    let body = {};
    try {
      response = await this.#fetch(url, {
        method,
        cache: 'no-store',
        credentials: 'omit',
        headers: { Authorization: `Bearer ${token}` },
        signal: controller ? controller.signal : undefined,
      });
      try {
        const parsed = await response.json();
        if (parsed && typeof parsed === 'object') body = parsed;
      } catch {
        // not JSON: the status says enough
      }
    } catch (error) {
      const timedOut = controller && controller.signal.aborted;
      throw new Error(timedOut
        ? `agentwire: no answer to ${what} in time`
        : `agentwire: ${what} failed: ${error && error.message}`);
    } finally {
      clearTimeout(timer);
    }
    const retryAfter = Number(response.headers && response.headers.get('retry-after'));
    return { response, body, retryAfterMs: retryAfter > 0 ? Math.min(retryAfter, 300) * 1000 : 0 };
  }

  async #cancelOverHttp(runId, deadline) {
    if (typeof this.#fetch !== 'function') {
      throw new Error('agentwire: cancel needs an open WebSocket or fetch');
    }
    const url = this.#apiUrl(`runs/${encodeURIComponent(runId)}/cancel`);
    const token = await this.#resolveToken();
    const { response, body } = await this.#httpRequest('POST', url, token, deadline, `the cancel of run ${runId}`);
    const error = typeof body.error === 'string' ? body.error : '';
    switch (response.status) {
      case 202:
        return { result: 'requested', via: 'http' };
      case 404:
        // A gateway without the endpoint answers 404 too, with another error (or none).
        if (error === 'unknown_run') return { result: 'unknown_run', via: 'http' };
        break;
      case 409: {
        const answer = { result: 'run_ended', via: 'http' };
        if (body.end && typeof body.end === 'object') answer.end = body.end;
        return answer;
      }
      case 400:
        return { result: 'bad_run_id', via: 'http' };
      case 503:
        return { result: 'control_unavailable', via: 'http' };
      default:
        break;
    }
    throw Object.assign(
      new Error(`agentwire: cancel of run ${runId}: HTTP ${response.status}${error ? ` ${error}` : ''}` +
        `${body.message ? `: ${body.message}` : ''}`),
      { status: response.status, error },
    );
  }

  async #handleClose(connection, event, href, sentCursor, generation, probeToken) {
    const info = { code: event.code || 0, reason: event.reason || connection.error || '' };
    if (connection.resetting) {
      if (sentCursor && sentCursor !== 'earliest') {
        this.#setState(ClientState.RECONNECTING, { ...info, attempt: 0, delayMs: 0, retryAt: Date.now() });
        this.#reconnect(0);
      } else {
        this.#scheduleReconnect(info);  // reset without a cursor to blame: do not spin
      }
      return;
    }
    if (connection.opened) {
      if (info.code === 1000 || info.code === 1009) {
        // The gateway ended the stream on purpose (1009: this client sent an oversized frame):
        // per the protocol, reconnecting would not help.
        this.#stop(ClientState.CLOSED, info);
        return;
      }
      if (info.code === kCloseTokenExpired && typeof this.#token === 'function') {
        // The token ran out (no refresh in time): a fresh one and the cursor, at once.
        this.#setState(ClientState.RECONNECTING, { ...info, attempt: 0, delayMs: 0, retryAt: Date.now() });
        this.#reconnect(0);
        return;
      }
      if ((info.code === kCloseTokenExpired || info.code === kCloseRefreshRefused) &&
          typeof this.#token !== 'function') {
        // A fixed token cannot be renewed: reconnecting would only get 401.
        this.#stop(ClientState.UNAUTHORIZED, info);
        return;
      }
      if (Date.now() - connection.openedAt >= this.#stableAfterMs) this.#attempt = 0;
      this.#scheduleReconnect(info);
      return;
    }

    // The handshake failed: a refused upgrade (401/403/400/429) or the gateway is unreachable.
    const rejection = await this.#rejectionOf(connection.error, href, probeToken);
    if (generation !== this.#generation) return;
    const status = rejection.status;
    const details = { ...info, ...rejection };
    if (status === 401) {
      this.#stop(ClientState.UNAUTHORIZED, details);
    } else if (status === 400 && sentCursor && sentCursor !== 'earliest') {
      // A stored cursor this gateway cannot read (corrupt, or from an older format): same as
      // a reset, since what follows it is unknown.
      this.#counts.resets++;
      this.#forgetHistory();
      this.#call(this.#onReset, { reason: 'bad_cursor' });
      this.#setState(ClientState.RECONNECTING, { ...details, attempt: 0, delayMs: 0, retryAt: Date.now() });
      this.#reconnect(0);
    } else if (status === 400 || status === 403 || status === 404) {
      this.#stop(ClientState.CLOSED, details);
    } else {
      this.#scheduleReconnect(details);
    }
  }

  // Learns why an upgrade failed: from the WebSocket library's error text when it has one
  // (Node `ws`), else by asking the same URL over plain HTTP, which the gateway answers with
  // the status and JSON body it would give the upgrade. Only the answers that mean "retrying
  // cannot help" are taken from the probe (401, 403, 400 about the cursor), and a full replica's
  // 503 for its Retry-After; anything else (426 for a request without Upgrade, other 5xx, no
  // answer) means retry.
  async #rejectionOf(errorText, href, probeToken) {
    const status = statusFromError(errorText);
    if (status) return { status };
    const probed = await this.#probe(href, probeToken);
    const trusted =
      probed.status === 401 ||
      probed.status === 403 ||
      probed.status === 503 ||
      (probed.status === 400 && /cursor/i.test(`${probed.error} ${probed.message}`));
    return trusted ? probed : { status: 0 };
  }

  async #probe(href, probeToken) {
    if (typeof this.#fetch !== 'function') return { status: 0 };
    try {
      const response = await this.#fetch(href.replace(/^ws/, 'http'), {
        cache: 'no-store',
        credentials: 'omit',
        headers: probeToken ? { Authorization: `Bearer ${probeToken}` } : undefined,
        signal: typeof AbortSignal.timeout === 'function' ? AbortSignal.timeout(5000) : undefined,
      });
      const result = { status: response.status, error: '', message: '', retryAfterMs: 0 };
      const retryAfter = Number(response.headers && response.headers.get('retry-after'));
      if (retryAfter > 0) result.retryAfterMs = Math.min(retryAfter, 300) * 1000;
      try {
        const body = await response.json();
        if (body && typeof body === 'object') {
          result.error = String(body.error || '');
          result.message = String(body.message || '');
        }
      } catch {
        // not JSON
      }
      return result;
    } catch {
      return { status: 0 };  // unreachable: retry
    }
  }

  #scheduleReconnect(info) {
    let delayMs = backoffDelay(this.#attempt, this.#baseDelayMs, this.#maxDelayMs, this.#random);
    if (info.retryAfterMs > 0) {
      // A full replica (503) said when to come back: not before, plus jitter, so the clients it
      // turned away do not all return in the same second.
      delayMs = Math.max(delayMs, info.retryAfterMs + Math.floor(this.#random() * info.retryAfterMs));
    }
    this.#attempt++;
    this.#setState(ClientState.RECONNECTING, {
      ...info,
      attempt: this.#attempt,
      delayMs,
      retryAt: Date.now() + delayMs,
    });
    this.#reconnect(delayMs);
  }

  #reconnect(delayMs) {
    clearTimeout(this.#timer);
    const generation = this.#generation;
    this.#timer = setTimeout(() => {
      this.#timer = null;
      if (generation !== this.#generation || this.#socket) return;
      this.#open();
    }, delayMs);
  }
}

globalThis.AgentwireClient = AgentwireClient;

export default AgentwireClient;
