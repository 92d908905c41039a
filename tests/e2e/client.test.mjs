// The JavaScript client's own logic (gateway/web/agentwire-client.js) in Node over real
// WebSockets, against a stand-in gateway that can misbehave on purpose (duplicates, resets,
// rejected tokens). The product path, real gateway included, is in ws_client.test.mjs and
// demo_page.test.mjs.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import WebSocket from 'ws';

import {
  AgentwireClient,
  ClientState,
  MemoryStorage,
  RecentIds,
  backoffDelay,
  tokenSubject,
} from '../../gateway/web/agentwire-client.js';
import { FakeGateway, fakeToken } from './support/fake_gateway.mjs';
import { sleep, waitFor } from './support/wait.mjs';

let sequence = 0;
function makeEvent(user, runId, runSeq, threadId = 't-1') {
  sequence++;
  return {
    event_id: `ev-${sequence}`,
    type: 'agent_thinking',
    user_id: user,
    thread_id: threadId,
    run_id: runId,
    run_seq: runSeq,
    emitted_at: new Date().toISOString(),
    agent_name: 'tester',
    trace_id: '',
    agent_thinking: { text: `step ${runSeq}` },
  };
}

// A client plus what it reported, with fast backoff so tests do not wait on real delays.
// Closed when the test `t` ends, pass or fail, so one failure does not leak into the next.
function makeClient(t, gateway, options = {}) {
  const seen = { events: [], readies: [], resets: [], states: [] };
  const client = new AgentwireClient({
    url: gateway.url,
    token: fakeToken('alice'),
    WebSocketImpl: WebSocket,
    storage: new MemoryStorage(),
    baseDelayMs: 20,
    maxDelayMs: 200,
    onEvent: (event, info) => seen.events.push({ event, info }),
    onReady: (info) => seen.readies.push(info),
    onReset: (info) => seen.resets.push(info),
    onStateChange: (state, info) => seen.states.push({ state, info }),
    onError: (error) => {
      throw error;
    },
    ...options,
  });
  t.after(() => client.close());
  return { client, seen };
}

const ids = (seen) => seen.events.map((entry) => entry.event.event_id);

describe('AgentwireClient against a stand-in gateway', () => {
  let gateway;
  before(async () => {
    gateway = await new FakeGateway().start();
  });
  after(async () => {
    await gateway.stop();
  });

  test('delivers every event of its user exactly once, in order, across drain closes', async (t) => {
    const { client, seen } = makeClient(t, gateway, { startFrom: 'live' });
    client.connect();
    await waitFor('live', () => client.state === ClientState.LIVE);

    const expected = [];
    for (let i = 1; i <= 300; i++) {
      const mine = makeEvent('alice', 'r-drain', i);
      expected.push(mine.event_id);
      gateway.publish(mine);
      gateway.publish(makeEvent('bob', 'r-bob', i));
      // Every 50 events the "replica" drains; events keep being published while the client
      // is away, and it resumes from its cursor.
      if (i % 50 === 0) {
        await waitFor('live before the next drain', () => client.state === ClientState.LIVE);
        gateway.closeAll(1012, 'draining');
      }
      if (i % 7 === 0) await sleep(1);
    }
    await waitFor('all 300 events', () => seen.events.length >= expected.length);
    await sleep(100);  // anything extra (a duplicate) would arrive now
    assert.deepEqual(ids(seen), expected);
    assert.ok(seen.events.every((entry) => entry.event.user_id === 'alice'));
    await waitFor('one connection, then one per drain', () => client.counts.connections === 7);
    // Every reconnect carried the cursor of the last frame received.
    const resumed = gateway.upgrades.slice(1).filter((query) => query.access_token === fakeToken('alice'));
    assert.ok(resumed.every((query) => /^c\d+$/.test(query.cursor)), JSON.stringify(resumed));
    client.close();
    assert.equal(client.state, ClientState.CLOSED);
  });

  test('drops an event it has already delivered', async (t) => {
    const { client, seen } = makeClient(t, gateway, { startFrom: 'live' });
    client.connect();
    await waitFor('live', () => client.state === ClientState.LIVE);
    await waitFor('earlier sessions gone', () => gateway.sessions.size === 1);
    gateway.duplicateNext = 5;
    const expected = [];
    for (let i = 1; i <= 10; i++) {
      const event = makeEvent('alice', 'r-dup', i);
      expected.push(event.event_id);
      gateway.publish(event);
    }
    await waitFor('10 events', () => seen.events.length >= 10);
    await waitFor('5 duplicates dropped', () => client.counts.duplicates === 5);
    assert.deepEqual(ids(seen), expected);
    client.close();
  });

  test('on reset forgets its cursor, tells the app, and replays from the earliest event', async (t) => {
    const { client, seen } = makeClient(t, gateway, { startFrom: 'live' });
    client.connect();
    await waitFor('live', () => client.state === ClientState.LIVE);
    const first = makeEvent('alice', 'r-reset', 1);
    gateway.publish(first);
    await waitFor('first event', () => seen.events.length === 1);

    // The client's cursor is now "older than the retained log".
    gateway.resetCursors = true;
    gateway.closeAll(1012, 'draining');
    await waitFor('reset reported', () => seen.resets.length === 1);
    assert.equal(seen.resets[0].reason, 'history_unavailable');
    await waitFor('live again', () => seen.readies.length === 2);
    gateway.resetCursors = false;
    assert.equal(gateway.upgrades.at(-1).cursor, 'earliest');
    // The app cleared its view, so the replay from the earliest event delivers the first event
    // again (the client forgot the ids it had delivered), then everything after it.
    assert.equal(ids(seen).filter((id) => id === first.event_id).length, 2);
    const later = makeEvent('alice', 'r-reset', 2);
    gateway.publish(later);
    await waitFor('event after reset', () => ids(seen).includes(later.event_id));
    assert.equal(client.counts.resets, 1);
    assert.equal(client.state, ClientState.LIVE);
    client.close();
  });

  test('stops on 401 and starts again with a new token', async (t) => {
    const bad = fakeToken('alice') + 'x';
    gateway.rejected.add(bad);
    const { client, seen } = makeClient(t, gateway, { token: bad, startFrom: 'live' });
    client.connect();
    await waitFor('unauthorized', () => client.state === ClientState.UNAUTHORIZED);
    assert.equal(seen.states.at(-1).info.status, 401);
    const upgrades = gateway.upgrades.length;
    await sleep(300);  // several backoff periods: no retry may happen
    assert.equal(seen.states.at(-1).state, ClientState.UNAUTHORIZED);
    assert.equal(gateway.upgrades.length, upgrades);

    client.connect({ token: fakeToken('alice') });
    await waitFor('live with the new token', () => client.state === ClientState.LIVE);
    client.close();
  });

  test('a stored cursor the gateway cannot read (400) is handled like a reset', async (t) => {
    const storage = new MemoryStorage();
    storage.setItem('cursor-key', 'not-a-cursor!');
    const { client, seen } = makeClient(t, gateway, { storage, storageKey: 'cursor-key' });
    client.connect();
    await waitFor('live', () => client.state === ClientState.LIVE);
    assert.deepEqual(seen.resets, [{ reason: 'bad_cursor' }]);
    assert.equal(gateway.upgrades.at(-1).cursor, 'earliest');
    assert.match(storage.getItem('cursor-key'), /^c\d+$/);
    client.close();
  });

  test('a new client with the same storage resumes where the last one stopped', async (t) => {
    const storage = new MemoryStorage();
    const first = makeClient(t, gateway, { storage, startFrom: 'live' });
    first.client.connect();
    await waitFor('live', () => first.client.state === ClientState.LIVE);
    const before = makeEvent('alice', 'r-reload', 1);
    gateway.publish(before);
    await waitFor('first event', () => first.seen.events.length === 1);
    first.client.close();

    // Published while no client is connected ("the page is reloading").
    const during = [makeEvent('alice', 'r-reload', 2), makeEvent('alice', 'r-reload', 3)];
    during.forEach((event) => gateway.publish(event));

    const second = makeClient(t, gateway, { storage, startFrom: 'live' });
    second.client.connect();
    await waitFor('catch-up', () => second.seen.readies.length === 1);
    assert.deepEqual(ids(second.seen), during.map((event) => event.event_id));
    assert.ok(second.seen.events.every((entry) => entry.info.replayed));
    assert.equal(second.seen.readies[0].replayed, 2);
    second.client.close();
  });

  test('filters travel in the upgrade query', async (t) => {
    const { client, seen } = makeClient(t, gateway, { threadId: 't-7', runId: 'r-7', startFrom: 'live' });
    client.connect();
    await waitFor('live', () => client.state === ClientState.LIVE);
    assert.equal(gateway.upgrades.at(-1).thread_id, 't-7');
    assert.equal(gateway.upgrades.at(-1).run_id, 'r-7');
    gateway.publish(makeEvent('alice', 'r-other', 1, 't-7'));
    const wanted = makeEvent('alice', 'r-7', 1, 't-7');
    gateway.publish(wanted);
    await waitFor('the filtered event', () => seen.events.length === 1);
    assert.deepEqual(ids(seen), [wanted.event_id]);
    client.close();
  });

  test('a normal close (1000) from the gateway ends the subscription', async (t) => {
    const { client } = makeClient(t, gateway, { startFrom: 'live' });
    client.connect();
    await waitFor('live', () => client.state === ClientState.LIVE);
    const upgrades = gateway.upgrades.length;
    gateway.closeAll(1000, 'bye');
    await waitFor('closed', () => client.state === ClientState.CLOSED);
    await sleep(300);
    assert.equal(gateway.upgrades.length, upgrades, 'no reconnect');
  });

  test('sends the token in Sec-WebSocket-Protocol, never in the URL', async (t) => {
    const { client } = makeClient(t, gateway, { startFrom: 'live' });
    client.connect();
    await waitFor('live', () => client.state === ClientState.LIVE);
    assert.equal(gateway.transports.at(-1), 'protocol');
    assert.equal(gateway.upgrades.at(-1).access_token, undefined);
    client.close();

    const { client: legacy } = makeClient(t, gateway, { startFrom: 'live', tokenTransport: 'query' });
    legacy.connect();
    await waitFor('live', () => legacy.state === ClientState.LIVE);
    assert.equal(gateway.transports.at(-1), 'query');
    assert.equal(gateway.upgrades.at(-1).access_token, fakeToken('alice'));
  });

  test('a full replica (503) is retried with backoff and jitter until there is room', async (t) => {
    gateway.full = true;
    gateway.fullRefusals = 0;
    t.after(() => {
      gateway.full = false;
    });
    const { client, seen } = makeClient(t, gateway, { startFrom: 'live' });
    client.connect();
    await waitFor('three refusals', () => gateway.fullRefusals >= 3);
    await sleep(400);
    // Backoff (20 ms base, 200 ms cap here): a handful of attempts, not a tight loop.
    assert.ok(gateway.fullRefusals < 25, `${gateway.fullRefusals} attempts in ~0.5 s`);
    const retries = seen.states.filter((s) => s.state === ClientState.RECONNECTING);
    assert.ok(retries.length >= 3);
    assert.ok(retries.every((s) => s.info.status === 503), JSON.stringify(retries.map((s) => s.info)));
    assert.ok(new Set(retries.map((s) => s.info.delayMs)).size > 1, 'jittered delays');
    gateway.full = false;
    await waitFor('live', () => client.state === ClientState.LIVE);
  });

  test('keeps retrying while the gateway is down and resumes when it is back', async (t) => {
    const { client, seen } = makeClient(t, gateway, { startFrom: 'live' });
    client.connect();
    await waitFor('live', () => client.state === ClientState.LIVE);
    const port = gateway.port;
    await gateway.stop();
    await waitFor('reconnecting', () => client.state === ClientState.RECONNECTING);
    await sleep(400);  // a few failed attempts
    const missed = makeEvent('alice', 'r-down', 1);
    gateway.publish(missed);  // "published while the replica was down"
    await gateway.start(port);
    await waitFor('the missed event', () => seen.events.length === 1, { timeoutMs: 10000 });
    assert.deepEqual(ids(seen), [missed.event_id]);
    const retries = seen.states.filter((entry) => entry.state === ClientState.RECONNECTING);
    assert.ok(retries.length >= 2, `${retries.length} reconnect attempts`);
    assert.ok(retries.every((entry) => entry.info.delayMs <= 200));
    client.close();
  });
});

describe('client helpers', () => {
  test('backoff is full jitter under an exponential ceiling with a cap', () => {
    const ceilings = [0, 1, 2, 3, 4, 5, 6, 10, 50].map((attempt) => backoffDelay(attempt, 250, 10000, () => 0.9999));
    assert.deepEqual(ceilings, [249, 499, 999, 1999, 3999, 7999, 9999, 9999, 9999]);
    assert.equal(backoffDelay(3, 250, 10000, () => 0), 0);
  });

  test('recent ids evict the oldest and refresh on a hit', () => {
    const recent = new RecentIds(3);
    ['a', 'b', 'c'].forEach((id) => recent.add(id));
    assert.equal(recent.touch('a'), true);  // a is now the newest
    recent.add('d');  // evicts b
    assert.equal(recent.touch('b'), false);
    assert.equal(recent.touch('a'), true);
    assert.equal(recent.size, 3);
  });

  test('the token subject keys the stored cursor', () => {
    assert.equal(tokenSubject(fakeToken('alice')), 'alice');
    assert.equal(tokenSubject('not a jwt'), '');
  });
});
