// A stand-in gateway for testing the JavaScript client's own logic (dedupe, reset, 401, bad
// cursor, backoff, Stop, thread pages) with situations the real gateway never produces on purpose, e.g. a
// duplicated event or answers to Stops out of order. It speaks the frames of docs/protocol.md over real WebSockets and serves
// gateway/web/ like the real one. Tests of the product itself drive the real binary.
//
// Cursors here are "c<position in the log>"; a token is any JWT-shaped string whose payload
// has a `sub` (the signature is not checked) unless it is listed in `rejected`.
import { readFile } from 'node:fs/promises';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { WebSocketServer } from 'ws';

const kWebDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../gateway/web');
const kTypes = { '.html': 'text/html', '.js': 'text/javascript', '.css': 'text/css', '.svg': 'image/svg+xml' };

export function fakeToken(sub) {
  const encode = (value) => Buffer.from(JSON.stringify(value)).toString('base64url');
  return `${encode({ alg: 'none', typ: 'JWT' })}.${encode({ sub })}.fake`;
}

function subjectOf(token) {
  try {
    return JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString()).sub || '';
  } catch {
    return '';
  }
}

export class FakeGateway {
  constructor() {
    /** Every published event, in order; a cursor is a position in it. */
    this.log = [];
    /** Positions below this are "no longer retained": resuming before it gets `reset`. */
    this.retainedFrom = 0;
    /** When set, every resume from a cursor (not `earliest`) gets `reset`. */
    this.resetCursors = false;
    /** When true, every upgrade gets 503 with Retry-After (a replica at --max-connections). */
    this.full = false;
    this.fullRefusals = 0;
    /** How each accepted upgrade carried its token: 'protocol' or 'query'. */
    this.transports = [];
    /** Tokens answered with 401. */
    this.rejected = new Set();
    /** When > 0, the next that many event frames are each sent twice. */
    this.duplicateNext = 0;
    this.sessions = new Set();
    this.upgrades = [];  // the query of every accepted upgrade, for assertions
    /** Every Stop received: {via: 'frame'|'http', user, runId, authorization}. */
    this.cancels = [];
    /**
     * Decides a Stop's answer: ({user, runId, via}) => {result, end?} or a Promise of it
     * (a Promise that never settles: no answer). Default: answerFromLog.
     */
    this.cancelAnswer = null;
    /** The query of every GET /v1/threads/{thread_id}/events, with `thread_id` and `status`. */
    this.threadRequests = [];
    /** When > 0, the next that many thread pages get 503 history_unavailable (Retry-After: 1). */
    this.historyUnavailable = 0;
    /** Called with the page after it was read and before it is sent (e.g. to publish meanwhile). */
    this.onThreadPage = null;
    /** The `missing` of every thread page. */
    this.threadMissing = [];
    this.server = null;
    this.port = 0;
  }

  async start(port = 0) {
    const wss = new WebSocketServer({ noServer: true });
    this.server = http.createServer((req, res) => this.#http(req, res));
    this.server.on('upgrade', (req, socket, head) => {
      const verdict = this.#check(req);
      if (verdict.status !== 101) {
        const retryAfter = verdict.retryAfter ? `Retry-After: ${verdict.retryAfter}\r\n` : '';
        socket.end(
          `HTTP/1.1 ${verdict.status} Rejected\r\nContent-Type: application/json\r\n${retryAfter}` +
            `Connection: close\r\nContent-Length: ${Buffer.byteLength(verdict.body)}\r\n\r\n${verdict.body}`,
        );
        return;
      }
      wss.handleUpgrade(req, socket, head, (ws) => this.#session(ws, verdict));
    });
    await new Promise((resolve) => this.server.listen(port, '127.0.0.1', resolve));
    this.port = this.server.address().port;
    return this;
  }

  get url() {
    return `ws://127.0.0.1:${this.port}/v1/events`;
  }

  async stop() {
    for (const session of this.sessions) session.ws.terminate();
    this.sessions.clear();
    if (this.server) {
      this.server.closeAllConnections();
      await new Promise((resolve) => this.server.close(resolve));
    }
    this.server = null;
  }

  /** Closes every session with `code` (1012 = draining, 1013 = too slow). */
  closeAll(code, reason = '') {
    for (const session of this.sessions) session.ws.close(code, reason);
  }

  publish(event) {
    this.log.push(event);
    const position = this.log.length - 1;
    for (const session of this.sessions) {
      if (session.live) this.#send(session, position);
    }
  }

  /** Sends `frame` (an object) to every open session, e.g. a cancel_result nobody asked for. */
  sendToAll(frame) {
    for (const session of this.sessions) session.ws.send(JSON.stringify(frame));
  }

  /**
   * The answer docs/runs.md gives, from what the log holds: unknown_run when the user has no
   * event of the run, run_ended (with `end`) after its first terminal event, else requested.
   */
  answerFromLog(user, runId) {
    if (typeof runId !== 'string' || !runId || Buffer.byteLength(runId) > 256 || /[\u0000-\u001f\u007f]/.test(runId)) {
      return { result: 'bad_run_id' };
    }
    let known = false;
    for (let position = 0; position < this.log.length; position++) {
      const event = this.log[position];
      if (event.user_id !== user || event.run_id !== runId) continue;
      known = true;
      if (event.type === 'agent_completed' || event.type === 'agent_failed') {
        const end = { type: event.type, cursor: `c${position + 1}` };
        if (event.type === 'agent_failed') end.error_code = event.agent_failed?.error_code || '';
        return { result: 'run_ended', end };
      }
    }
    return { result: known ? 'requested' : 'unknown_run' };
  }

  async #answerCancel(user, runId, via) {
    const decide = this.cancelAnswer || (({ user: u, runId: r }) => this.answerFromLog(u, r));
    return decide({ user, runId, via });
  }

  #tokenOf(req, url) {
    const offered = (req.headers['sec-websocket-protocol'] || '').split(',').map((p) => p.trim());
    const marker = offered.indexOf('agentwire.bearer');
    const fromProtocol = marker >= 0 && marker + 1 < offered.length ? offered[marker + 1] : '';
    const fromHeader = (req.headers.authorization || '').replace(/^Bearer\s+/i, '');
    const token = fromHeader || fromProtocol || url.searchParams.get('access_token') || '';
    return { token, transport: fromHeader ? 'header' : fromProtocol ? 'protocol' : 'query' };
  }

  #check(req) {
    const url = new URL(req.url, 'http://x');
    const reject = (status, error, message) => ({ status, body: JSON.stringify({ error, message }) });
    if (url.pathname !== '/v1/events') return reject(404, 'not_found', 'no such endpoint');
    if (this.full) {
      this.fullRefusals++;
      return { ...reject(503, 'replica_full', 'at --max-connections'), retryAfter: 1 };
    }
    // The gateway's order: Authorization header, Sec-WebSocket-Protocol pair, query.
    const { token, transport } = this.#tokenOf(req, url);
    const user = subjectOf(token);
    if (!user || this.rejected.has(token)) return reject(401, 'unauthorized', 'invalid token');
    const cursor = url.searchParams.get('cursor');
    let from = this.log.length;
    if (cursor === 'earliest') from = this.retainedFrom;
    else if (cursor !== null) {
      if (!/^c\d+$/.test(cursor)) return reject(400, 'bad_cursor', 'malformed cursor');
      from = Number(cursor.slice(1));
    }
    return {
      status: 101,
      transport,
      user,
      from,
      threadId: url.searchParams.get('thread_id') || '',
      runId: url.searchParams.get('run_id') || '',
      query: Object.fromEntries(url.searchParams),
    };
  }

  #matches(session, event) {
    return (
      event.user_id === session.user &&
      (!session.threadId || event.thread_id === session.threadId) &&
      (!session.runId || event.run_id === session.runId)
    );
  }

  #send(session, position) {
    const event = this.log[position];
    if (!this.#matches(session, event)) return 0;
    const frame = JSON.stringify({ type: 'event', cursor: `c${position + 1}`, event });
    session.ws.send(frame);
    if (this.duplicateNext > 0) {
      this.duplicateNext--;
      session.ws.send(frame);
    }
    return 1;
  }

  #session(ws, verdict) {
    this.upgrades.push(verdict.query);
    this.transports.push(verdict.transport);
    const session = { ws, user: verdict.user, threadId: verdict.threadId, runId: verdict.runId, live: false };
    this.sessions.add(session);
    ws.on('close', () => this.sessions.delete(session));
    ws.on('error', () => {});
    ws.on('message', async (data) => {
      let frame;
      try {
        frame = JSON.parse(String(data));
      } catch {
        return;
      }
      if (!frame || frame.type !== 'cancel') return;  // like the gateway: other frames ignored
      const runId = typeof frame.run_id === 'string' ? frame.run_id : '';
      this.cancels.push({ via: 'frame', user: session.user, runId, authorization: '' });
      const answer = typeof frame.run_id === 'string'
        ? await this.#answerCancel(session.user, runId, 'frame')
        : { result: 'bad_run_id' };
      if (ws.readyState === 1) ws.send(JSON.stringify({ type: 'cancel_result', run_id: runId, ...answer }));
    });
    const tooOld = this.resetCursors && verdict.query.cursor && verdict.query.cursor !== 'earliest';
    let replayed = 0;
    if (tooOld || verdict.from < this.retainedFrom || verdict.from > this.log.length) {
      // Like the real gateway: reset, then the connection goes on live.
      ws.send(JSON.stringify({ type: 'reset', reason: 'history_unavailable' }));
      verdict.from = this.log.length;
    }
    for (let position = verdict.from; position < this.log.length; position++) {
      replayed += this.#send(session, position);
    }
    ws.send(JSON.stringify({ type: 'ready', cursor: `c${this.log.length}`, replayed }));
    session.live = true;
  }

  // POST /v1/runs/{run_id}/cancel: the statuses of docs/runs.md.
  async #httpCancel(req, res, encodedRunId) {
    const url = new URL(req.url, 'http://x');
    const reply = (status, body) => {
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify(body));
    };
    if (req.method !== 'POST') return reply(405, { error: 'method_not_allowed', message: 'POST' });
    const { token } = this.#tokenOf(req, url);
    const user = subjectOf(token);
    if (!user || this.rejected.has(token)) return reply(401, { error: 'unauthorized', message: 'invalid token' });
    let runId;
    try {
      runId = decodeURIComponent(encodedRunId);
    } catch {
      return reply(400, { error: 'bad_run_id', message: 'not percent-encoded' });
    }
    this.cancels.push({ via: 'http', user, runId, authorization: req.headers.authorization || '' });
    const answer = await this.#answerCancel(user, runId, 'http');
    switch (answer.result) {
      case 'requested':
        return reply(202, { status: 'cancel_requested', run_id: runId });
      case 'run_ended':
        return reply(409, { error: 'run_ended', message: 'the run has ended', end: answer.end });
      case 'unknown_run':
        return reply(404, { error: 'unknown_run', message: 'no such run' });
      case 'bad_run_id':
        return reply(400, { error: 'bad_run_id', message: 'bad run id' });
      case 'control_unavailable':
        return reply(503, { error: 'control_unavailable', message: 'could not publish' });
      default:
        return reply(answer.status || 500, answer.body || {});
    }
  }

  // GET /v1/threads/{thread_id}/events: the contract of the real endpoint over this log, which
  // serves every position (the fake's "archive" holds what retention removed).
  async #httpThread(req, res, encodedThreadId) {
    const url = new URL(req.url, 'http://x');
    const query = Object.fromEntries(url.searchParams);
    const reply = (status, body, headers = {}) => {
      let threadId = '';
      try {
        threadId = decodeURIComponent(encodedThreadId);
      } catch {
        // recorded as ""
      }
      this.threadRequests.push({ ...query, thread_id: threadId, status });
      res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store', ...headers });
      res.end(JSON.stringify(body));
    };
    if (req.method !== 'GET') return reply(405, { error: 'method_not_allowed', message: 'GET' });
    const { token } = this.#tokenOf(req, url);
    const user = subjectOf(token);
    if (!user || this.rejected.has(token)) return reply(401, { error: 'unauthorized', message: 'invalid token' });
    let threadId;
    try {
      threadId = decodeURIComponent(encodedThreadId);
    } catch {
      return reply(400, { error: 'bad_thread_id', message: 'not percent-encoded' });
    }
    const limit = query.limit === undefined ? 100 : Number(query.limit);
    if (!Number.isInteger(limit) || limit < 1 || limit > 1000 || (query.limit !== undefined && !/^\d+$/.test(query.limit))) {
      return reply(400, { error: 'bad_limit', message: 'limit: 1..1000' });
    }
    if (query.before !== undefined && query.after !== undefined) {
      return reply(400, { error: 'bad_request', message: 'before or after, not both' });
    }
    const cursor = query.before ?? query.after;
    if (cursor !== undefined && !/^c\d+$/.test(cursor)) return reply(400, { error: 'bad_cursor', message: 'malformed cursor' });
    if (this.historyUnavailable > 0) {
      this.historyUnavailable--;
      return reply(503, { error: 'history_unavailable', message: 'archive down' }, { 'retry-after': '1' });
    }
    const end = this.log.length;
    const positions = [];
    for (let position = 0; position < end; position++) {
      const event = this.log[position];
      if (event.user_id === user && event.thread_id === threadId) positions.push(position);
    }
    let page;
    if (query.after !== undefined) {
      const from = Number(cursor.slice(1));  // the event at from - 1 was the last one seen
      const later = positions.filter((position) => position >= from);
      page = later.slice(0, limit);
    } else {
      const below = query.before !== undefined ? Number(cursor.slice(1)) - 1 : end;
      const older = positions.filter((position) => position < below);
      page = older.slice(Math.max(0, older.length - limit));
    }
    const first = page.length ? page[0] : (query.after !== undefined ? Number(cursor.slice(1)) : end);
    const last = page.length ? page.at(-1) : first - 1;
    const hasMoreBefore = positions.some((position) => position < first);
    const hasMoreAfter = positions.some((position) => position > last);
    const body = {
      thread_id: threadId,
      events: page.map((position) => ({ type: 'event', cursor: `c${position + 1}`, event: this.log[position] })),
      has_more_before: hasMoreBefore,
      has_more_after: hasMoreAfter,
      end_cursor: hasMoreAfter ? `c${last + 1}` : `c${end}`,
      missing: this.threadMissing,
    };
    if (this.onThreadPage) await this.onThreadPage({ threadId, query, body });
    return reply(200, body);
  }

  async #http(req, res) {
    const url = new URL(req.url, 'http://x');
    const cancel = /^\/v1\/runs\/([^/]+)\/cancel$/.exec(url.pathname);
    if (cancel) {
      await this.#httpCancel(req, res, cancel[1]);
      return;
    }
    const thread = /^\/v1\/threads\/([^/]+)\/events$/.exec(url.pathname);
    if (thread) {
      await this.#httpThread(req, res, thread[1]);
      return;
    }
    if (url.pathname === '/v1/events') {
      const verdict = this.#check(req);
      const status = verdict.status === 101 ? 426 : verdict.status;
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(verdict.body || JSON.stringify({ error: 'upgrade_required', message: 'WebSocket only' }));
      return;
    }
    const name = url.pathname === '/' ? 'index.html' : url.pathname.slice(1);
    if (!/^[\w.-]+$/.test(name)) {
      res.writeHead(404).end();
      return;
    }
    try {
      const body = await readFile(path.join(kWebDir, name));
      res.writeHead(200, { 'content-type': kTypes[path.extname(name)] || 'application/octet-stream' });
      res.end(body);
    } catch {
      res.writeHead(404).end();
    }
  }
}
