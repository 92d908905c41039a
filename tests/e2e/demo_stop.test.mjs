// The demo page's Stop button and run ends in headless Chromium (Debian's, via playwright-core)
// against the stand-in gateway, which lets the test decide every answer and publish the ends
// and late events a real system produces only under failure. The same page against the real
// gateway, supervisor and worker is run_stop.test.mjs.
import assert from 'node:assert/strict';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';

import { launchChromium } from './support/agentwire.mjs';
import { FakeGateway, fakeToken } from './support/fake_gateway.mjs';
import { sleep, waitFor } from './support/wait.mjs';

let gateway;
let browser;

before(async () => {
  gateway = await new FakeGateway().start();
  browser = await launchChromium();
});

after(async () => {
  if (browser) await browser.close();
  if (gateway) await gateway.stop();
});

let sequence = 0;
function event(runId, runSeq, type, body = {}) {
  sequence++;
  return {
    event_id: `ds-${sequence}`,
    type,
    user_id: 'alice',
    thread_id: 'thread-stop',
    run_id: runId,
    run_seq: runSeq,
    emitted_at: new Date().toISOString(),
    agent_name: 'researcher',
    [type]: body,
  };
}

// What the page shows about runs and the Stop button, read from the DOM and the page's client.
function readPage(page) {
  return page.evaluate(() => {
    const runs = Object.fromEntries([...document.querySelectorAll('[data-run-id].run')].map((node) => [
      node.dataset.runId,
      {
        status: node.dataset.status,
        outcome: node.dataset.outcome || '',
        end: [...node.querySelectorAll('.run-end-text')].map((end) => end.textContent),
        note: node.querySelector('.run-note')?.textContent || '',
        items: node.querySelectorAll('[data-event-id]').length,
        text: node.innerText,
      },
    ]));
    const stop = document.getElementById('stop');
    const demo = window.agentwireDemo;
    return {
      runs,
      stop: { disabled: stop.disabled, hidden: stop.hidden, runId: stop.dataset.targetRun, text: stop.textContent },
      ends: demo ? Object.fromEntries(demo.ends) : {},
      late: Number(document.getElementById('event-count').dataset.late),
      state: document.getElementById('connection').dataset.state,
    };
  });
}

test('Stop stops the run in progress; a stopped and a lost run say so; late events never show', async () => {
  const page = await browser.newPage({ viewport: { width: 1100, height: 1200 } });
  const problems = [];
  page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
  page.on('console', (message) => {
    if (message.type() === 'error') problems.push(message.text());
  });
  try {
    await page.goto(`http://127.0.0.1:${gateway.port}/?token=${encodeURIComponent(fakeToken('alice'))}`);
    await page.waitForSelector('#connection[data-state="live"]', { timeout: 30000 });
    let shown = await readPage(page);
    assert.equal(shown.stop.hidden, false);
    assert.equal(shown.stop.disabled, true, 'no run in progress: Stop is disabled');

    // Run 1 starts: Stop targets it.
    gateway.publish(event('run-1', 1, 'agent_started', { input: 'question 1' }));
    gateway.publish(event('run-1', 2, 'agent_thinking', { text: 'hmm' }));
    await waitFor('Stop enabled for run-1', async () => {
      const { stop } = await readPage(page);
      return !stop.disabled && stop.runId === 'run-1';
    });

    // The gateway holds its answer: the button says the Stop is on its way.
    let answer;
    gateway.cancelAnswer = () => new Promise((resolve) => {
      answer = resolve;
    });
    await page.click('#stop');
    await waitFor('the cancel frame', () => gateway.cancels.length === 1);
    assert.deepEqual(gateway.cancels.map((c) => [c.via, c.user, c.runId]), [['frame', 'alice', 'run-1']]);
    shown = await readPage(page);
    assert.equal(shown.stop.disabled, true, 'no second click while the Stop is on its way');
    assert.equal(shown.stop.text, 'Stopping…');
    answer({ result: 'requested' });
    await waitFor('the note', async () => (await readPage(page)).runs['run-1'].note === 'Stop requested');

    // The worker honours it: agent_failed cancelled. Then a zombie step and a second end of the
    // same run (they lost the race): never shown.
    gateway.publish(event('run-1', 3, 'agent_failed', { error_code: 'cancelled', message: 'stopped by the user' }));
    gateway.publish(event('run-1', 4, 'agent_thinking', { text: 'zombie' }));
    gateway.publish(event('run-1', 4, 'agent_completed', { result: 'too late' }));
    await waitFor('run-1 stopped', async () => (await readPage(page)).runs['run-1']?.status === 'stopped');
    await waitFor('two late events', async () => (await readPage(page)).late === 2);
    shown = await readPage(page);
    assert.deepEqual(shown.runs['run-1'].end, ['stopped']);
    assert.equal(shown.runs['run-1'].outcome, 'cancelled');
    assert.equal(shown.runs['run-1'].items, 3, 'the late events are not on the page');
    assert.ok(!shown.runs['run-1'].text.includes('zombie'));
    assert.ok(!shown.runs['run-1'].text.includes('too late'));
    assert.deepEqual(shown.ends, { 'run-1': 1 }, 'exactly one end');
    assert.equal(shown.stop.disabled, true, 'nothing in progress any more');

    // Run 2: its worker dies; the supervisor ends it.
    gateway.publish(event('run-2', 1, 'agent_started', { input: 'question 2' }));
    await waitFor('Stop targets run-2', async () => (await readPage(page)).stop.runId === 'run-2');
    gateway.publish(event('run-2', 2, 'agent_failed', { error_code: 'worker_lost', message: 'no heartbeat for 15 s' }));
    await waitFor('run-2 lost', async () => (await readPage(page)).runs['run-2']?.status === 'lost');
    shown = await readPage(page);
    assert.deepEqual(shown.runs['run-2'].end, ['the agent stopped responding']);
    assert.equal(shown.runs['run-2'].outcome, 'worker_lost');
    assert.deepEqual(shown.ends, { 'run-1': 1, 'run-2': 1 });
    assert.equal(shown.stop.disabled, true);

    // Run 3: the gateway knows it has ended already (the end is still on its way to the page):
    // the button waits for the end; an unknown run re-enables it with a note.
    gateway.publish(event('run-3', 1, 'agent_started', { input: 'question 3' }));
    await waitFor('Stop targets run-3', async () => (await readPage(page)).stop.runId === 'run-3');
    gateway.cancelAnswer = () => ({ result: 'unknown_run' });
    await page.click('#stop');
    await waitFor('the unknown-run note', async () => /does not know/.test((await readPage(page)).runs['run-3'].note));
    shown = await readPage(page);
    assert.equal(shown.stop.disabled, false, 'Stop can be tried again');
    assert.equal(shown.runs['run-3'].status, 'running');
    gateway.cancelAnswer = null;
    gateway.publish(event('run-3', 2, 'agent_completed', { result: 'answer 3', duration_ms: 10 }));
    await waitFor('run-3 completed', async () => (await readPage(page)).runs['run-3']?.status === 'completed');
    await sleep(100);
    shown = await readPage(page);
    assert.deepEqual(shown.ends, { 'run-1': 1, 'run-2': 1, 'run-3': 1 });
    assert.deepEqual(shown.runs['run-3'].end, []);
    assert.equal(shown.late, 2);

    // A reload rebuilds the same view from the log: one end per run, late events dropped again.
    await page.reload();
    await waitFor('three runs after the reload', async () => {
      const { runs, state } = await readPage(page);
      return state === 'live' && Object.keys(runs).length === 3 && runs['run-3'].status === 'completed';
    });
    shown = await readPage(page);
    assert.deepEqual(shown.ends, { 'run-1': 1, 'run-2': 1, 'run-3': 1 });
    assert.deepEqual(
      Object.fromEntries(Object.entries(shown.runs).map(([id, run]) => [id, run.status])),
      { 'run-1': 'stopped', 'run-2': 'lost', 'run-3': 'completed' },
    );
    assert.equal(shown.late, 2);
    assert.deepEqual(problems, []);
  } catch (error) {
    const file = path.join(os.tmpdir(), 'agentwire-demo_stop-failure.png');
    await page.screenshot({ path: file, fullPage: true }).catch(() => {});
    error.message += `\nscreenshot: ${file}\nproblems: ${JSON.stringify(problems)}`;
    throw error;
  } finally {
    await page.close();
  }
});
