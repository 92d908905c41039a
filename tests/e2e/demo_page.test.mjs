// The demo page in headless Chromium (Debian's, driven by playwright-core) against the real
// agentwire processes: a run renders as it is published; the gateway is killed (SIGKILL),
// events are published while it is down, a new gateway starts on the same port, and the page
// reconnects by itself and shows them: every one of alice's events exactly once, in order,
// and none of bob's.
import assert from 'node:assert/strict';
import path from 'node:path';
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

let dir;
let broker;
let gateway;
let browser;

before(async () => {
  dir = await tempDir('demo');
  broker = await startBroker(dir);
  gateway = await startGateway(broker.bootstrap);
  browser = await launchChromium();
});

after(async () => {
  if (browser) await browser.close();
  if (gateway) await gateway.kill();
  if (broker) await broker.kill();
});

// What the page shows, read from the DOM: every rendered event and the card it sits in.
function readPage(page) {
  return page.evaluate(() => {
    const items = [...document.querySelectorAll('[data-event-id]')].map((node) => ({
      id: node.dataset.eventId,
      run: node.closest('[data-run-id]')?.dataset.runId || '',
      seq: Number(node.dataset.runSeq),
      arrival: Number(node.dataset.arrival),
    }));
    const runs = [...document.querySelectorAll('[data-run-id]')].map((node) => ({
      id: node.dataset.runId,
      status: node.dataset.status,
      thread: node.closest('[data-thread-id]')?.dataset.threadId,
    }));
    return {
      items,
      runs,
      state: document.getElementById('connection').dataset.state,
      count: Number(document.getElementById('event-count').dataset.count),
      warnings: document.querySelectorAll('.warning').length,
      text: document.body.innerText,
    };
  });
}

test('the demo page shows a run live, survives a gateway restart, and shows each event once', async () => {
  const page = await browser.newPage({ viewport: { width: 1100, height: 1400 } });
  const problems = [];
  page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
  page.on('console', (message) => {
    if (message.text().startsWith('agentwire:')) problems.push(message.text());
  });

  try {
    const token = await mintToken('alice');
    await page.goto(`${gateway.url}/?token=${encodeURIComponent(token)}`);
    await page.waitForSelector('#connection[data-state="live"]', { timeout: 30000 });
    assert.ok(!page.url().includes('token='), 'the page takes the token out of the address bar');

    // Run 1, first half, while the page watches; bob's run goes to the same topic.
    const run1 = runEvents({ user: 'alice', threadId: 'thread-a', runId: 'page-r1', prefix: 'page-a1', count: 12 });
    const run2 = runEvents({ user: 'alice', threadId: 'thread-b', runId: 'page-r2', prefix: 'page-a2', count: 9, agent: 'analyst' });
    const bob = runEvents({ user: 'bob', threadId: 'thread-a', runId: 'page-rb', prefix: 'page-b', count: 10 });
    await emit(broker.bootstrap, [...run1.slice(0, 6), ...bob.slice(0, 5)]);
    await waitFor('the first half of run 1 on the page', async () => {
      const { items } = await readPage(page);
      return items.filter((item) => item.run === 'page-r1').length === 6;
    });

    // The replica dies without a goodbye; events keep being published meanwhile.
    const port = gateway.port;
    const killed = await gateway.kill('SIGKILL');
    assert.equal(killed.signal, 'SIGKILL');
    await page.waitForSelector('#connection[data-state="reconnecting"]', { timeout: 30000 });
    await emit(broker.bootstrap, [...run1.slice(6), ...bob.slice(5), ...run2]);

    gateway = await startGateway(broker.bootstrap, port);
    const alice = [...run1, ...run2];
    await waitFor(`all ${alice.length} of alice's events on the page`, async () => {
      const { items, state } = await readPage(page);
      return state === 'live' && items.length >= alice.length;
    }, { timeoutMs: 60000, intervalMs: 200 });
    await new Promise((r) => setTimeout(r, 500));  // a duplicate would render now

    const shown = await readPage(page);
    const ids = shown.items.map((item) => item.id);
    for (const event of alice) {
      assert.equal(ids.filter((id) => id === event.event_id).length, 1, `${event.event_id} shown once`);
    }
    assert.equal(ids.length, alice.length, 'nothing else is shown');
    assert.ok(!ids.some((id) => id.startsWith('page-b')), "none of bob's events");
    assert.ok(!shown.text.includes('question from bob'), "none of bob's text");
    assert.deepEqual(shown.runs.map((run) => run.id).sort(), ['page-r1', 'page-r2']);
    assert.equal(shown.count, alice.length, 'the counter agrees');
    assert.equal(shown.warnings, 0, 'no gap or reordering flagged');
    for (const runId of ['page-r1', 'page-r2']) {
      const items = shown.items.filter((item) => item.run === runId);
      const byArrival = [...items].sort((a, b) => a.arrival - b.arrival).map((item) => item.seq);
      const expected = items.map((_, i) => i + 1);
      assert.deepEqual(byArrival, expected, `${runId} arrived in run_seq order`);
      assert.deepEqual(items.map((item) => item.seq), expected, `${runId} is shown in run_seq order`);
    }
    assert.deepEqual(
      Object.fromEntries(shown.runs.map((run) => [run.id, run.status])),
      { 'page-r1': 'completed', 'page-r2': 'completed' },
    );
    const counts = await page.evaluate(() => window.agentwireDemo.client.counts);
    assert.ok(counts.connections >= 2, `reconnected (${counts.connections} connections)`);
    assert.equal(counts.duplicates, 0);
    assert.deepEqual(problems, []);

    // A reload keeps the token (sessionStorage) and rebuilds the same view from the log.
    await page.reload();
    await waitFor('the same events after a reload', async () => {
      const { items, state } = await readPage(page);
      return state === 'live' && items.length >= alice.length;
    }, { timeoutMs: 60000, intervalMs: 200 });
    await new Promise((r) => setTimeout(r, 300));
    const reloaded = await readPage(page);
    assert.deepEqual(reloaded.items.map((item) => item.id).sort(), [...ids].sort());
    assert.deepEqual(problems, []);
    await page.screenshot({ path: path.join(dir, 'demo_page.png'), fullPage: true });
  } catch (error) {
    const file = path.join(dir, 'demo_page-failure.png');
    await page.screenshot({ path: file, fullPage: true }).catch(() => {});
    error.message += `\nscreenshot: ${file}\nproblems: ${JSON.stringify(problems)}\n${gateway.tail()}`;
    throw error;
  } finally {
    await page.close();
  }
});

test('a rejected token shows Unauthorized and the token form, and a good one connects', async () => {
  // Browsers do not expose a refused upgrade's status, so the client asks the gateway with a
  // plain GET /v1/events, which runs the upgrade's Origin and token checks.
  const page = await browser.newPage({ viewport: { width: 1000, height: 700 } });
  try {
    const forged = `${(await mintToken('alice')).slice(0, -4)}AAAA`;
    await page.goto(`${gateway.url}/?token=${encodeURIComponent(forged)}`);
    await page.waitForSelector('#connection[data-state="unauthorized"]', { timeout: 30000 });
    await page.waitForSelector('#token-panel:not([hidden])');
    assert.match(await page.textContent('#token-error'), /rejected/);

    await page.fill('#token-input', await mintToken('alice'));
    await page.click('#token-form button[type="submit"]');
    await page.waitForSelector('#connection[data-state="live"]', { timeout: 30000 });
    assert.equal(await page.isHidden('#token-panel'), true);
  } catch (error) {
    const file = path.join(dir, 'unauthorized-failure.png');
    await page.screenshot({ path: file, fullPage: true }).catch(() => {});
    error.message += `\nscreenshot: ${file}`;
    throw error;
  } finally {
    await page.close();
  }
});
