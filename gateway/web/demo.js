// The demo chat page: shows a user's agent runs as they unfold, grouped by thread, newest
// first, over the agentwire client. Event text is untrusted (model and tool output), so it
// only ever reaches the page through textContent, never as HTML.
//
// Page query: token=<jwt> (moved to sessionStorage and removed from the address bar),
// from=earliest|live (default earliest: every retained event of the user; live: from now on,
// and after a reload from where the page left off), thread_id=, run_id=.
//
// One thread (thread_id=T, the link on each thread's title): the page opens the thread with
// client.loadThread (its newest `limit=` events, 50 by default, then its live events, no gap),
// and "Load older events" pages back (client.loadOlder) until the thread's beginning. The
// gateway serves those pages from Kafka or, past Kafka's retention, from its archive, so a
// reload shows the whole thread, not only what the log still retains.
//
// Stop: the top bar's Stop button asks the gateway to stop the newest run in progress
// (client.cancel); the run then ends like any other, with agent_failed `cancelled` ("stopped").
// A run the supervisor ended because its worker went silent shows "the agent stopped
// responding". A run ends once, at its first end (docs/runs.md): later events of it never
// reach the page (the client drops them; the counter shows how many).
import { AgentwireClient, ClientState, runOutcome, tokenSubject } from './agentwire-client.js';

const kTokenKey = 'agentwire:demo:token';
const kMaxRuns = 200;  // older run cards are dropped so a long session stays light
const kPageSize = 50;  // events per page of a thread's history

const byId = (id) => document.getElementById(id);

function make(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function sessionGet(key) {
  try {
    return sessionStorage.getItem(key) || '';
  } catch {
    return '';
  }
}

function sessionSet(key, value) {
  try {
    if (value) sessionStorage.setItem(key, value);
    else sessionStorage.removeItem(key);
  } catch {
    // storage blocked: the token lives only as long as the page
  }
}

// Reads the token from ?token= once, keeps it for reloads, and takes it out of the address bar
// so it does not end up in bookmarks, screenshots or shared links.
function takeToken() {
  const params = new URLSearchParams(location.search);
  const fromUrl = params.get('token');
  if (!fromUrl) return sessionGet(kTokenKey);
  sessionSet(kTokenKey, fromUrl);
  params.delete('token');
  const rest = params.toString();
  history.replaceState(null, '', `${location.pathname}${rest ? `?${rest}` : ''}${location.hash}`);
  return fromUrl;
}

function formatTime(rfc3339) {
  const date = new Date(rfc3339);
  return Number.isNaN(date.getTime()) ? '' : date.toLocaleTimeString([], { hour12: false });
}

function formatDuration(ms) {
  const value = Number(ms) || 0;
  return value >= 10000 ? `${(value / 1000).toFixed(1)} s` : `${value} ms`;
}

// Tool arguments are usually JSON text: indent them for reading, leave anything else as is.
function pretty(text) {
  if (!text) return '';
  try {
    return JSON.stringify(JSON.parse(text), null, 2);
  } catch {
    return text;
  }
}

/** One run card and what it needs to place later events (tool results, streamed text). */
class RunCard {
  constructor(event) {
    this.runId = event.run_id;
    this.lastSeq = 0;
    this.events = 0;
    this.tools = new Map();  // tool_call_id (or tool name) -> open tool block
    this.stream = null;  // the answer bubble that message deltas are appended to
    this.lastStream = null;

    this.node = make('article', 'run');
    this.node.dataset.runId = event.run_id;
    this.node.dataset.status = 'running';
    const head = make('header', 'run-head');
    this.agent = make('span', 'run-agent', event.agent_name || 'agent');
    this.badge = make('span', 'badge badge-running', 'running');
    const id = make('span', 'run-id', event.run_id);
    id.title = 'run id';
    this.time = make('time', 'run-time', formatTime(event.emitted_at));
    this.time.dateTime = event.emitted_at || '';
    this.note = make('span', 'run-note');
    this.note.hidden = true;
    head.append(this.agent, this.badge, id, this.note, this.time);
    this.body = make('div', 'run-body');
    this.foot = make('footer', 'run-foot', '');
    this.node.append(head, this.body, this.foot);
  }

  add(event, arrival) {
    this.checkOrder(event);
    this.events++;
    if (event.agent_name) this.agent.textContent = event.agent_name;
    const item = this.render(event);
    item.classList.add('item');
    item.dataset.eventId = event.event_id || '';
    item.dataset.runSeq = String(event.run_seq ?? '');
    item.dataset.type = event.type || '';
    item.dataset.arrival = String(arrival);
    item.title = `#${event.run_seq} ${event.type} · ${event.emitted_at || ''}`;
    if (event.truncated) item.append(make('span', 'meta truncated', ` [${(event.truncated.fields || []).join(', ')} truncated: ${event.truncated.original_bytes} bytes cut to fit]`));
    this.foot.textContent = `${this.events} event${this.events === 1 ? '' : 's'} · last #${event.run_seq}`;
  }

  // The gateway delivers a run's events in run_seq order; show it plainly if that ever breaks
  // (or if this page started watching mid-run, which is not an error).
  checkOrder(event) {
    const seq = Number(event.run_seq) || 0;
    if (this.lastSeq > 0 && seq !== this.lastSeq + 1) {
      const text =
        seq <= this.lastSeq
          ? `out of order: #${seq} after #${this.lastSeq}`
          : `missing events #${this.lastSeq + 1}–#${seq - 1}`;
      this.body.append(make('div', 'warning', text));
    }
    if (seq > this.lastSeq) this.lastSeq = seq;
  }

  get running() {
    return this.node.dataset.status === 'running';
  }

  // What became of a Stop the user asked for (until the run's end arrives).
  setNote(text) {
    this.note.textContent = text || '';
    this.note.hidden = !text;
  }

  stopRequested() {
    this.node.dataset.stop = 'requested';
    if (this.running) this.badge.textContent = 'stopping…';
  }

  stopFailed(text) {
    delete this.node.dataset.stop;
    if (this.running) this.badge.textContent = 'running';
    this.setNote(text);
  }

  setStatus(status, text) {
    this.setNote('');
    this.node.dataset.status = status;
    this.badge.className = `badge badge-${status}`;
    this.badge.textContent = text || status;
    // A run that ended leaves no tool running: say the result never came.
    for (const open of this.tools.values()) {
      open.block.classList.replace('tool-running', 'tool-unfinished');
      open.status.textContent = 'no result';
    }
    this.tools.clear();
  }

  render(event) {
    const body = event[event.type] || {};
    if (event.type !== 'message_delta') this.stream = null;
    switch (event.type) {
      case 'agent_started': {
        const item = make('div', 'input');
        item.append(make('div', 'bubble bubble-user', body.input || '(no input)'));
        if (body.model) item.append(make('div', 'meta', `model ${body.model}`));
        this.body.append(item);
        return item;
      }
      case 'agent_thinking': {
        const item = make('div', 'thinking', body.text);
        this.body.append(item);
        return item;
      }
      case 'tool_executing':
        return this.toolCall(event, body);
      case 'tool_completed':
        return this.toolResult(body);
      case 'message_delta': {
        if (!this.stream) {
          this.stream = make('div', 'bubble bubble-agent stream');
          this.lastStream = this.stream;
          this.body.append(this.stream);
        }
        const item = make('span', 'delta', body.text);
        this.stream.append(item);
        return item;
      }
      case 'agent_completed': {
        this.setStatus('completed');
        const item = make('div', 'final');
        const streamed = this.lastStream ? this.lastStream.textContent.trim() : '';
        if (streamed && streamed === (body.result || '').trim()) {
          this.lastStream.classList.add('answer');  // the streamed text was the answer
        } else if (body.result) {
          item.append(make('div', 'bubble bubble-agent answer', body.result));
        }
        item.append(make('div', 'meta', `completed in ${formatDuration(body.duration_ms)}`));
        this.body.append(item);
        return item;
      }
      case 'agent_failed': {
        const outcome = runOutcome(event);
        if (outcome === 'cancelled') return this.end('stopped', 'stopped', 'stopped', outcome, body.message);
        if (outcome === 'worker_lost') {
          return this.end('lost', 'lost', 'the agent stopped responding', outcome, body.message);
        }
        this.setStatus('failed');
        const item = make('div', 'failure');
        item.append(make('span', 'failure-code', body.error_code || 'failed'));
        item.append(make('span', 'failure-message', body.message || ''));
        this.body.append(item);
        return item;
      }
      default: {
        // A body type newer than this page: show it raw rather than hide it.
        const item = make('div', 'unknown');
        item.append(make('span', 'meta', event.type || 'event'), make('pre', '', JSON.stringify(body)));
        this.body.append(item);
        return item;
      }
    }
  }

  // An end that is not the agent's own answer or error: plain text a user understands, with
  // the gateway's message (if any) beside it.
  end(status, badge, text, outcome, detail) {
    this.setStatus(status, badge);
    const item = make('div', `run-end run-end-${status}`);
    item.dataset.outcome = outcome;
    item.append(make('span', 'run-end-text', text));
    if (detail) item.append(make('span', 'meta', detail));
    this.body.append(item);
    return item;
  }

  toolCall(event, body) {
    const block = make('div', 'tool tool-running');
    const head = make('div', 'tool-head');
    const status = make('span', 'tool-status', 'running…');
    head.append(make('span', 'tool-name', body.tool_name || 'tool'), status);
    const call = make('div', 'tool-call');
    if (body.input) call.append(make('pre', 'tool-input', pretty(body.input)));
    block.append(head, call);
    this.body.append(block);
    this.tools.set(body.tool_call_id || `name:${body.tool_name}`, { block, status });
    return call;
  }

  toolResult(body) {
    const key = body.tool_call_id || `name:${body.tool_name}`;
    let open = this.tools.get(key);
    this.tools.delete(key);
    if (!open) {
      // The call itself came before this page started watching.
      const block = make('div', 'tool');
      const status = make('span', 'tool-status');
      const head = make('div', 'tool-head');
      head.append(make('span', 'tool-name', body.tool_name || 'tool'), status);
      block.append(head);
      this.body.append(block);
      open = { block, status };
    }
    const failed = Boolean(body.error);
    open.block.classList.remove('tool-running');
    open.block.classList.add(failed ? 'tool-failed' : 'tool-ok');
    open.status.textContent = `${failed ? 'error · ' : ''}${Number(body.duration_ms) || 0} ms`;
    const result = make('div', 'tool-result');
    if (failed) result.append(make('pre', 'tool-error', body.error));
    else result.append(make('pre', 'tool-output', body.output || '(no output)'));
    open.block.append(result);
    return result;
  }
}

/**
 * Every run on the page, grouped by thread; newest threads and runs first. `maxRuns` bounds the
 * cards kept (a thread's own page keeps all it loaded); `linkThreads` makes each thread's title
 * a link to the thread's own page.
 */
class Timeline {
  constructor(root, empty, { maxRuns = kMaxRuns, linkThreads = false } = {}) {
    this.root = root;
    this.empty = empty;
    this.maxRuns = maxRuns;
    this.linkThreads = linkThreads;
    this.threads = new Map();  // thread id -> {section, list, runs}
    this.runs = new Map();  // run id -> RunCard, oldest first (for pruning)
    this.arrivals = 0;
  }

  clear() {
    this.root.replaceChildren();
    this.threads.clear();
    this.runs.clear();
    this.empty.hidden = false;
  }

  add(event) {
    let card = this.runs.get(event.run_id);
    if (!card) card = this.newRun(event);
    card.add(event, this.arrivals++);
    // The first end is the run's (the client never passes on a later one).
    const outcome = runOutcome(event);
    if (outcome && !card.node.dataset.outcome) card.node.dataset.outcome = outcome;
  }

  newRun(event) {
    const threadId = event.thread_id || '';
    let thread = this.threads.get(threadId);
    if (!thread) {
      const section = make('section', 'thread');
      section.dataset.threadId = threadId;
      const title = make('h2', 'thread-title');
      const label = make(this.linkThreads && threadId ? 'a' : 'span', 'thread-id', threadId || '(none)');
      if (label.tagName === 'A') {
        label.classList.add('thread-link');
        label.href = `?${new URLSearchParams({ thread_id: threadId })}`;
        label.title = 'Open this thread: its whole history, page by page';
      }
      title.append(make('span', 'thread-label', 'Thread'), label);
      const list = make('div', 'thread-runs');
      section.append(title, list);
      thread = { section, list, runs: 0 };
      this.threads.set(threadId, thread);
    }
    this.root.prepend(thread.section);  // the thread with the newest run goes on top
    const card = new RunCard(event);
    card.threadId = threadId;
    thread.list.prepend(card.node);
    thread.runs++;
    this.runs.set(event.run_id, card);
    this.empty.hidden = true;
    if (this.runs.size > this.maxRuns) this.dropOldest();
    return card;
  }

  /** The newest run still in progress, or null. */
  inProgress() {
    let newest = null;
    for (const card of this.runs.values()) if (card.running) newest = card;
    return newest;
  }

  dropOldest() {
    const [runId, card] = this.runs.entries().next().value;
    this.runs.delete(runId);
    card.node.remove();
    const thread = this.threads.get(card.threadId);
    if (thread && --thread.runs === 0) {
      thread.section.remove();
      this.threads.delete(card.threadId);
    }
  }
}

class ConnectionView {
  constructor(node, text) {
    this.node = node;
    this.text = text;
    this.timer = null;
  }

  show(state, info) {
    clearInterval(this.timer);
    this.timer = null;
    this.node.dataset.state = state;
    this.node.title = info.reason ? `last close: ${info.code || ''} ${info.reason}` : '';
    switch (state) {
      case ClientState.CONNECTING:
        this.text.textContent = 'Connecting…';
        break;
      case ClientState.LIVE:
        this.text.textContent = 'Live';
        break;
      case ClientState.RECONNECTING: {
        const tick = () => {
          const seconds = Math.ceil((info.retryAt - Date.now()) / 1000);
          this.text.textContent = seconds > 0 ? `Reconnecting in ${seconds}s` : 'Reconnecting…';
        };
        tick();
        this.timer = setInterval(tick, 250);
        break;
      }
      case ClientState.UNAUTHORIZED:
        this.text.textContent = 'Unauthorized';
        break;
      default:
        this.text.textContent =
          info.status === 403 ? 'Forbidden' : info.status ? `Rejected (${info.status})` : 'Disconnected';
    }
  }
}

// The page size from limit= (1..1000), else kPageSize.
function pageSize(text) {
  const value = Number(text);
  return Number.isInteger(value) && value >= 1 && value <= 1000 ? value : kPageSize;
}

function main() {
  const params = new URLSearchParams(location.search);
  // One thread's own page; with run_id= it is a subscription to that run instead.
  const threadId = params.get('run_id') ? '' : params.get('thread_id') || '';
  const limit = pageSize(params.get('limit'));
  const timeline = new Timeline(byId('threads'), byId('empty'),
    threadId ? { maxRuns: Infinity } : { linkThreads: true });
  const connection = new ConnectionView(byId('connection'), byId('connection-text'));
  const counter = byId('event-count');
  const notice = byId('notice');
  const stop = byId('stop');
  const stopping = new Set();  // run ids whose Stop was requested and whose end has not come
  const ends = new Map();  // run id -> how many times onRunEnd reported it (1, by the contract)
  const older = byId('load-older');
  let threadEvents = [];  // a thread's page: every event shown, oldest first
  let threadOpened = false;  // its newest page has arrived (loadOlder has a place to start)
  let client = null;

  const showNotice = (text) => {
    notice.textContent = text || '';
    notice.hidden = !text;
  };

  const updateCounter = () => {
    const counts = client ? client.counts : { events: 0, duplicates: 0, lateEvents: 0 };
    const { duplicates, lateEvents } = counts;
    // A thread's page counts what it shows: the pages loaded and the live events.
    const events = threadId ? threadEvents.length : counts.events;
    counter.dataset.count = String(events);
    counter.dataset.duplicates = String(duplicates);
    counter.dataset.late = String(lateEvents);
    counter.textContent = `${events} event${events === 1 ? '' : 's'}` +
      (duplicates ? ` · ${duplicates} duplicate${duplicates === 1 ? '' : 's'} dropped` : '') +
      (lateEvents ? ` · ${lateEvents} late event${lateEvents === 1 ? '' : 's'} of ended runs dropped` : '');
  };

  // The Stop button targets the newest run in progress; disabled when there is none, or while
  // its Stop is on its way.
  const updateStop = () => {
    const card = client ? timeline.inProgress() : null;
    const pending = Boolean(card) && stopping.has(card.runId);
    stop.disabled = !card || pending;
    stop.dataset.targetRun = card ? card.runId : '';
    stop.textContent = pending ? 'Stopping…' : 'Stop';
    stop.title = card ? `Stop run ${card.runId}` : 'No run in progress';
  };

  // "Load older events": idle (more may exist), loading, done (the thread's beginning), or
  // waiting for the thread's newest page.
  const updateOlder = (loading) => {
    older.hidden = !threadId || !client;
    let state = 'waiting';
    if (loading) state = 'loading';
    else if (threadOpened) state = client && client.hasOlder ? 'idle' : 'done';
    older.dataset.state = state;
    older.disabled = state !== 'idle';
    older.textContent = {
      waiting: 'Load older events',
      idle: 'Load older events',
      loading: 'Loading older events…',
      done: 'Beginning of the thread',
    }[state];
  };

  const showMissing = (missing) => {
    if (!missing || missing.length === 0) return;
    const holes = missing.map((m) => `offsets ${m.from_offset}–${m.to_offset - 1} of partition ${m.partition}`);
    showNotice(`Some events of this history no longer exist anywhere (${holes.join(', ')}); everything else is shown.`);
  };

  // A thread's page is rebuilt from its events when older ones arrive: a run that started
  // before the loaded page is then shown from its start.
  const rebuild = () => {
    timeline.clear();
    for (const event of threadEvents) timeline.add(event);
    for (const runId of stopping) {
      const card = timeline.runs.get(runId);
      if (card) card.stopRequested();
    }
    updateStop();
  };

  const openThread = async () => {
    const current = client;
    threadOpened = false;
    updateOlder(false);
    try {
      const opened = await current.loadThread(threadId, { limit });
      if (current !== client) return;
      threadOpened = true;
      showMissing(opened.missing);
    } catch (error) {
      // 401/403/404 show through the state change; AbortError: something newer took over.
      if (current === client && error.name !== 'AbortError' && !error.status) {
        showNotice(`Could not open the thread: ${error.message}`);
      }
    }
    updateOlder(false);
  };

  const loadOlder = async () => {
    const current = client;
    if (!current || older.dataset.state !== 'idle') return;
    updateOlder(true);
    try {
      const page = await current.loadOlder({ limit });
      if (current !== client) return;
      if (page.events.length > 0) {
        threadEvents = [...page.events, ...threadEvents];
        rebuild();
      }
      showMissing(page.missing);
    } catch (error) {
      if (current === client && error.name !== 'AbortError') {
        showNotice(`Could not load older events: ${error.message}`);
      }
    }
    updateOlder(false);
    updateCounter();
  };

  const requestStop = async (runId) => {
    const card = timeline.runs.get(runId);
    if (!client || !card) return;
    stopping.add(runId);
    card.stopRequested();
    updateStop();
    let answer;
    try {
      answer = await client.cancel(runId);
    } catch (error) {
      answer = { result: 'error', message: error.message };
    }
    if (answer.result === 'requested' || answer.result === 'run_ended') {
      // The end arrives as an event (stopped, or the agent's own end if it was faster).
      if (card.running) card.setNote('Stop requested');
      return;
    }
    stopping.delete(runId);
    const why = {
      unknown_run: 'Stop: the gateway does not know this run',
      control_unavailable: 'Stop could not be passed on; try again',
      bad_run_id: 'Stop: not a valid run id',
    }[answer.result] || `Stop failed: ${answer.message || answer.result}`;
    card.stopFailed(why);
    updateStop();
  };

  const askForToken = (error) => {
    byId('token-panel').hidden = false;
    byId('token-error').hidden = !error;
    byId('token-error').textContent = error || '';
    byId('replay').hidden = true;
    byId('sign-out').hidden = true;
    stop.hidden = true;
    older.hidden = true;
    byId('empty').hidden = true;
    byId('token-input').focus();
  };

  const start = (token) => {
    byId('token-panel').hidden = true;
    byId('replay').hidden = false;
    byId('sign-out').hidden = false;
    stop.hidden = false;
    const user = byId('user');
    const name = tokenSubject(token);
    user.textContent = name;
    user.hidden = !name;
    timeline.empty.hidden = false;

    const startFrom = params.get('from') === 'live' ? 'live' : 'earliest';
    client = new AgentwireClient({
      token,
      threadId: params.get('thread_id') || '',
      runId: params.get('run_id') || '',
      startFrom,
      onEvent: (event) => {
        if (threadId) threadEvents.push(event);
        timeline.add(event);
        updateCounter();
        updateStop();
      },
      onLateEvent: updateCounter,
      onRunEnd: ({ runId, outcome }) => {
        ends.set(runId, (ends.get(runId) || 0) + 1);
        stopping.delete(runId);
        const card = timeline.runs.get(runId);
        if (card) card.node.dataset.outcome = outcome;
        updateStop();
      },
      onReady: ({ replayed }) => {
        connection.node.title = `caught up: ${replayed} event${replayed === 1 ? '' : 's'} replayed`;
        if (threadId) {
          // After a reset the client fetched the thread's newest page again by itself.
          threadOpened = true;
          updateOlder(older.dataset.state === 'loading');
        }
      },
      onReset: ({ reason, missing }) => {
        if (missing) {
          // Only those offsets are gone; the view stays and the stream goes on after them.
          showMissing([missing]);
          return;
        }
        if (reason === 'catchup_limit') {
          // The catch-up continues on this connection from the gateway's bound.
          showNotice('Showing the most recent events; older ones are in the log (agentwire replay).');
          return;
        }
        clearView();
        showNotice(threadId
          ? 'The saved position is no longer valid; showing the thread from its newest events again.'
          : 'The saved position is older than the retained history; showing what the log still holds.');
      },
      onStateChange: (state, info) => {
        connection.show(state, info);
        updateCounter();
        if (state === ClientState.UNAUTHORIZED) {
          sessionSet(kTokenKey, '');  // a reload must not try it again
          askForToken(info.message ? `The gateway rejected the token: ${info.message}` :
            'The gateway rejected the token (expired, or signed with another secret).');
        } else if (state === ClientState.CLOSED && info.status) {
          showNotice(`The gateway refused the connection (${info.status}${info.message ? `: ${info.message}` : ''}).`);
        }
      },
    });
    window.agentwireDemo = { client, timeline, ends };
    if (threadId) {
      // A thread's page opens from its newest events (history from any tier, then live).
      openThread();
    } else {
      // The view is built from the stream alone, so a freshly loaded page that replays history
      // starts from the earliest event rather than from the cursor of its previous life (which
      // would show only what came after it). With from=live, the stored cursor is resumed.
      if (startFrom === 'earliest') client.forgetCursor();
      client.connect();
    }
    updateStop();
  };

  // The view, and what the page knows about runs, start over (replay, another token, reset).
  const clearView = () => {
    timeline.clear();
    threadEvents = [];
    threadOpened = false;
    stopping.clear();
    ends.clear();
    updateCounter();
    updateStop();
    updateOlder(false);
  };

  older.addEventListener('click', loadOlder);

  stop.addEventListener('click', () => {
    if (stop.dataset.targetRun) requestStop(stop.dataset.targetRun);
  });

  byId('token-form').addEventListener('submit', (submit) => {
    submit.preventDefault();
    const token = byId('token-input').value.trim();
    if (!token) return;
    sessionSet(kTokenKey, token);
    if (client) client.close();
    clearView();
    start(token);
  });

  byId('replay').addEventListener('click', () => {
    if (!client) return;
    client.close();
    client.forgetCursor({ startFrom: 'earliest' });
    clearView();
    showNotice('');
    if (threadId) openThread();
    else client.connect();
  });

  byId('sign-out').addEventListener('click', () => {
    if (client) client.close();
    client = null;
    sessionSet(kTokenKey, '');
    clearView();
    askForToken('');
  });

  if (threadId) {
    byId('thread-nav').hidden = false;
    byId('replay').textContent = 'Reload thread';
    byId('replay').title = "Clear the view and open the thread again from its newest events";
    document.title = `agentwire · thread ${threadId}`;
  }

  const token = takeToken();
  if (token) start(token);
  else askForToken('');
}

main();
