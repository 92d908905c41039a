// Stop and worker loss end to end (docs/runs.md), with the real processes: an embedded broker,
// a gateway, `agentwire supervisor --cancel-timeout 3s` and a worker (`agentwire emit simulate`,
// which runs with run control: heartbeats, and Stop honoured), and the demo page in headless
// Chromium (Debian's, driven by playwright-core).
//
// 1. The user presses Stop on the run in progress: the run shows "stopped", ended by the
//    worker, with exactly one end, on the page and in what the gateway sends.
// 2. The worker is SIGKILLed mid-run (lease 2 s, heartbeats every 500 ms): within 10 s the run
//    shows "the agent stopped responding", ended by the supervisor, with exactly one end.
//
// The two users share a partition, and every reader keys runs by (user, run id): a run of one
// user must never stand for a run of the other (docs/runs.md: a run is the user's). This test
// found the supervisor keying runs by run id alone, when `emit simulate` still named every
// process's runs r-1-1, r-1-2, ...
//
// Beside the page, a plain WebSocket (no client library, so nothing is filtered on the way)
// records every frame the gateway sends for the user: the end count there is the gateway's.
import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, test } from 'node:test';

import WebSocket from 'ws';

import {
  mintToken,
  startBroker,
  startGateway,
  startSimulator,
  startSupervisor,
  tempDir,
  launchChromium,
} from './support/agentwire.mjs';
import { sleep, waitFor } from './support/wait.mjs';

const kTerminal = new Set(['agent_completed', 'agent_failed']);

let dir;
let broker;
let gateway;
let supervisor;
let browser;
const workers = [];

before(async () => {
  dir = await tempDir('run-stop');
  broker = await startBroker(dir);
  gateway = await startGateway(broker.bootstrap);
  supervisor = await startSupervisor(broker.bootstrap, ['--cancel-timeout', '3s']);
  browser = await launchChromium();
});

after(async () => {
  if (browser) await browser.close();
  for (const worker of workers) await worker.kill('SIGKILL');
  if (supervisor) await supervisor.kill();
  if (gateway) await gateway.kill();
  if (broker) await broker.kill();
});

/** Every event frame the gateway sends a user, from the earliest, over a raw WebSocket. */
async function observe(user) {
  const token = await mintToken(user);
  const socket = new WebSocket(`${gateway.wsUrl}?cursor=earliest`, { headers: { Authorization: `Bearer ${token}` } });
  const observer = { events: [], ready: false, socket };
  socket.on('message', (data) => {
    const frame = JSON.parse(String(data));
    if (frame.type === 'event') observer.events.push(frame.event);
    if (frame.type === 'ready') observer.ready = true;
  });
  socket.on('error', () => {});
  await waitFor(`the observer of ${user} live`, () => observer.ready);
  observer.ends = (runId) => observer.events.filter((e) => e.run_id === runId && kTerminal.has(e.type));
  return observer;
}

// What the page shows about one run, and what its client reported.
function readRun(page, runId) {
  return page.evaluate((id) => {
    const card = document.querySelector(`.run[data-run-id="${CSS.escape(id)}"]`);
    const demo = window.agentwireDemo;
    return {
      status: card?.dataset.status || '',
      outcome: card?.dataset.outcome || '',
      endTexts: card ? [...card.querySelectorAll('.run-end-text')].map((node) => node.textContent) : [],
      terminalItems: card ? card.querySelectorAll('[data-type="agent_completed"], [data-type="agent_failed"]').length : 0,
      text: card?.innerText || '',
      ends: demo ? demo.ends.get(id) || 0 : 0,
      runs: [...document.querySelectorAll('.run')].map((node) => ({ id: node.dataset.runId, status: node.dataset.status })),
      late: Number(document.getElementById('event-count').dataset.late),
    };
  }, runId);
}

// The newest run in progress when it has just started (only agent_started shown), so that what
// the test does next lands well before the run could end by itself; with `click`, presses Stop
// for it in the same turn of the page's event loop. Resolves with its run id.
function catchRunJustStarted(page, { click }) {
  return waitFor('a run that has just started', () => page.evaluate((press) => {
    const stop = document.getElementById('stop');
    const runId = stop.dataset.targetRun;
    if (stop.disabled || !runId) return '';
    const card = document.querySelector(`.run[data-run-id="${CSS.escape(runId)}"]`);
    if (!card || card.querySelectorAll('[data-event-id]').length !== 1) return '';
    if (press) stop.click();
    return runId;
  }, click), { timeoutMs: 60000, intervalMs: 20 });
}

async function openPage(user, problems) {
  const page = await browser.newPage({ viewport: { width: 1100, height: 1400 } });
  page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
  page.on('console', (message) => {
    if (message.type() === 'error' || message.text().startsWith('agentwire:')) problems.push(message.text());
  });
  const token = await mintToken(user);
  await page.goto(`${gateway.url}/?token=${encodeURIComponent(token)}`);
  await page.waitForSelector('#connection[data-state="live"]', { timeout: 30000 });
  return page;
}

function describeFailure(error, page, name, problems, worker) {
  const file = path.join(dir, `${name}-failure.png`);
  return page.screenshot({ path: file, fullPage: true }).catch(() => {}).then(() => {
    error.message += `\nscreenshot: ${file}\nproblems: ${JSON.stringify(problems)}\n` +
      `${worker ? worker.tail() : ''}\n${supervisor.tail()}\n${gateway.tail()}`;
    return error;
  });
}

test('Stop on the run in progress: the run shows "stopped", with exactly one end', async () => {
  const user = 'stopper-0001';
  const problems = [];
  const observer = await observe(user);
  const page = await openPage(user, problems);
  const worker = startSimulator(broker.bootstrap, [
    '--users', '1', '--rate', '2', '--duration', '60s', '--user-prefix', 'stopper-', '--failure-ratio', '0',
  ]);
  workers.push(worker);
  try {
    assert.equal(await page.isDisabled('#stop'), true, 'no run yet: Stop is disabled');
    const runId = await catchRunJustStarted(page, { click: true });
    const clickedAt = Date.now();

    await waitFor(`run ${runId} stopped on the page`, async () => (await readRun(page, runId)).status === 'stopped',
      { timeoutMs: 10000, intervalMs: 50 });
    const stoppedAfterMs = Date.now() - clickedAt;
    let shown = await readRun(page, runId);
    assert.deepEqual(shown.endTexts, ['stopped'], shown.text);
    assert.equal(shown.outcome, 'cancelled');
    assert.match(shown.text, /stopped/);

    // Past the supervisor's --cancel-timeout: had it written a second end, it would be here.
    await sleep(4000);
    shown = await readRun(page, runId);
    assert.equal(shown.ends, 1, 'onRunEnd once for the run');
    assert.equal(shown.terminalItems, 1, 'one end on the page');
    assert.equal(shown.status, 'stopped');
    const ends = observer.ends(runId);
    assert.equal(ends.length, 1, `the gateway sent one end: ${JSON.stringify(ends)}`);
    assert.equal(ends[0].type, 'agent_failed');
    assert.equal(ends[0].agent_failed?.error_code, 'cancelled');
    assert.notEqual(ends[0].attributes?.ended_by, 'supervisor',
      `the worker honoured Stop itself (${stoppedAfterMs} ms after the click)`);
    const afterEnd = observer.events.slice(observer.events.indexOf(ends[0]) + 1).filter((e) => e.run_id === runId);
    assert.deepEqual(afterEnd, [], 'nothing of the run after its end');

    // The worker goes on with the user's next run.
    await waitFor('a later run on the page', async () => {
      const { runs } = await readRun(page, runId);
      return runs.some((run) => run.id !== runId);
    }, { timeoutMs: 20000, intervalMs: 100 });
    assert.equal(worker.exitStatus, null, 'the worker is still running');
    assert.deepEqual(problems, []);
  } catch (error) {
    throw await describeFailure(error, page, 'stop', problems, worker);
  } finally {
    observer.socket.close();
    await page.close();
    await worker.kill();
  }
});

test('a worker killed mid-run: the run shows "the agent stopped responding" within 10 s, one end', async () => {
  const user = 'crashed-0001';
  const problems = [];
  const observer = await observe(user);
  const page = await openPage(user, problems);
  const worker = startSimulator(broker.bootstrap, [
    '--users', '1', '--rate', '2', '--duration', '60s', '--user-prefix', 'crashed-', '--failure-ratio', '0',
    '--lease', '2s', '--heartbeat-interval', '500ms',
  ]);
  workers.push(worker);
  try {
    const runId = await catchRunJustStarted(page, { click: false });
    const killed = await worker.kill('SIGKILL');
    const killedAt = Date.now();
    assert.equal(killed.signal, 'SIGKILL');

    await waitFor(`run ${runId} lost on the page`, async () => (await readRun(page, runId)).status === 'lost',
      { timeoutMs: 10000, intervalMs: 50 });
    const lostAfterMs = Date.now() - killedAt;
    let shown = await readRun(page, runId);
    assert.deepEqual(shown.endTexts, ['the agent stopped responding'], shown.text);
    assert.equal(shown.outcome, 'worker_lost');
    assert.ok(lostAfterMs <= 10000, `shown ${lostAfterMs} ms after the kill`);

    await sleep(3000);  // a second end (there must be none) would arrive now
    shown = await readRun(page, runId);
    assert.equal(shown.ends, 1, 'onRunEnd once for the run');
    assert.equal(shown.terminalItems, 1, 'one end on the page');
    const ends = observer.ends(runId);
    assert.equal(ends.length, 1, `the gateway sent one end: ${JSON.stringify(ends)}`);
    assert.equal(ends[0].agent_failed?.error_code, 'worker_lost');
    assert.equal(ends[0].attributes?.ended_by, 'supervisor');
    // Every run of the user has ended: nothing left spinning.
    const { runs } = await readRun(page, runId);
    assert.deepEqual(runs.filter((run) => run.status === 'running'), [], JSON.stringify(runs));
    assert.equal(await page.isDisabled('#stop'), true);
    assert.deepEqual(problems, []);
  } catch (error) {
    throw await describeFailure(error, page, 'worker-lost', problems, worker);
  } finally {
    observer.socket.close();
    await page.close();
  }
});
