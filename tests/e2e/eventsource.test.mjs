// Issue 10: a browser page's plain EventSource (no library) against real agentwire processes.
//
// The page (served from its own origin) opens an EventSource on a small load balancer (this
// test's streaming HTTP proxy) in front of two gateway replicas, A and B, which allow the page's
// origin (--allowed-origins), so the stream is a real cross-origin (CORS) EventSource. Mid-run
// replica A is drained (SIGTERM): it ends its responses and exits; the browser's EventSource
// reconnects by itself to the same URL with Last-Event-ID, and the load balancer, which fails
// over on a refused connection or a 503 (like nginx's proxy_next_upstream), sends it to B. (A
// replica still draining when the reconnect arrives answers an EventSource with a 200 stream
// of one `refused` event instead of a 503, and EventSource retries after `retry:`; A has exited
// by then here.)
// The page must show every one of its user's events exactly once, in order, and none of
// another user's, although that user's events sit in the same Kafka partition.
//
// To make the resume's catch-up deterministic, the load balancer holds the reconnect until the
// events published around the drain are all in Kafka: B then replays exactly the ones the page
// has not seen (its `ready` says how many), and the run's last events arrive live on B.
import assert from 'node:assert/strict';
import http from 'node:http';
import { after, before, test } from 'node:test';


import {
  emit,
  launchChromium,
  mintToken,
  runEvents,
  startBroker,
  startGateway,
  tempDir,
} from './support/agentwire.mjs';
import { waitFor } from './support/wait.mjs';

const kPartitions = 12;  // `agentwire broker`'s default topic

let broker;
let site;
let balancer;
const gateways = [];  // [A, B]
let browser;

// Kafka's murmur2 partitioner (the gateway's producers::PartitionForKey), to pick another user
// whose events share frank's partition: then only the gateway's per-user filter keeps them out.
function murmur2(text) {
  const data = Buffer.from(text, 'utf8');
  const m = 0x5bd1e995;
  let h = (0x9747b28c ^ data.length) >>> 0;
  const blocks = data.length >> 2;
  for (let i = 0; i < blocks; i++) {
    let k = data.readUInt32LE(i * 4);
    k = Math.imul(k, m);
    k ^= k >>> 24;
    k = Math.imul(k, m);
    h = Math.imul(h, m) ^ k;
  }
  const tail = blocks * 4;
  switch (data.length & 3) {
    case 3: h ^= data[tail + 2] << 16;  // falls through
    case 2: h ^= data[tail + 1] << 8;  // falls through
    case 1: h ^= data[tail]; h = Math.imul(h, m);
  }
  h ^= h >>> 13;
  h = Math.imul(h, m);
  h ^= h >>> 15;
  return h >>> 0;
}
const partitionOf = (user) => (murmur2(user) & 0x7fffffff) % kPartitions;

// A cursor (core/include/agentwire/core/cursor.hpp): base64url of [version u8][epoch u32]
// [topic hash u32][partition count u32][partition u32][next offset i64], big-endian.
function decodeCursor(text) {
  const bytes = Buffer.from(text, 'base64url');
  assert.equal(bytes.length, 25, `a cursor is 25 bytes: ${text}`);
  return { partition: bytes.readUInt32BE(13), next: Number(bytes.readBigInt64BE(17)) };
}

function listen(server) {
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server.address().port)));
}

// The page: a plain EventSource on the load balancer's /v1/events, logging every message with
// the connection (count of `open`s) it came on and the id EventSource saw.
const kPage = `<!doctype html><meta charset="utf-8"><title>EventSource</title>
<script>
  const params = new URLSearchParams(location.search);
  window.log = [];
  window.opens = 0;
  window.errors = [];
  const source = new EventSource(params.get('stream') + '/v1/events?cursor=earliest&access_token=' +
                                 encodeURIComponent(params.get('token')));
  source.onopen = () => { window.opens++; };
  source.onerror = () => { window.errors.push({ conn: window.opens, readyState: source.readyState }); };
  source.onmessage = (e) => { window.log.push({ conn: window.opens, kind: 'message', data: e.data }); };
  source.addEventListener('event', (e) => {
    const event = JSON.parse(e.data);
    window.log.push({ conn: window.opens, kind: 'event', id: event.event_id, user: event.user_id,
                      lastEventId: e.lastEventId, origin: e.origin });
  });
  source.addEventListener('ready', (e) => {
    const ready = JSON.parse(e.data);
    window.log.push({ conn: window.opens, kind: 'ready', cursor: ready.cursor, replayed: ready.replayed,
                      lastEventId: e.lastEventId });
  });
  source.addEventListener('reset', (e) => {
    window.log.push({ conn: window.opens, kind: 'reset', reason: JSON.parse(e.data).reason });
  });
</script>`;

// The page's own origin (not the load balancer's), so the EventSource is cross-origin.
async function startSite() {
  const server = http.createServer((request, response) => {
    if (!request.url.startsWith('/page')) {
      response.writeHead(404).end();
      return;
    }
    response.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    response.end(kPage);
  });
  const port = await listen(server);
  return { server, origin: `http://127.0.0.1:${port}` };
}

// A load balancer for /v1/events: streams responses unbuffered, sends a request to the first
// upstream not known to be down, and fails over to the next on a refused connection or a 503
// (a draining replica) before any byte went to the client (GETs have no body: safe to retry).
// `hold()` parks new requests (they still count in `served`) until `release()`.
async function startBalancer() {
  const upstreams = [];  // {name, port, down}
  const served = [];  // per request: {lastEventId, origin, tried, upstream, status, allowOrigin, held}
  let gate = null;
  let open = null;
  const sockets = new Set();

  function forward(request, response, entry) {
    const upstream = upstreams.find((u) => !u.down && !entry.tried.includes(u.name));
    if (!upstream) {
      response.writeHead(502).end();
      return;
    }
    entry.tried.push(upstream.name);
    const failOver = () => {
      upstream.down = true;
      forward(request, response, entry);
    };
    const out = http.request(
      { host: '127.0.0.1', port: upstream.port, method: request.method, path: request.url,
        headers: request.headers, agent: false },
      (reply) => {
        if (reply.statusCode === 503) {
          reply.resume();
          failOver();
          return;
        }
        entry.upstream = upstream.name;
        entry.status = reply.statusCode;
        entry.allowOrigin = reply.headers['access-control-allow-origin'] || '';
        response.writeHead(reply.statusCode, reply.headers);
        response.flushHeaders();
        reply.on('data', (chunk) => response.write(chunk));
        reply.on('end', () => response.end());
        reply.on('error', () => response.destroy());
        reply.on('aborted', () => response.destroy());
      },
    );
    out.on('error', () => {
      if (!entry.upstream) failOver();
      else response.destroy();
    });
    response.on('close', () => out.destroy());
    out.end();
  }

  const server = http.createServer(async (request, response) => {
    if (!request.url.startsWith('/v1/events')) {
      response.writeHead(404).end();
      return;
    }
    const entry = {
      lastEventId: request.headers['last-event-id'] || '',
      origin: request.headers.origin || '',
      tried: [],
      upstream: '',
      status: 0,
      allowOrigin: '',
      held: Boolean(gate),
    };
    served.push(entry);
    if (gate) await gate;
    if (response.destroyed) return;
    forward(request, response, entry);
  });
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  const port = await listen(server);
  return {
    upstreams,
    served,
    url: `http://127.0.0.1:${port}`,
    hold() {
      gate = new Promise((resolve) => { open = resolve; });
    },
    release() {
      gate = null;
      if (open) open();
    },
    close() {
      for (const socket of sockets) socket.destroy();
      server.close();
    },
  };
}

async function metrics(gateway) {
  const text = await (await fetch(`${gateway.url}/metrics`)).text();
  const value = (name) => {
    const line = text.split('\n').find((l) => l.startsWith(`${name} `));
    return line === undefined ? undefined : Number(line.split(' ')[1]);
  };
  return {
    connections: value('agentwire_gateway_connections'),
    connectionsTotal: value('agentwire_gateway_connections_total'),
    eventsDelivered: value('agentwire_gateway_events_delivered_total'),
  };
}

before(async () => {
  broker = await startBroker(await tempDir('eventsource'));
  site = await startSite();
  balancer = await startBalancer();
  for (const name of ['A', 'B']) {
    const gateway = await startGateway(broker.bootstrap, 0, ['--allowed-origins', site.origin]);
    gateways.push(gateway);
    balancer.upstreams.push({ name, port: gateway.port, down: false });
  }
  browser = await launchChromium();
});

after(async () => {
  if (browser) await browser.close();
  if (balancer) balancer.close();
  if (site) site.server.close();
  for (const gateway of gateways) await gateway.kill();
  if (broker) await broker.kill();
});

test('a plain EventSource survives a drained replica: every event once, in order', async () => {
  const [A, B] = gateways;
  const frankPartition = partitionOf('frank');
  let other = '';
  for (let i = 0; !other; i++) if (partitionOf(`grace-${i}`) === frankPartition) other = `grace-${i}`;

  const token = await mintToken('frank');
  const page = await browser.newPage();
  const pageErrors = [];
  page.on('pageerror', (error) => pageErrors.push(error.message));
  await page.goto(`${site.origin}/page?token=${encodeURIComponent(token)}&stream=${encodeURIComponent(balancer.url)}`);
  const log = () => page.evaluate(() => window.log);
  const count = async (kind) => (await log()).filter((m) => m.kind === kind).length;
  await waitFor('the stream open and ready on replica A', async () => (await count('ready')) === 1);

  // One run of 60 events, in three parts: before the drain, around it, after the resume. The
  // other user's events are interleaved one for one, in the same partition.
  const run = runEvents({ user: 'frank', threadId: 't-f', runId: 'es-r1', prefix: 'es-f', count: 60 });
  const noise = runEvents({ user: other, threadId: 't-g', runId: 'es-rg', prefix: 'es-g', count: 60 });
  const part = (from, to) => run.slice(from, to).flatMap((event, i) => [event, noise[from + i]]);

  await emit(broker.bootstrap, part(0, 15));
  await waitFor('the first 15 events on replica A', async () => (await count('event')) >= 15, { timeoutMs: 60000 });
  // About 2 s of run; the drain lands in it.
  const publishing = emit(broker.bootstrap, part(15, 45), { pauseEvery: 4, pauseMs: 150 });
  await waitFor('the run flowing live', async () => (await count('event')) >= 20, { timeoutMs: 60000 });
  balancer.hold();
  const drained = await A.kill('SIGTERM');
  assert.deepEqual(drained, { code: 0, signal: null }, `replica A drains and exits cleanly\n${A.tail()}`);
  await waitFor('EventSource reconnecting by itself', () => balancer.served.length === 2, { timeoutMs: 60000 });
  await publishing;
  const onA = (await log()).filter((m) => m.kind === 'event').length;
  assert.ok(onA >= 20 && onA <= 45, `replica A delivered part of the run (${onA})`);
  balancer.release();
  await waitFor('the resumed stream ready on replica B', async () => (await count('ready')) === 2, { timeoutMs: 60000 });
  await emit(broker.bootstrap, part(45, 60), { pauseEvery: 4, pauseMs: 100 });
  const last = run.at(-1).event_id;
  // Events arrive in log order, so anything repeated or foreign shows up before the last one.
  await waitFor("the run's last event", async () => (await log()).some((m) => m.id === last), { timeoutMs: 60000 });

  const messages = await log();
  const events = messages.filter((m) => m.kind === 'event');
  assert.deepEqual(events.map((e) => e.id), run.map((e) => e.event_id), 'every event once, in order');
  assert.deepEqual(messages.filter((m) => m.kind !== 'event' && m.kind !== 'ready'), [], 'no reset, no unnamed message');
  assert.ok(events.every((e) => e.user === 'frank'), "none of another user's events");
  assert.ok(events.every((e) => e.origin === balancer.url), 'events come from the stream origin');

  // Two connections, one `ready` each; `lastEventId` of a ready is its cursor.
  assert.equal(await page.evaluate(() => window.opens), 2, 'EventSource reconnected by itself, once');
  const readies = messages.filter((m) => m.kind === 'ready');
  assert.deepEqual(readies.map((r) => r.conn), [1, 2]);
  for (const ready of readies) assert.equal(ready.lastEventId, ready.cursor, 'ready: id is the cursor');
  const first = messages.filter((m) => m.conn === 1);
  const second = messages.filter((m) => m.conn === 2);
  assert.equal(first[0].kind, 'ready');
  assert.equal(readies[0].replayed, 0);
  assert.equal(first.length - 1, onA, 'replica A: the events before the drain');
  // B replays exactly what the page had not seen when it reconnected, then goes live.
  const replayed = second.findIndex((m) => m.kind === 'ready');
  assert.equal(readies[1].replayed, replayed, 'ready.replayed counts the events before it');
  assert.equal(replayed, 45 - onA, 'replica B replayed the events the page missed');
  assert.equal(second.length - replayed - 1, 15, 'and delivered the rest live');

  // Cursors: all in frank's partition, strictly increasing, with the other user's records
  // between them (the per-user filter, not the partitioning, kept those out).
  const cursors = events.map((e) => decodeCursor(e.lastEventId));
  assert.ok(cursors.every((c) => c.partition === frankPartition), 'cursors name frank\'s partition');
  assert.ok(cursors.every((c, i) => i === 0 || c.next > cursors[i - 1].next), 'cursors increase');
  assert.ok(cursors.some((c, i) => i > 0 && c.next - cursors[i - 1].next > 1), `${other}'s events shared the partition`);

  // The load balancer saw two requests: the first to A without Last-Event-ID, the reconnect
  // with the id of the last message the page had, failed over to B; both allowed by CORS.
  const [toA, toB] = balancer.served;
  assert.deepEqual([toA.upstream, toA.status, toA.lastEventId, toA.origin, toA.allowOrigin],
                   ['A', 200, '', site.origin, site.origin]);
  assert.deepEqual([toB.upstream, toB.status, toB.origin, toB.allowOrigin, toB.held],
                   ['B', 200, site.origin, site.origin, true]);
  assert.equal(toB.lastEventId, first.at(-1).lastEventId, 'Last-Event-ID: the last id the page saw');

  // Replica B served the rest: one connection, still open, and exactly the events of the
  // second connection (nothing more was sent).
  await waitFor('replica B counting what it delivered', async () =>
    (await metrics(B)).eventsDelivered >= second.length - 1, { timeoutMs: 10000 });
  assert.deepEqual(await metrics(B), { connections: 1, connectionsTotal: 1, eventsDelivered: second.length - 1 });
  assert.deepEqual(pageErrors, []);
  await page.close();
});
