// A thread's own page in the demo (issue 23), in headless Chromium (Debian's, driven by
// playwright-core) against the real agentwire processes: the page opens a thread from its
// newest events (GET /v1/threads/{thread_id}/events), "Load older events" pages back to the
// thread's beginning, live events follow, and after a reload the same whole history is there
// again: every event of the thread once, in order, and nothing of other threads or users.
//
// AGENTWIRE_E2E_FAKE_GATEWAY=1 runs the same test against the stand-in gateway
// (support/fake_gateway.mjs) instead, without the binary.
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
import { FakeGateway, fakeToken } from './support/fake_gateway.mjs';
import { sleep, waitFor } from './support/wait.mjs';

const kFake = process.env.AGENTWIRE_E2E_FAKE_GATEWAY === '1';

let dir;
let broker;
let gateway;
let browser;
// What the test needs of the system: the page's origin, a token, and a way to publish.
const system = {};

before(async () => {
  dir = await tempDir('demo-thread');
  if (kFake) {
    gateway = await new FakeGateway().start();
    system.url = `http://127.0.0.1:${gateway.port}`;
    system.token = async (user) => fakeToken(user);
    system.publish = async (events) => {
      for (const event of events) gateway.publish({ emitted_at: new Date().toISOString(), ...event });
    };
  } else {
    broker = await startBroker(dir);
    gateway = await startGateway(broker.bootstrap);
    system.url = gateway.url;
    system.token = (user) => mintToken(user);
    system.publish = (events) => emit(broker.bootstrap, events);
  }
  browser = await launchChromium();
});

after(async () => {
  if (browser) await browser.close();
  if (gateway) await (kFake ? gateway.stop() : gateway.kill());
  if (broker) await broker.kill();
});

function readPage(page) {
  return page.evaluate(() => {
    const items = [...document.querySelectorAll('[data-event-id]')].map((node) => ({
      id: node.dataset.eventId,
      run: node.closest('[data-run-id]')?.dataset.runId || '',
      seq: Number(node.dataset.runSeq),
    }));
    const older = document.getElementById('load-older');
    return {
      items,
      runs: [...document.querySelectorAll('[data-run-id].run')].map((node) => node.dataset.runId),
      threads: [...document.querySelectorAll('[data-thread-id]')].map((node) => node.dataset.threadId),
      links: [...document.querySelectorAll('a.thread-link')].map((node) => node.getAttribute('href')),
      older: { hidden: older.hidden, disabled: older.disabled, state: older.dataset.state },
      state: document.getElementById('connection').dataset.state,
      count: Number(document.getElementById('event-count').dataset.count),
      warnings: document.querySelectorAll('.warning').length,
      notice: document.getElementById('notice').hidden ? '' : document.getElementById('notice').textContent,
      text: document.body.innerText,
    };
  });
}

// Clicks "Load older events" until the thread's beginning; returns how many pages it loaded.
async function loadAllOlder(page) {
  let pages = 0;
  for (;;) {
    const { older } = await waitFor('the older button settled', async () => {
      const shown = await readPage(page);
      return shown.older.state === 'idle' || shown.older.state === 'done' ? shown : null;
    });
    if (older.state === 'done') return pages;
    assert.ok(pages < 20, 'the pages end');
    const shownBefore = (await readPage(page)).items.length;
    await page.click('#load-older');
    pages++;
    // A page that may have more is never empty: the view grows by it.
    await waitFor('the older page shown', async () => {
      const shown = await readPage(page);
      return shown.older.state !== 'loading' && shown.items.length > shownBefore;
    });
  }
}

// Every event of `expected` shown exactly once, each run in run_seq order, newest run on top,
// and nothing else.
function assertWhole(shown, expected, what) {
  const ids = shown.items.map((item) => item.id);
  assert.deepEqual([...ids].sort(), expected.map((event) => event.event_id).sort(), `${what}: exactly the thread's events`);
  const runs = [...new Set(expected.map((event) => event.run_id))];
  assert.deepEqual(shown.runs, [...runs].reverse(), `${what}: newest run first`);
  for (const runId of runs) {
    const seqs = shown.items.filter((item) => item.run === runId).map((item) => item.seq);
    const want = expected.filter((event) => event.run_id === runId).map((event) => event.run_seq);
    assert.deepEqual(seqs, want, `${what}: ${runId} in run_seq order`);
  }
  assert.equal(shown.warnings, 0, `${what}: no gap or reordering flagged`);
  assert.equal(shown.count, expected.length, `${what}: the counter agrees`);
  assert.deepEqual(shown.threads, ['hist'], `${what}: only this thread`);
}

test("a thread's page shows its whole history page by page, goes live, and shows it all again after a reload", async () => {
  const page = await browser.newPage({ viewport: { width: 1100, height: 1400 } });
  const problems = [];
  page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
  page.on('console', (message) => {
    if (message.type() === 'error' || message.text().startsWith('agentwire:')) problems.push(message.text());
  });

  try {
    // The thread's history: three runs of alice's; her other thread and bob's run of the same
    // thread id land in the same topic between them.
    const history = [1, 2, 3].flatMap((n) =>
      runEvents({ user: 'alice', threadId: 'hist', runId: `hist-r${n}`, prefix: `hist-a${n}`, count: 8 }));
    const others = [
      ...runEvents({ user: 'alice', threadId: 'elsewhere', runId: 'else-r1', prefix: 'else-a', count: 5 }),
      ...runEvents({ user: 'bob', threadId: 'hist', runId: 'hist-rb', prefix: 'hist-b', count: 6 }),
    ];
    await system.publish([...history.slice(0, 8), ...others.slice(0, 6), ...history.slice(8), ...others.slice(6)]);

    // The all-threads view links each thread to its own page.
    const token = await system.token('alice');
    await page.goto(`${system.url}/?token=${encodeURIComponent(token)}`);
    await waitFor('both of alice’s threads', async () => {
      const { threads, state } = await readPage(page);
      return state === 'live' && threads.length === 2;
    }, { timeoutMs: 60000, intervalMs: 100 });
    const overview = await readPage(page);
    assert.ok(overview.links.includes('?thread_id=hist'), JSON.stringify(overview.links));
    assert.equal(overview.older.hidden, true, 'no paging in the all-threads view');

    // The thread's page, 10 events a page (the token stays in sessionStorage).
    await page.goto(`${system.url}/?thread_id=hist&limit=10`);
    await waitFor('the newest page, live', async () => {
      const { items, state } = await readPage(page);
      return state === 'live' && items.length === 10;
    }, { timeoutMs: 60000, intervalMs: 100 });
    let shown = await readPage(page);
    assert.deepEqual(shown.items.map((item) => item.id).sort(), history.slice(-10).map((e) => e.event_id).sort());
    assert.equal(shown.older.state, 'idle');
    assert.equal(await loadAllOlder(page), 2, '24 events in pages of 10: the newest, then two older');
    shown = await readPage(page);
    assert.equal(shown.older.disabled, true);
    assertWhole(shown, history, 'after paging back');

    // Live events of the thread follow, with nothing lost between the page and the stream.
    const live = runEvents({ user: 'alice', threadId: 'hist', runId: 'hist-r4', prefix: 'hist-a4', count: 4 });
    await system.publish([...live, ...runEvents({ user: 'alice', threadId: 'elsewhere', runId: 'else-r2', prefix: 'else-a2', count: 3 })]);
    const whole = [...history, ...live];
    await waitFor('the live run', async () => (await readPage(page)).items.length >= whole.length, { timeoutMs: 30000, intervalMs: 100 });
    await sleep(300);  // a duplicate would render now
    assertWhole(await readPage(page), whole, 'live');

    // A reload opens the thread again from its newest page; paging back gives the whole history.
    await page.reload();
    await waitFor('the newest page after the reload', async () => {
      const { items, state } = await readPage(page);
      return state === 'live' && items.length === 10;
    }, { timeoutMs: 60000, intervalMs: 100 });
    assert.equal(await loadAllOlder(page), 2, '28 events in pages of 10');
    await sleep(300);
    shown = await readPage(page);
    assertWhole(shown, whole, 'after the reload');
    assert.equal(shown.notice, '');
    assert.ok(!shown.text.includes('question from bob'), "none of bob's text");
    const counts = await page.evaluate(() => window.agentwireDemo.client.counts);
    assert.equal(counts.duplicates, 0);
    assert.deepEqual(problems, []);
    await page.screenshot({ path: path.join(dir, 'demo_thread.png'), fullPage: true });
  } catch (error) {
    const file = path.join(dir, 'demo_thread-failure.png');
    await page.screenshot({ path: file, fullPage: true }).catch(() => {});
    error.message += `\nscreenshot: ${file}\nproblems: ${JSON.stringify(problems)}` +
      (kFake ? '' : `\n${gateway.tail()}`);
    throw error;
  } finally {
    await page.close();
  }
});
