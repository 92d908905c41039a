// Each line below is a mistake the declarations must catch (see typescript.test.mjs).
import { AgentwireClient } from 'agentwire-client';

new AgentwireClient({ url: 'wss://x/v1/events' }); // no token
new AgentwireClient({ token: 't', startFrom: 'yesterday' }); // not 'live' | 'earliest'
new AgentwireClient({ token: 't', onEvent: (event) => event.run_seq.toUpperCase() }); // a number
const state: number = new AgentwireClient({ token: 't' }).state; // a string union
new AgentwireClient({ token: 't', onRunEnd: (end) => end.outcome === 'stopped' }); // not an outcome
void new AgentwireClient({ token: 't' }).cancel(42); // a run id is a string
void new AgentwireClient({ token: 't' }).loadOlder({ limit: '10' }); // a page size is a number
