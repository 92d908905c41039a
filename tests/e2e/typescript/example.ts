// What a TypeScript frontend writes against the agentwire client, installed from the
// repository path (`npm install <repo>/gateway/web`). tests/e2e/typescript.test.mjs checks
// that this type-checks with --strict, and that the misuses in misuse.ts do not.
import AgentwireClient, {
  ClientState,
  MemoryStorage,
  runOutcome,
  type AgentEvent,
  type CancelResult,
  type ClientStateValue,
  type EventInfo,
  type MissingRange,
  type OlderPage,
  type RunEndInfo,
  type RunOutcome,
  type ThreadError,
  type ThreadLoaded,
} from 'agentwire-client';

async function fetchToken(): Promise<string> {
  const response = await fetch('/api/agentwire-token');
  return response.text();
}

const rendered: string[] = [];

const client = new AgentwireClient({
  url: 'wss://gateway.example.com/v1/events',
  token: fetchToken, // called before each connection and before the token expires
  threadId: 't-42',
  startFrom: 'earliest',
  storage: new MemoryStorage(),
  onEvent: (event: AgentEvent, info: EventInfo) => {
    if (event.type === 'message_delta') rendered.push(event.message_delta?.text ?? '');
    if (event.tool_completed?.error) console.warn(event.tool_completed.tool_name, info.cursor);
  },
  onRunEnd: (end: RunEndInfo) => {
    // Once per run; later events of the run never reach onEvent (client.lateEvents counts them).
    const shown: Record<RunOutcome, string> = {
      completed: end.event.agent_completed?.result ?? '',
      failed: `failed: ${end.errorCode} ${end.message}`,
      cancelled: 'stopped',
      worker_lost: 'the agent stopped responding',
    };
    rendered.push(`${end.runId} (${end.threadId}): ${shown[end.outcome]}`);
  },
  onReset: ({ reason, missing }) => {
    // With `missing` only those offsets are lost: keep the view and mark the place.
    if (missing) rendered.push(`lost offsets ${missing.from_offset}-${missing.to_offset}`);
    else if (reason !== 'catchup_limit') rendered.length = 0;
  },
  onStateChange: (state: ClientStateValue, info) => {
    if (state === ClientState.UNAUTHORIZED) console.log('sign in again', info.status);
    if (info.code === 4001) console.log('token expired; reconnecting with a fresh one');
  },
});
client.connect();
const counts: number = client.counts.events + client.counts.refreshes;
const cursor: string = client.cursor;
console.log(counts, cursor, client.lateEvents + client.counts.runEnds + client.counts.lateEvents);

async function stop(runId: string): Promise<string> {
  let answer: CancelResult;
  try {
    answer = await client.cancel(runId, { timeoutMs: 5000 });
  } catch (error) {
    return `no answer: ${(error as Error).message}`;
  }
  switch (answer.result) {
    case 'requested':
      return 'stopping…'; // the end (outcome 'cancelled') arrives through onRunEnd
    case 'run_ended':
      return `already ended (${answer.end?.type ?? ''} ${answer.end?.error_code ?? ''})`;
    case 'control_unavailable':
      return 'try again';
    case 'unknown_run':
    case 'bad_run_id':
      return 'no such run';
  }
}
void stop('run-1').then(console.log);
void client.cancel('run-2', { via: 'http' }).then(({ via, end }) => console.log(via, end?.cursor));
// A chat window: the thread's newest page and its live events go to onEvent; "load older"
// prepends earlier pages until the thread's beginning.
const shown: AgentEvent[] = [];
const chat = new AgentwireClient({
  url: 'wss://gateway.example.com/v1/events',
  token: fetchToken,
  onEvent: (event) => shown.push(event),
});
async function openChat(threadId: string): Promise<boolean> {
  try {
    const opened: ThreadLoaded = await chat.loadThread(threadId, { limit: 50 });
    const holes: MissingRange[] = opened.missing;
    console.log(opened.delivered, holes.length);
    return opened.hasMore;
  } catch (error) {
    const failed = error as ThreadError;
    console.warn(failed.status, failed.error);
    return false;
  }
}
async function loadOlder(): Promise<void> {
  while (chat.hasOlder) {
    const page: OlderPage = await chat.loadOlder({ limit: 100 });
    shown.unshift(...page.events); // oldest first: prepend in order
    if (!page.hasMore) break;
  }
}
void openChat('t-42').then((more) => (more ? loadOlder() : undefined));
chat.close();

const outcome: RunOutcome | '' = runOutcome({ type: 'agent_failed', agent_failed: { error_code: 'cancelled' } });
console.log(outcome);
client.close();
