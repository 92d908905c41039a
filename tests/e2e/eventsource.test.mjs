// Issue 10: a browser page's plain EventSource (no library) against real agentwire processes.
// The page talks to a small load balancer (this test's HTTP proxy) in front of two gateway
// replicas. Mid-run the replica serving the page is drained (SIGTERM): its response ends, the
// browser's EventSource reconnects by itself to the same URL with Last-Event-ID, and the load
// balancer sends it to the other replica. The page must show every one of its user's events
// exactly once, in order, and none of another user's.
import assert from 'node:assert/strict';
import http from 'node:http';
import { after, before, test } from 'node:test';

import { chromium } from 'playwright-core';

import { emit, mintToken, runEvents, startBroker, startGateway, tempDir } from './support/agentwire.mjs';
import { waitFor } from './support/wait.mjs';

const kChromiumArgs = ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking'];

let broker;
const gateways = [];
let browser;
let balancer;

// A load balancer that streams responses unbuffered and sends every request to the first
// replica still up, like a health-checked pool. It also serves the test page, so the page and
// /v1/events share an origin (no CORS involved) the way a same-site deployment would.
function startBalancer(page) {
  const upstreams = [];
  const served = [];  // [{port, lastEventId}] per /v1/events request
  const server = http.createServer((request, response) => {
    if (request.url === '/' || request.url.startsWith('/page')) {
      response.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
      response.end(page);
      return;
    }
    const upstream = upstreams.find((u) => u.up);
    if (!upstream) {
      response.writeHead(503).end();
      return;
    }
    served.push({ port: upstream.port, lastEventId: request.headers['last-event-id'] || '' });
    const forward = http.request(
      { host: '127.0.0.1', port: upstream.port, method: request.method, path: request.url, headers: request.headers },
      (reply) => {
        response.writeHead(reply.statusCode, reply.headers);
        response.flushHeaders();
        reply.on('data', (chunk) => response.write(chunk));
        reply.on('end', () => response.end());
        reply.on('error', () => response.destroy());
      },
    );
    forward.on('error', () => response.destroy());
    request.on('close', () => forward.destroy());
    forward.end();
  });
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => {
      resolve({ server, upstreams, served, url: `http://127.0.0.1:${server.address().port}` });
    });
  });
}

// The page: a plain EventSource, every event kept with the id EventSource saw.
const kPage = `<!doctype html><meta charset="utf-8"><title>EventSource</title>
<script>
  window.received = [];
  window.opens = 0;
  window.readies = [];
  const token = new URLSearchParams(location.search).get('token');
  const source = new EventSource('/v1/events?cursor=earliest&access_token=' + encodeURIComponent(token));
  source.onopen = () => { window.opens++; };
  source.addEventListener('event', (e) => {
    const event = JSON.parse(e.data);
    window.received.push({ id: event.event_id, user: event.user_id, seq: event.run_seq, lastEventId: e.lastEventId });
  });
  source.addEventListener('ready', (e) => {
    window.readies.push({ cursor: JSON.parse(e.data).cursor, lastEventId: e.lastEventId });
  });
</script>`;

before(async () => {
  broker = await startBroker(await tempDir('eventsource'));
  gateways.push(await startGateway(broker.bootstrap));
  gateways.push(await startGateway(broker.bootstrap));
  balancer = await startBalancer(kPage);
  for (const gateway of gateways) balancer.upstreams.push({ port: gateway.port, up: true });
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM_PATH || '/usr/bin/chromium',
    headless: true,
    args: kChromiumArgs,
  });
});

after(async () => {
  if (browser) await browser.close();
  if (balancer) balancer.server.close();
  for (const gateway of gateways) await gateway.kill();
  if (broker) await broker.kill();
});

test('a plain EventSource survives a drained replica: every event once, in order', async () => {
  const token = await mintToken('frank');
  const page = await browser.newPage();
  const errors = [];
  page.on('pageerror', (error) => errors.push(error.message));
  await page.goto(`${balancer.url}/page?token=${encodeURIComponent(token)}`);
  await waitFor('the stream open and ready', async () =>
    (await page.evaluate(() => window.readies.length)) === 1);

  const frank = [
    ...runEvents({ user: 'frank', threadId: 't-f', runId: 'es-r1', prefix: 'es-f1', count: 30 }),
    ...runEvents({ user: 'frank', threadId: 't-f', runId: 'es-r2', prefix: 'es-f2', count: 30 }),
  ];
  const grace = runEvents({ user: 'grace', threadId: 't-g', runId: 'es-rg', prefix: 'es-g', count: 30 });
  const stream = frank.flatMap((event, i) => (i < grace.length ? [event, grace[i]] : [event]));
  // About 6 s of run, so the drain lands in the middle of it.
  const publishing = emit(broker.bootstrap, stream, { pauseEvery: 3, pauseMs: 200 });

  await waitFor('a third of the run on the first replica', async () =>
    (await page.evaluate(() => window.received.length)) >= 20, { timeoutMs: 60000 });
  // The load balancer stops sending new requests to replica A, and A drains (SIGTERM): it ends
  // its responses and exits.
  balancer.upstreams[0].up = false;
  await gateways[0].kill('SIGTERM');
  await publishing;
  await waitFor(`all ${frank.length} of frank's events`, async () =>
    (await page.evaluate(() => window.received.length)) >= frank.length, { timeoutMs: 60000 });
  await new Promise((r) => setTimeout(r, 500));  // anything extra (a duplicate) shows up now

  const received = await page.evaluate(() => window.received);
  const opens = await page.evaluate(() => window.opens);
  assert.deepEqual(received.map((e) => e.id), frank.map((e) => e.event_id), 'every event once, in order');
  assert.ok(received.every((e) => e.user === 'frank'), "none of another user's events");
  assert.ok(received.every((e) => /^[A-Za-z0-9_-]+$/.test(e.lastEventId)), 'every event carries its cursor as id');
  assert.ok(opens >= 2, `EventSource reconnected by itself (${opens} opens)`);
  const second = balancer.served.filter((s) => s.port === gateways[1].port);
  assert.ok(second.length >= 1, 'the reconnect went to the other replica');
  const resumed = second[0];
  assert.ok(resumed.lastEventId, 'the reconnect carried Last-Event-ID');
  assert.ok(received.some((e) => e.lastEventId === resumed.lastEventId), 'from the last event the page had');
  assert.deepEqual(errors, []);
  await page.close();
});
