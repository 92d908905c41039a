// The client's "open a thread" and "load older" (loadThread / loadOlder, issue 23) in Node over
// real HTTP and WebSockets, against the stand-in gateway's GET /v1/threads/{thread_id}/events:
// the pages join each other and the live stream with nothing lost, nothing twice and nothing
// out of order. The demo page against the real gateway is demo_thread.test.mjs.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import WebSocket from 'ws';

import { AgentwireClient, ClientState, MemoryStorage } from '../../gateway/web/agentwire-client.js';
import { FakeGateway, fakeToken } from './support/fake_gateway.mjs';
import { sleep, waitFor } from './support/wait.mjs';

let sequence = 0;
function makeEvent(user, threadId, runId, runSeq, type = 'agent_thinking', body = { text: `step ${runSeq}` }) {
  sequence++;
  return {
    event_id: `th-${sequence}`,
    type,
    user_id: user,
    thread_id: threadId,
    run_id: runId,
    run_seq: runSeq,
    emitted_at: new Date().toISOString(),
    agent_name: 'tester',
    [type]: body,
  };
}

function makeClient(t, gateway, options = {}) {
  const seen = { events: [], resets: [], late: [], ends: [] };
  const client = new AgentwireClient({
    url: gateway.url,
    token: fakeToken('alice'),
    WebSocketImpl: WebSocket,
    storage: new MemoryStorage(),
    baseDelayMs: 20,
    maxDelayMs: 200,
    onEvent: (event, info) => seen.events.push({ event, info }),
    onRunEnd: (end) => seen.ends.push(end),
    onLateEvent: (event) => seen.late.push(event),
    onReset: (info) => seen.resets.push(info),
    onError: (error) => {
      throw error;
    },
    ...options,
  });
  t.after(() => client.close());
  return { client, seen };
}

const ids = (events) => events.map((event) => event.event_id);
const delivered = (seen) => ids(seen.events.map((entry) => entry.event));

// Publishes `count` events of alice's thread `threadId` (one run per 5 events), each followed by
// an event of another thread of hers and one of bob's in the same thread id; returns alice's.
function publishThread(gateway, threadId, count, runPrefix) {
  const mine = [];
  for (let i = 0; i < count; i++) {
    const event = makeEvent('alice', threadId, `${runPrefix}-${Math.floor(i / 5)}`, (i % 5) + 1);
    mine.push(event);
    gateway.publish(event);
    gateway.publish(makeEvent('alice', `${threadId}-other`, `${runPrefix}-o`, i + 1));
    gateway.publish(makeEvent('bob', threadId, `${runPrefix}-b`, i + 1));
  }
  return mine;
}

describe('loadThread and loadOlder against a stand-in gateway', () => {
  let gateway;
  before(async () => {
    gateway = await new FakeGateway().start();
  });
  after(async () => {
    await gateway.stop();
  });

  test('pages back to the beginning, then goes live from end_cursor: every event once, in order', async (t) => {
    const history = publishThread(gateway, 'th-page', 25, 'rp');
    const { client, seen } = makeClient(t, gateway);
    const requestsBefore = gateway.threadRequests.length;

    const opened = await client.loadThread('th-page', { limit: 10 });
    assert.deepEqual(opened, { delivered: 10, hasMore: true, missing: [] });
    assert.deepEqual(delivered(seen), ids(history.slice(15)), 'the newest page, oldest first, through onEvent');
    assert.ok(seen.events.every((entry) => entry.info.replayed && /^c\d+$/.test(entry.info.cursor)));
    assert.equal(client.hasOlder, true);

    // The WebSocket resumes from the page's end_cursor, filtered to the thread.
    await waitFor('live', () => client.state === ClientState.LIVE);
    const upgrade = gateway.upgrades.at(-1);
    assert.equal(upgrade.cursor, `c${gateway.log.length}`);
    assert.equal(upgrade.thread_id, 'th-page');

    const older = await client.loadOlder();
    assert.deepEqual(ids(older.events), ids(history.slice(5, 15)));
    assert.equal(older.hasMore, true);
    const oldest = await client.loadOlder();
    assert.deepEqual(ids(oldest.events), ids(history.slice(0, 5)));
    assert.equal(oldest.hasMore, false);
    assert.equal(client.hasOlder, false);
    // At the beginning: no more requests.
    assert.deepEqual(await client.loadOlder(), { events: [], hasMore: false, missing: [] });

    const requests = gateway.threadRequests.slice(requestsBefore);
    assert.deepEqual(requests.map((r) => [r.thread_id, r.limit, r.before]), [
      ['th-page', '10', undefined],
      ['th-page', '10', seen.events[0].info.cursor],  // before = the oldest event's cursor
      ['th-page', '10', `c${gateway.log.indexOf(history[5]) + 1}`],
    ]);

    // Live events after the pages: the same thread only, each once.
    const live = publishThread(gateway, 'th-page', 6, 'rl');
    await waitFor('the live events', () => seen.events.length >= 16);
    await sleep(100);  // a duplicate would arrive now
    const whole = [...oldest.events, ...older.events, ...seen.events.map((entry) => entry.event)];
    assert.deepEqual(ids(whole), ids([...history, ...live]), 'history and live join with no gap or duplicate');
    assert.equal(client.counts.duplicates, 0);
    assert.equal(client.counts.connections, 1);
  });

  test('events published between the page and the subscription arrive once, in the catch-up', async (t) => {
    const history = publishThread(gateway, 'th-gap', 4, 'rg');
    const meanwhile = [];
    gateway.onThreadPage = ({ threadId }) => {
      // The page is read; these land in the log before the client subscribes.
      if (threadId !== 'th-gap') return;
      for (let i = 1; i <= 3; i++) {
        const event = makeEvent('alice', 'th-gap', 'rg-late', i);
        meanwhile.push(event);
        gateway.publish(event);
      }
    };
    t.after(() => {
      gateway.onThreadPage = null;
    });
    const { client, seen } = makeClient(t, gateway);
    const opened = await client.loadThread('th-gap');
    assert.equal(opened.hasMore, false);
    await waitFor('live', () => client.state === ClientState.LIVE);
    await waitFor('the events published meanwhile', () => seen.events.length >= 7);
    await sleep(100);
    assert.deepEqual(delivered(seen), ids([...history, ...meanwhile]));
    assert.deepEqual(seen.events.slice(4).map((entry) => entry.info.replayed), [true, true, true]);
  });

  test('two loadOlder calls at once share one request', async (t) => {
    publishThread(gateway, 'th-twice', 12, 'rt');
    const { client } = makeClient(t, gateway);
    await client.loadThread('th-twice', { limit: 5 });
    const count = gateway.threadRequests.length;
    const [a, b] = await Promise.all([client.loadOlder(), client.loadOlder()]);
    assert.equal(a, b);
    assert.equal(gateway.threadRequests.length, count + 1);
  });

  test('an empty thread opens (no older page) and shows its first live event', async (t) => {
    const { client, seen } = makeClient(t, gateway);
    assert.deepEqual(await client.loadThread('th-empty'), { delivered: 0, hasMore: false, missing: [] });
    assert.equal(client.hasOlder, false);
    await waitFor('live', () => client.state === ClientState.LIVE);
    const first = makeEvent('alice', 'th-empty', 're-1', 1);
    gateway.publish(first);
    await waitFor('the first event', () => seen.events.length === 1);
    assert.deepEqual(delivered(seen), [first.event_id]);
  });

  test('a gateway that cannot serve the page yet (503) is asked again; 401 rejects', async (t) => {
    const history = publishThread(gateway, 'th-503', 3, 'r5');
    gateway.historyUnavailable = 2;
    // random 0: each retry waits exactly the Retry-After (1 s), not up to twice that.
    const { client, seen } = makeClient(t, gateway, { random: () => 0 });
    const states = [];
    const opened = await client.loadThread('th-503', { limit: 50 });
    assert.equal(opened.delivered, 3);
    assert.deepEqual(delivered(seen), ids(history));
    assert.deepEqual(
      gateway.threadRequests.filter((r) => r.thread_id === 'th-503').map((r) => r.status),
      [503, 503, 200],
    );

    const bad = fakeToken('alice') + 'x';
    gateway.rejected.add(bad);
    const refused = makeClient(t, gateway, { token: bad, onStateChange: (state) => states.push(state) }).client;
    await assert.rejects(refused.loadThread('th-503'), (error) => error.status === 401);
    assert.equal(refused.state, ClientState.UNAUTHORIZED);
    assert.deepEqual(states, [ClientState.CONNECTING, ClientState.UNAUTHORIZED]);
    await assert.rejects(makeClient(t, gateway).client.loadThread('th-503', { limit: 0 }), RangeError);
  });

  test('a reset naming missing offsets keeps the view and the connection', async (t) => {
    const history = publishThread(gateway, 'th-hole', 3, 'rh');
    const { client, seen } = makeClient(t, gateway);
    await client.loadThread('th-hole');
    await waitFor('live', () => client.state === ClientState.LIVE);
    const cursor = client.cursor;
    const missing = { partition: 0, from_offset: 10, to_offset: 20 };
    gateway.sendToAll({ type: 'reset', reason: 'history_unavailable', missing });
    await waitFor('the reset reported', () => seen.resets.length === 1);
    assert.deepEqual(seen.resets[0], { reason: 'history_unavailable', missing });
    assert.equal(client.cursor, cursor, 'the cursor is kept');
    const later = publishThread(gateway, 'th-hole', 2, 'rh2');
    await waitFor('events after the hole', () => seen.events.length === 5);
    assert.deepEqual(delivered(seen), ids([...history, ...later]));
    assert.equal(client.counts.connections, 1, 'the same connection goes on');
    assert.equal(client.hasOlder, false);
  });

  test('a reset without missing reloads the newest page; an older page asked before it is abandoned', async (t) => {
    const history = publishThread(gateway, 'th-reset', 8, 'rr');
    const { client, seen } = makeClient(t, gateway, {
      onReset: (info) => {
        seen.resets.push(info);
        gateway.resetCursors = false;  // one reset
      },
    });
    await client.loadThread('th-reset', { limit: 4 });
    await waitFor('live', () => client.state === ClientState.LIVE);
    let asked = false;
    let release;
    const held = new Promise((resolve) => {
      release = resolve;
    });
    gateway.onThreadPage = async ({ query }) => {
      if (!query.before) return;
      asked = true;
      await held;
    };
    t.after(() => {
      gateway.onThreadPage = null;
      release();
    });
    const older = client.loadOlder();
    await waitFor('the older page asked for', () => asked);
    gateway.resetCursors = true;
    gateway.closeAll(1012, 'draining');
    await waitFor('the reset reported', () => seen.resets.length === 1);
    await waitFor('the newest page again', () => seen.events.length === 8);
    release();
    await assert.rejects(older, (error) => error.name === 'AbortError');
    assert.deepEqual(delivered(seen), ids([...history.slice(4), ...history.slice(4)]));
    assert.equal(client.hasOlder, true);
    const again = await client.loadOlder();
    assert.deepEqual(ids(again.events), ids(history.slice(0, 4)));
  });

  test('an older page drops events after their run ended; a later live event of that run is late', async (t) => {
    const run = [
      makeEvent('alice', 'th-zombie', 'rz', 1, 'agent_started', { input: 'q' }),
      makeEvent('alice', 'th-zombie', 'rz', 2, 'agent_failed', { error_code: 'worker_lost', message: 'lost' }),
      makeEvent('alice', 'th-zombie', 'rz', 3),  // the zombie worker woke up
    ];
    const newer = [makeEvent('alice', 'th-zombie', 'rz2', 1, 'agent_started', { input: 'q2' })];
    for (const event of [...run, ...newer]) gateway.publish(event);
    const { client, seen } = makeClient(t, gateway);
    await client.loadThread('th-zombie', { limit: 1 });
    assert.deepEqual(delivered(seen), ids(newer));
    await waitFor('live', () => client.state === ClientState.LIVE);
    const page = await client.loadOlder({ limit: 10 });
    assert.deepEqual(ids(page.events), ids(run.slice(0, 2)));
    assert.deepEqual(ids(seen.late), [run[2].event_id]);
    assert.equal(page.hasMore, false);
    const zombie = makeEvent('alice', 'th-zombie', 'rz', 4);
    gateway.publish(zombie);
    await waitFor('the live zombie dropped', () => seen.late.length === 2);
    assert.deepEqual(delivered(seen), ids(newer));
    assert.equal(client.lateEvents, 2);
  });
});
