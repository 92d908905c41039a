// What a TypeScript frontend writes against the agentwire client, installed from the
// repository path (`npm install <repo>/gateway/web`). tests/e2e/typescript.test.mjs checks
// that this type-checks with --strict, and that the misuses in misuse.ts do not.
import AgentwireClient, {
  ClientState,
  MemoryStorage,
  type AgentEvent,
  type ClientStateValue,
  type EventInfo,
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
  onReset: ({ reason }) => {
    if (reason !== 'catchup_limit') rendered.length = 0;
  },
  onStateChange: (state: ClientStateValue, info) => {
    if (state === ClientState.UNAUTHORIZED) console.log('sign in again', info.status);
    if (info.code === 4001) console.log('token expired; reconnecting with a fresh one');
  },
});
client.connect();
const counts: number = client.counts.events + client.counts.refreshes;
const cursor: string = client.cursor;
console.log(counts, cursor);
client.close();
