// The reference client's side of docs/runs.md against the stand-in gateway: a run ends at its
// first terminal event (onRunEnd exactly once, later events of the run dropped and counted, the
// cursor moved past them), and cancel() over WebSocket frames and over HTTP. The product path
// (real gateway, supervisor and worker) is in run_stop.test.mjs.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import WebSocket from 'ws';

import { AgentwireClient, ClientState, MemoryStorage, runOutcome } from '../../gateway/web/agentwire-client.js';
import { FakeGateway, fakeToken } from './support/fake_gateway.mjs';
import { sleep, waitFor } from './support/wait.mjs';

let sequence = 0;
function event(user, runId, runSeq, type, body = {}, threadId = 't-1') {
  sequence++;
  return {
    event_id: `re-${sequence}`,
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
const started = (user, runId, threadId) => event(user, runId, 1, 'agent_started', { input: 'q' }, threadId);
const thinking = (user, runId, seq) => event(user, runId, seq, 'agent_thinking', { text: `step ${seq}` });
const completed = (user, runId, seq) => event(user, runId, seq, 'agent_completed', { result: 'done', duration_ms: 5 });
const failed = (user, runId, seq, code, message = '') =>
  event(user, runId, seq, 'agent_failed', { error_code: code, message });

// A client plus everything it reported; errors are collected (an assertion checks there were
// none) rather than thrown from inside a WebSocket handler.
function makeClient(t, gateway, options = {}) {
  const seen = { events: [], ends: [], late: [], errors: [], resets: [] };
  const storage = options.storage || new MemoryStorage();
  const client = new AgentwireClient({
    url: gateway.url,
    token: fakeToken('alice'),
    WebSocketImpl: WebSocket,
    storage,
    storageKey: 'cursor',
    baseDelayMs: 20,
    maxDelayMs: 200,
    startFrom: 'live',
    onEvent: (e, info) => seen.events.push({ event: e, info }),
    onRunEnd: (info) => seen.ends.push(info),
    onLateEvent: (e, info) => seen.late.push({ event: e, info }),
    onReset: (info) => seen.resets.push(info),
    onError: (error) => seen.errors.push(error),
    ...options,
  });
  t.after(() => client.close());
  return { client, seen, storage };
}

const endsOf = (seen, runId) => seen.ends.filter((end) => end.runId === runId);
const delivered = (seen) => seen.events.map((entry) => entry.event.event_id);

async function live(client, gateway) {
  client.connect();
  await waitFor('live', () => client.state === ClientState.LIVE);
  return gateway;
}

describe('first terminal wins', () => {
  let gateway;
  before(async () => {
    gateway = await new FakeGateway().start();
  });
  after(async () => {
    await gateway.stop();
  });

  test('two ends of one run: onRunEnd once, late events dropped and counted, cursor past them', async (t) => {
    const { client, seen, storage } = makeClient(t, gateway);
    await live(client, gateway);

    // The supervisor ends run A (worker_lost); the zombie worker then wakes up and publishes a
    // step and its own end. Run B of the same user goes on around it.
    const runA = [started('alice', 'run-a'), thinking('alice', 'run-a', 2)];
    const lost = failed('alice', 'run-a', 3, 'worker_lost', 'no heartbeat for 15 s');
    const zombie = [thinking('alice', 'run-a', 3), completed('alice', 'run-a', 4)];
    const runB = [started('alice', 'run-b'), thinking('alice', 'run-b', 2), completed('alice', 'run-b', 3)];
    const order = [runA[0], runB[0], runA[1], lost, runB[1], zombie[0], zombie[1], runB[2]];
    order.forEach((e) => gateway.publish(e));

    const expected = [runA[0], runB[0], runA[1], lost, runB[1], runB[2]].map((e) => e.event_id);
    await waitFor('run B ended', () => endsOf(seen, 'run-b').length === 1);
    await sleep(100);  // anything more would arrive now
    assert.deepEqual(delivered(seen), expected, 'the zombie events never reach onEvent');
    assert.equal(endsOf(seen, 'run-a').length, 1, 'one end for run A');
    assert.equal(endsOf(seen, 'run-b').length, 1, 'one end for run B');
    assert.equal(seen.ends.length, 2);

    const [endA] = endsOf(seen, 'run-a');
    assert.equal(endA.outcome, 'worker_lost', 'the first end wins, not the worker\'s completion');
    assert.equal(endA.errorCode, 'worker_lost');
    assert.equal(endA.message, 'no heartbeat for 15 s');
    assert.equal(endA.threadId, 't-1');
    assert.equal(endA.event.event_id, lost.event_id);
    assert.equal(endA.replayed, false);
    assert.equal(endsOf(seen, 'run-b')[0].outcome, 'completed');
    assert.equal(endsOf(seen, 'run-b')[0].errorCode, '');
    // onRunEnd comes right after onEvent got the same terminal event.
    assert.equal(seen.events.findIndex((entry) => entry.event.event_id === lost.event_id), 3);

    assert.equal(client.lateEvents, 2);
    assert.deepEqual(seen.late.map((entry) => entry.event.event_id), zombie.map((e) => e.event_id));
    assert.deepEqual(
      { events: client.counts.events, runEnds: client.counts.runEnds, lateEvents: client.counts.lateEvents },
      { events: 6, runEnds: 2, lateEvents: 2 },
    );
    const end = `c${gateway.log.length}`;
    assert.equal(client.cursor, end, 'the cursor moved past the dropped events');
    assert.equal(storage.getItem('cursor'), end, 'and is stored');

    // A reconnect resumes after them: nothing is delivered or counted again.
    gateway.closeAll(1012, 'draining');
    await waitFor('reconnected', () => client.counts.connections === 2 && client.state === ClientState.LIVE);
    assert.equal(gateway.upgrades.at(-1).cursor, end);
    // A late event that arrives after the reconnect is still dropped (the client remembers ends).
    const later = thinking('alice', 'run-a', 5);
    const marker = started('alice', 'run-c');
    gateway.publish(later);
    gateway.publish(marker);
    await waitFor('run C started', () => delivered(seen).includes(marker.event_id));
    assert.ok(!delivered(seen).includes(later.event_id));
    assert.equal(client.lateEvents, 3);
    assert.equal(seen.ends.length, 2);
    assert.equal(client.cursor, `c${gateway.log.length}`);
    assert.deepEqual(seen.errors, []);
  });

  test('each terminal maps to its outcome, and a duplicate end is a duplicate, not a second end', async (t) => {
    const { client, seen } = makeClient(t, gateway);
    await live(client, gateway);
    const runs = {
      'o-done': completed('alice', 'o-done', 2),
      'o-stopped': failed('alice', 'o-stopped', 2, 'cancelled', 'stopped by the user'),
      'o-lost': failed('alice', 'o-lost', 2, 'worker_lost', 'silent'),
      'o-tool': failed('alice', 'o-tool', 2, 'tool_error', 'search failed'),
      'o-abandoned': failed('alice', 'o-abandoned', 2, 'run_abandoned'),
    };
    for (const [runId, end] of Object.entries(runs)) {
      gateway.publish(started('alice', runId));
      gateway.publish(end);
    }
    gateway.duplicateNext = 0;
    await waitFor('five ends', () => seen.ends.length === 5);
    assert.deepEqual(
      Object.fromEntries(seen.ends.map((end) => [end.runId, end.outcome])),
      { 'o-done': 'completed', 'o-stopped': 'cancelled', 'o-lost': 'worker_lost', 'o-tool': 'failed', 'o-abandoned': 'failed' },
    );
    assert.equal(seen.ends.find((end) => end.runId === 'o-tool').errorCode, 'tool_error');

    // The same end event twice (a replay): dropped as a duplicate; no second onRunEnd.
    gateway.duplicateNext = 1;
    gateway.publish(started('alice', 'o-dup'));
    gateway.publish(completed('alice', 'o-dup', 2));
    await waitFor('one duplicate dropped', () => client.counts.duplicates === 1);
    await waitFor('o-dup ended', () => endsOf(seen, 'o-dup').length === 1);
    await sleep(100);
    assert.equal(endsOf(seen, 'o-dup').length, 1);
    assert.equal(client.lateEvents, 0);
    assert.equal(runOutcome(thinking('alice', 'x', 2)), '');
    assert.deepEqual(seen.errors, []);
  });

  test('after a reset the replay shows ended runs again, each with one end', async (t) => {
    // A gateway of its own: the replay from the earliest event must hold only this run.
    const own = await new FakeGateway().start();
    t.after(() => own.stop());
    const { client, seen } = makeClient(t, own);
    await live(client, own);
    const first = [started('alice', 'rs-1'), completed('alice', 'rs-1', 2), thinking('alice', 'rs-1', 3)];
    first.forEach((e) => own.publish(e));
    await waitFor('rs-1 ended', () => endsOf(seen, 'rs-1').length === 1);
    await waitFor('late event counted', () => client.lateEvents === 1);

    own.resetCursors = true;
    t.after(() => {
      own.resetCursors = false;
    });
    own.closeAll(1012, 'draining');
    await waitFor('reset', () => seen.resets.length === 1);
    await waitFor('the replay ended rs-1 again', () => endsOf(seen, 'rs-1').length === 2);
    own.resetCursors = false;
    await sleep(100);
    // The application cleared its view on reset: the replay brings the run and one end back,
    // and drops the late event again.
    const afterReset = seen.ends.slice(seen.ends.findIndex((end) => end.runId === 'rs-1') + 1);
    assert.equal(afterReset.filter((end) => end.runId === 'rs-1').length, 1);
    assert.equal(endsOf(seen, 'rs-1')[1].replayed, true);
    assert.equal(client.lateEvents, 2);
    assert.deepEqual(seen.errors, []);
  });
});

describe('cancel()', () => {
  let gateway;
  before(async () => {
    gateway = await new FakeGateway().start();
  });
  after(async () => {
    await gateway.stop();
  });
  const reset = () => {
    gateway.cancelAnswer = null;
    gateway.cancels = [];
  };

  test('over the WebSocket: concurrent Stops answered out of order each get their own answer', async (t) => {
    reset();
    t.after(reset);
    const { client, seen } = makeClient(t, gateway);
    await live(client, gateway);
    gateway.publish(started('alice', 'c-open'));
    gateway.publish(started('alice', 'c-done'));
    gateway.publish(failed('alice', 'c-done', 2, 'cancelled'));
    await waitFor('c-done ended', () => endsOf(seen, 'c-done').length === 1);

    // Hold every answer until four requests are in, then answer them last-first.
    const held = [];
    gateway.cancelAnswer = (request) =>
      new Promise((resolve) => held.push({ request, answer: () => resolve(gateway.answerFromLog(request.user, request.runId)) }));
    const answers = [
      client.cancel('c-open'),
      client.cancel('c-done'),
      client.cancel('c-nobody'),
      client.cancel('c-open'),  // the same run twice: both answered
    ];
    await waitFor('four requests held', () => held.length === 4);
    assert.deepEqual(gateway.cancels.map((c) => [c.via, c.user, c.runId]), [
      ['frame', 'alice', 'c-open'], ['frame', 'alice', 'c-done'], ['frame', 'alice', 'c-nobody'], ['frame', 'alice', 'c-open'],
    ]);
    // Answers nobody asked for come first: they must not resolve anything, nor disturb the stream.
    gateway.sendToAll({ type: 'cancel_result', run_id: 'c-stranger', result: 'requested' });
    gateway.sendToAll({ type: 'cancel_result', result: 'bad_run_id' });
    gateway.sendToAll({ type: 'stop_everything', run_id: 'c-open' });
    for (const entry of [...held].reverse()) entry.answer();

    const results = await Promise.all(answers);
    assert.deepEqual(results, [
      { result: 'requested', via: 'websocket' },
      { result: 'run_ended', via: 'websocket', end: { type: 'agent_failed', error_code: 'cancelled', cursor: `c${gateway.log.length}` } },
      { result: 'unknown_run', via: 'websocket' },
      { result: 'requested', via: 'websocket' },
    ]);
    // The connection stays open and the stream goes on.
    const next = thinking('alice', 'c-open', 2);
    gateway.publish(next);
    await waitFor('the stream goes on', () => delivered(seen).includes(next.event_id));
    assert.equal(client.counts.connections, 1);
    assert.deepEqual(seen.errors, []);
  });

  test('over the WebSocket: an answer that never comes times out; a closed socket hands over to HTTP', async (t) => {
    reset();
    t.after(reset);
    const { client, seen } = makeClient(t, gateway);
    await live(client, gateway);
    gateway.publish(started('alice', 'c-slow'));

    gateway.cancelAnswer = () => new Promise(() => {});  // never answers
    const startedAt = Date.now();
    await assert.rejects(client.cancel('c-slow', { timeoutMs: 300 }), /no answer to the cancel of run c-slow/);
    assert.ok(Date.now() - startedAt >= 290);
    // A late answer for the timed-out request is ignored like any unasked one. (Answers carry
    // no request id: had a new Stop of the same run been waiting, it would have taken it.)
    gateway.sendToAll({ type: 'cancel_result', run_id: 'c-slow', result: 'requested' });
    await sleep(100);

    // The frame goes out, then the replica drains before answering: the client asks over HTTP.
    gateway.cancelAnswer = (request) =>
      request.via === 'http' ? gateway.answerFromLog(request.user, request.runId) : new Promise(() => {});
    const pending = client.cancel('c-slow', { timeoutMs: 5000 });
    await waitFor('the frame arrived', () => gateway.cancels.filter((c) => c.via === 'frame').length === 2);
    gateway.closeAll(1012, 'draining');
    assert.deepEqual(await pending, { result: 'requested', via: 'http' });
    assert.equal(gateway.cancels.at(-1).via, 'http');
    assert.equal(gateway.cancels.at(-1).authorization, `Bearer ${fakeToken('alice')}`);
    assert.deepEqual(seen.errors, []);
  });

  test('a run id the gateway would refuse is answered bad_run_id without asking it', async (t) => {
    reset();
    const { client } = makeClient(t, gateway);
    await live(client, gateway);
    for (const bad of ['', 'x'.repeat(257), 'line\nbreak', 42, undefined]) {
      assert.deepEqual(await client.cancel(bad), { result: 'bad_run_id', via: 'local' });
    }
    assert.equal(gateway.cancels.length, 0);
    // 256 bytes is still a run id (the gateway decides).
    assert.equal((await client.cancel('é'.repeat(128))).result, 'unknown_run');
  });

  test('over HTTP when not connected: every status of the contract maps to its result', async (t) => {
    reset();
    t.after(reset);
    const { client } = makeClient(t, gateway);  // never connected
    gateway.publish(started('alice', 'h-open'));
    gateway.publish(started('alice', 'h/odd id?'));
    gateway.publish(started('alice', 'h-done'));
    gateway.publish(completed('alice', 'h-done', 2));

    assert.deepEqual(await client.cancel('h-open'), { result: 'requested', via: 'http' });
    assert.deepEqual(await client.cancel('h/odd id?'), { result: 'requested', via: 'http' });
    assert.equal(gateway.cancels.at(-1).runId, 'h/odd id?', 'the run id is percent-encoded in the path');
    assert.deepEqual(await client.cancel('h-done'), {
      result: 'run_ended', via: 'http', end: { type: 'agent_completed', cursor: `c${gateway.log.length}` },
    });
    assert.deepEqual(await client.cancel('h-nobody'), { result: 'unknown_run', via: 'http' });
    // Another user's run is unknown to alice.
    gateway.publish(started('bob', 'h-bob'));
    assert.deepEqual(await client.cancel('h-bob'), { result: 'unknown_run', via: 'http' });
    assert.ok(gateway.cancels.every((c) => c.via === 'http' && c.user === 'alice'));
    assert.ok(gateway.cancels.every((c) => c.authorization === `Bearer ${fakeToken('alice')}`));

    gateway.cancelAnswer = () => ({ result: 'control_unavailable' });
    assert.deepEqual(await client.cancel('h-open'), { result: 'control_unavailable', via: 'http' });
    gateway.cancelAnswer = () => ({ result: 'bad_run_id' });
    assert.deepEqual(await client.cancel('h-open'), { result: 'bad_run_id', via: 'http' });
    // A gateway without the endpoint (404 without unknown_run) is an error, not "unknown run".
    gateway.cancelAnswer = () => ({ result: '', status: 404, body: { error: 'not_found' } });
    await assert.rejects(client.cancel('h-open'), (error) => error.status === 404 && error.error === 'not_found');
    gateway.cancelAnswer = () => new Promise(() => {});
    await assert.rejects(client.cancel('h-open', { timeoutMs: 300 }), /no answer to the cancel of run h-open/);
  });

  test('over HTTP: a refused token rejects with its status; via websocket needs a socket', async (t) => {
    reset();
    const bad = `${fakeToken('alice')}x`;
    gateway.rejected.add(bad);
    t.after(() => gateway.rejected.delete(bad));
    const { client } = makeClient(t, gateway, { token: bad });
    await assert.rejects(client.cancel('h-open'), (error) => error.status === 401);
    await assert.rejects(client.cancel('h-open', { via: 'websocket' }), /no open WebSocket/);

    // A token function is asked for the token, as for a connection.
    let asked = 0;
    const { client: withFunction } = makeClient(t, gateway, {
      token: async () => {
        asked++;
        return fakeToken('alice');
      },
    });
    assert.equal((await withFunction.cancel('h-open', { via: 'http' })).result, 'requested');
    assert.equal(asked, 1);
  });

  test('via http on an open connection uses HTTP anyway', async (t) => {
    reset();
    const { client } = makeClient(t, gateway);
    await live(client, gateway);
    gateway.publish(started('alice', 'v-open'));
    assert.deepEqual(await client.cancel('v-open', { via: 'http' }), { result: 'requested', via: 'http' });
    assert.deepEqual(await client.cancel('v-open'), { result: 'requested', via: 'websocket' });
    assert.deepEqual(gateway.cancels.map((c) => c.via), ['http', 'frame']);
  });
});
