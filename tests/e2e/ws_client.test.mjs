// Interop (issue 5): a Node.js client on the npm `ws` package, driving the real agentwire
// processes: a broker, two gateway replicas, events published by `agentwire emit`. The client
// disconnects mid-stream from one replica and resumes with its last cursor on the other; it
// must see every one of its user's events exactly once, in order, and exactly what a raw
// reader of the same stream sees and what was emitted.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import WebSocket from 'ws';

import { AgentwireClient, ClientState, MemoryStorage } from '../../gateway/web/agentwire-client.js';
import { emit, mintToken, runEvents, startBroker, startGateway, tempDir } from './support/agentwire.mjs';
import { waitFor } from './support/wait.mjs';

let broker;
const gateways = [];

before(async () => {
  broker = await startBroker(await tempDir('ws'));
  gateways.push(await startGateway(broker.bootstrap));
  gateways.push(await startGateway(broker.bootstrap));
});

after(async () => {
  for (const gateway of gateways) await gateway.kill();
  if (broker) await broker.kill();
});

// Every frame of one connection, read with the `ws` API directly (token in the Authorization
// header, as a worker or server would send it), until `ready` plus `expectEvents` events.
function readRaw(wsUrl, token, { cursor = '', expectEvents = 0 } = {}) {
  return new Promise((resolve, reject) => {
    const url = new URL(wsUrl);
    if (cursor) url.searchParams.set('cursor', cursor);
    const socket = new WebSocket(url, { headers: { Authorization: `Bearer ${token}` } });
    const frames = [];
    const timer = setTimeout(() => {
      socket.terminate();
      reject(new Error(`raw read timed out with ${frames.length} frames`));
    }, 60000);
    socket.on('message', (data, isBinary) => {
      assert.equal(isBinary, false, 'frames are text');
      frames.push(JSON.parse(data.toString()));
      const ready = frames.some((frame) => frame.type === 'ready');
      const events = frames.filter((frame) => frame.type === 'event').length;
      if (ready && events >= expectEvents) {
        clearTimeout(timer);
        socket.close();
        resolve(frames);
      }
    });
    socket.on('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
  });
}

test('a ws client resumes on another replica with its cursor: every event once, in order', async (t) => {
  const [first, second] = gateways;
  const aliceToken = await mintToken('alice');
  const alice = [
    ...runEvents({ user: 'alice', threadId: 't-1', runId: 'ws-r1', prefix: 'ws-a1', count: 40 }),
    ...runEvents({ user: 'alice', threadId: 't-2', runId: 'ws-r2', prefix: 'ws-a2', count: 40 }),
  ];
  const bob = runEvents({ user: 'bob', threadId: 't-1', runId: 'ws-rb', prefix: 'ws-b', count: 40 });
  // Interleave the users the way workers publish: alice's order is kept, bob's in between.
  const stream = alice.flatMap((event, i) => (i < bob.length ? [event, bob[i]] : [event]));

  const storage = new MemoryStorage();
  const received = [];
  const kLeaveAfter = 25;
  let onFirst = null;
  const makeClient = (wsUrl) => {
    const client = new AgentwireClient({
      url: wsUrl,
      token: aliceToken,
      WebSocketImpl: WebSocket,
      storage,
      storageKey: 'alice',
      startFrom: 'live',
      onEvent: (event, info) => {
        received.push({ event, info, via: wsUrl });
        // Leave the first replica in the middle of the stream, at a known point.
        if (received.length === kLeaveAfter) onFirst.close();
      },
      onError: (error) => received.push({ error }),
    });
    t.after(() => client.close());
    return client;
  };

  onFirst = makeClient(first.wsUrl);
  onFirst.connect();
  await waitFor('live on the first replica', () => onFirst.state === ClientState.LIVE);

  // Publish slowly so the client is mid-stream when it leaves the first replica.
  const publishing = emit(broker.bootstrap, stream, { pauseEvery: 4, pauseMs: 40 });
  await waitFor('the first replica left', () => onFirst.state === ClientState.CLOSED, { timeoutMs: 60000 });
  assert.equal(received.length, kLeaveAfter);
  const cursorAtDisconnect = onFirst.cursor;
  assert.ok(cursorAtDisconnect, 'the client kept a cursor');
  const countAtDisconnect = received.length;

  const onSecond = makeClient(second.wsUrl);
  onSecond.connect();
  await publishing;
  await waitFor(`all ${alice.length} of alice's events`, () => received.length >= alice.length, { timeoutMs: 60000 });
  // Anything extra (a duplicate, a late replay) would show up now.
  await new Promise((r) => setTimeout(r, 500));

  assert.ok(received.every((entry) => !entry.error), JSON.stringify(received.filter((e) => e.error)));
  const ids = received.map((entry) => entry.event.event_id);
  assert.ok(countAtDisconnect < alice.length, 'the disconnect happened mid-stream');
  assert.ok(received.slice(countAtDisconnect).every((entry) => entry.via === second.wsUrl));
  assert.deepEqual(ids, alice.map((event) => event.event_id), 'every event once, in publish order');
  assert.equal(new Set(ids).size, ids.length, 'no duplicate');
  assert.ok(received.every((entry) => entry.event.user_id === 'alice'), "no other user's event");
  assert.equal(onSecond.counts.duplicates, 0);

  // A raw reader of the whole stream (cursor=earliest) on either replica sees the same events,
  // with the fields `agentwire emit` was given, unchanged.
  const raw = await readRaw(second.wsUrl, aliceToken, { cursor: 'earliest', expectEvents: alice.length });
  const rawEvents = raw.filter((frame) => frame.type === 'event');
  assert.deepEqual(rawEvents.map((frame) => frame.event.event_id), ids);
  assert.equal(raw.filter((frame) => frame.type === 'ready').length, 1);
  const ready = raw.find((frame) => frame.type === 'ready');
  assert.equal(ready.replayed, alice.length);
  assert.match(ready.cursor, /^[A-Za-z0-9_-]+$/, 'cursors are base64url');
  for (const [i, frame] of rawEvents.entries()) {
    const sent = alice[i];
    const got = frame.event;
    assert.match(frame.cursor, /^[A-Za-z0-9_-]+$/);
    for (const field of ['type', 'user_id', 'thread_id', 'run_id', 'run_seq', 'agent_name']) {
      assert.equal(got[field], sent[field], `${sent.event_id}.${field}`);
    }
    for (const [key, value] of Object.entries(sent[sent.type])) {
      assert.equal(got[sent.type][key], value, `${sent.event_id}.${sent.type}.${key}`);
    }
    assert.match(got.emitted_at, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/, 'RFC 3339 UTC');
  }

  // Resuming on the first replica from the cursor the client had when it left gives exactly
  // the events after it: any replica accepts any replica's cursor.
  const rest = await readRaw(first.wsUrl, aliceToken, {
    cursor: cursorAtDisconnect,
    expectEvents: alice.length - countAtDisconnect,
  });
  assert.deepEqual(
    rest.filter((frame) => frame.type === 'event').map((frame) => frame.event.event_id),
    ids.slice(countAtDisconnect),
  );
});

test('the upgrade refuses a bad token (401) and a malformed cursor (400) with a JSON reason', async () => {
  const [gateway] = gateways;
  const status = (url, headers = {}) =>
    new Promise((resolve) => {
      const socket = new WebSocket(url, { headers });
      socket.on('unexpected-response', (request, response) => {
        let body = '';
        response.on('data', (chunk) => {
          body += chunk;
        });
        response.on('end', () => resolve({ status: response.statusCode, body: JSON.parse(body || '{}') }));
      });
      socket.on('open', () => {
        socket.close();
        resolve({ status: 101 });
      });
      socket.on('error', () => {});
    });
  const noToken = await status(gateway.wsUrl);
  assert.equal(noToken.status, 401);
  assert.ok(noToken.body.error && noToken.body.message, JSON.stringify(noToken.body));
  const forged = await status(`${gateway.wsUrl}?access_token=${(await mintToken('alice')).slice(0, -2)}xx`);
  assert.equal(forged.status, 401);
  const token = await mintToken('alice');
  const badCursor = await status(`${gateway.wsUrl}?cursor=not*a*cursor`, { Authorization: `Bearer ${token}` });
  assert.equal(badCursor.status, 400);
  assert.ok(badCursor.body.error);

  // And the JS client turns a 401 into the `unauthorized` state without retrying.
  const client = new AgentwireClient({
    url: gateway.wsUrl,
    token: 'not-a-token',
    WebSocketImpl: WebSocket,
    storage: new MemoryStorage(),
  });
  client.connect();
  await waitFor('unauthorized', () => client.state === ClientState.UNAUTHORIZED);
  client.close();
});

test('a cursor from another topic epoch gets reset; the client replays from the earliest event', async (t) => {
  // A replica of a recreated topic (epoch 2) cannot honour the epoch-1 cursors clients hold.
  const recreated = await startGateway(broker.bootstrap, 0, ['--topic-epoch', '2']);
  gateways.push(recreated);
  const token = await mintToken('carol');
  const carol = runEvents({ user: 'carol', threadId: 't-c', runId: 'ws-rc', prefix: 'ws-c', count: 10 });
  await emit(broker.bootstrap, carol);

  const storage = new MemoryStorage();
  const received = [];
  const resets = [];
  const makeClient = (wsUrl) => {
    const client = new AgentwireClient({
      url: wsUrl,
      token,
      WebSocketImpl: WebSocket,
      storage,
      storageKey: 'carol',
      startFrom: 'earliest',
      onEvent: (event) => received.push(event.event_id),
      onReset: (info) => {
        resets.push(info.reason);
        received.length = 0;  // what an app does: drop its view
      },
    });
    t.after(() => client.close());
    return client;
  };
  const old = makeClient(gateways[0].wsUrl);
  old.connect();
  await waitFor('carol on the epoch-1 replica', () => received.length === carol.length);
  old.close();

  const fresh = makeClient(recreated.wsUrl);
  fresh.connect();
  await waitFor('reset', () => resets.length === 1);
  assert.deepEqual(resets, ['history_unavailable']);
  await waitFor('carol replayed after the reset', () => fresh.state === ClientState.LIVE && received.length === carol.length);
  await new Promise((r) => setTimeout(r, 300));
  assert.deepEqual(received, carol.map((event) => event.event_id));
  assert.equal(fresh.counts.resets, 1);
  assert.notEqual(storage.getItem('carol'), old.cursor, 'an epoch-2 cursor replaced the old one');
});

test('without a cursor the client gets the newest records only (reset catchup_limit) and stays connected', async (t) => {
  // A replica that replays at most 20 records of a partition to a client without a cursor.
  const bounded = await startGateway(broker.bootstrap, 0, ['--max-catchup-events', '20']);
  gateways.push(bounded);
  const token = await mintToken('dave');
  const dave = runEvents({ user: 'dave', threadId: 't-d', runId: 'ws-rd', prefix: 'ws-d', count: 60 });
  // A live watcher tells when the replica has read all of them (then the bound is exact).
  let watched = 0;
  const watcher = new AgentwireClient({
    url: bounded.wsUrl,
    token,
    WebSocketImpl: WebSocket,
    storage: new MemoryStorage(),
    startFrom: 'live',
    onEvent: () => watched++,
  });
  t.after(() => watcher.close());
  watcher.connect();
  await waitFor('the watcher live', () => watcher.state === ClientState.LIVE);
  await emit(broker.bootstrap, dave);
  await waitFor('the replica read dave\'s events', () => watched === dave.length);

  const received = [];
  const resets = [];
  const client = new AgentwireClient({
    url: bounded.wsUrl,
    token,
    WebSocketImpl: WebSocket,
    storage: new MemoryStorage(),
    storageKey: 'dave',
    startFrom: 'earliest',
    onEvent: (event) => received.push(event.event_id),
    onReset: (info) => resets.push(info.reason),
  });
  t.after(() => client.close());
  client.connect();
  await waitFor('live', () => client.state === ClientState.LIVE);
  assert.deepEqual(resets, ['catchup_limit']);
  // dave's 60 events are the newest of his partition: the newest 20 records are all his.
  const caughtUp = received.length;
  assert.deepEqual(received, dave.slice(-20).map((event) => event.event_id));

  const more = runEvents({ user: 'dave', threadId: 't-d', runId: 'ws-rd2', prefix: 'ws-d2', count: 5 });
  await emit(broker.bootstrap, more);
  await waitFor('the live events', () => received.length === caughtUp + 5);
  await new Promise((r) => setTimeout(r, 300));
  assert.deepEqual(received.slice(caughtUp), more.map((event) => event.event_id));
  assert.equal(client.counts.connections, 1, 'no reconnect: the catch-up went on from the bound');
  assert.equal(client.counts.resets, 1);
});

test('with a token function the client refreshes in-band and a run outlives its 3 s tokens', async (t) => {
  // Connections live no longer than their token (exp + leeway, here 1 s): without a refresh
  // this client would be closed with 4001 twice during the run.
  const strict = await startGateway(broker.bootstrap, 0, ['--jwt-leeway', '1s']);
  gateways.push(strict);
  let minted = 0;
  const getToken = async () => {
    minted++;
    return mintToken('erin', { ttl: '3s' });
  };
  const run = runEvents({ user: 'erin', threadId: 't-e', runId: 'ws-re', prefix: 'ws-e', count: 40 });
  const received = [];
  const client = new AgentwireClient({
    url: strict.wsUrl,
    token: getToken,
    WebSocketImpl: WebSocket,
    storage: new MemoryStorage(),
    storageKey: 'erin',
    startFrom: 'live',
    onEvent: (event) => received.push(event.event_id),
  });
  t.after(() => client.close());
  client.connect();
  await waitFor('live', () => client.state === ClientState.LIVE);
  // About 8 s of run: well past the first token's end.
  await emit(broker.bootstrap, run, { pauseEvery: 2, pauseMs: 400 });
  await waitFor('the whole run', () => received.length >= run.length, { timeoutMs: 60000 });
  await new Promise((r) => setTimeout(r, 300));
  assert.deepEqual(received, run.map((event) => event.event_id), 'every event once, in order');
  assert.ok(client.counts.refreshes >= 2, `refreshed in-band ${client.counts.refreshes} times`);
  assert.equal(client.counts.connections, 1, 'the refreshes kept the one connection open');
  assert.ok(minted >= 3);

  // A fixed token cannot be refreshed: the gateway closes at exp + leeway with 4001 and the
  // client stops as unauthorized instead of retrying a dead token.
  const fixed = new AgentwireClient({
    url: strict.wsUrl,
    token: await mintToken('erin', { ttl: '2s' }),
    WebSocketImpl: WebSocket,
    storage: new MemoryStorage(),
    storageKey: 'erin-fixed',
  });
  t.after(() => fixed.close());
  fixed.connect();
  await waitFor('live', () => fixed.state === ClientState.LIVE);
  await waitFor('closed at expiry', () => fixed.state === ClientState.UNAUTHORIZED, { timeoutMs: 20000 });
});
