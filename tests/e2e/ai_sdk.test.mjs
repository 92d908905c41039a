// Issue 10: the real `ai` package (the Vercel AI SDK, pinned in package.json) resuming a chat
// through agentwire's GET /v1/ai-sdk/chats/{thread_id}/stream. Its own client code does the
// work: DefaultChatTransport.reconnectToStream (what useChat({resume: true}) calls) and
// readUIMessageStream (what assembles the message). A run in progress is read, the reader
// leaves mid-run and resumes once; the assembled message has every reasoning part, every tool
// call with its output and the full text. No run in progress: null (HTTP 204). A failed run
// ends in the SDK's error.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { DefaultChatTransport, readUIMessageStream } from 'ai';

import { emit, mintToken, runEvents, startBroker, startGateway, tempDir } from './support/agentwire.mjs';

let broker;
let gateway;

before(async () => {
  broker = await startBroker(await tempDir('ai-sdk'));
  gateway = await startGateway(broker.bootstrap);
});

after(async () => {
  if (gateway) await gateway.kill();
  if (broker) await broker.kill();
});

function transportFor(token) {
  // The SDK's default resume URL is `${api}/${chatId}/stream`: the chat id is the thread id.
  return new DefaultChatTransport({
    api: `${gateway.url}/v1/ai-sdk/chats`,
    headers: { Authorization: `Bearer ${token}` },
  });
}

// The replica learns of a run from the log a few milliseconds after Kafka acknowledged it:
// until then the thread has no run in progress (null).
async function resumeWhenRunning(transport, chatId) {
  const deadline = Date.now() + 30000;
  for (;;) {
    const stream = await transport.reconnectToStream({ chatId });
    if (stream || Date.now() > deadline) return stream;
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function lastMessage(stream, onError) {
  let message;
  for await (const state of readUIMessageStream({ stream, onError, terminateOnError: false })) message = state;
  return message;
}

test('useChat resume: a run in progress is replayed and followed, across one reconnect', async () => {
  const token = await mintToken('heidi');
  const transport = transportFor(token);
  assert.equal(await transport.reconnectToStream({ chatId: 't-h' }), null, 'no run in progress: 204');

  const run = runEvents({ user: 'heidi', threadId: 't-h', runId: 'ai-r1', prefix: 'ai-h', count: 14 });
  await emit(broker.bootstrap, run.slice(0, 8));

  // The first reader leaves mid-run, after the second tool's output.
  const first = await resumeWhenRunning(transport, 't-h');
  assert.ok(first, 'a run is in progress');
  const reader = first.getReader();
  const seenFirst = [];
  for (;;) {
    const { value, done } = await reader.read();
    assert.ok(!done, `the stream ended early after ${JSON.stringify(seenFirst)}`);
    seenFirst.push(value.type);
    if (value.type === 'tool-output-available' && value.toolCallId === 'call-7') break;
  }
  await reader.cancel();

  // Resumed once; the rest of the run is published while the resumed reader follows it.
  const second = await transport.reconnectToStream({ chatId: 't-h' });
  assert.ok(second);
  const publishing = emit(broker.bootstrap, run.slice(8), { pauseEvery: 1, pauseMs: 100 });
  const errors = [];
  const message = await lastMessage(second, (e) => errors.push(e));
  await publishing;
  assert.deepEqual(errors, []);
  assert.equal(message.id, 'ai-r1');
  assert.equal(message.role, 'assistant');

  const reasoning = message.parts.filter((p) => p.type === 'reasoning').map((p) => p.text);
  assert.deepEqual(reasoning, run.filter((e) => e.type === 'agent_thinking').map((e) => e.agent_thinking.text));
  const tools = message.parts.filter((p) => p.type === 'dynamic-tool');
  const calls = run.filter((e) => e.type === 'tool_executing');
  assert.equal(tools.length, calls.length, JSON.stringify(message.parts));
  for (const [i, call] of calls.entries()) {
    const result = run.find((e) => e.type === 'tool_completed' && e.tool_completed.tool_call_id === call.tool_executing.tool_call_id);
    assert.equal(tools[i].toolCallId, call.tool_executing.tool_call_id);
    assert.equal(tools[i].toolName, 'web_search');
    assert.equal(tools[i].state, 'output-available');
    assert.deepEqual(tools[i].input, JSON.parse(call.tool_executing.input));
    assert.equal(tools[i].output, result.tool_completed.output);
  }
  const text = message.parts.filter((p) => p.type === 'text').map((p) => p.text).join('');
  assert.equal(text, run.filter((e) => e.type === 'message_delta').map((e) => e.message_delta.text).join(''));
  assert.equal(await transport.reconnectToStream({ chatId: 't-h' }), null, 'the run ended: 204');
});

test('a failed run ends in the SDK error state', async () => {
  const token = await mintToken('ivan');
  const transport = transportFor(token);
  const run = runEvents({ user: 'ivan', threadId: 't-i', runId: 'ai-r2', prefix: 'ai-i', count: 6 }).slice(0, 5);
  await emit(broker.bootstrap, run);
  const stream = await resumeWhenRunning(transport, 't-i');
  assert.ok(stream);
  const failing = emit(broker.bootstrap, [{
    type: 'agent_failed', event_id: 'ai-i-fail', user_id: 'ivan', thread_id: 't-i', run_id: 'ai-r2',
    run_seq: 6, agent_name: 'researcher', agent_failed: { error_code: 'upstream_timeout', message: 'the tool timed out' },
  }]);
  const errors = [];
  await lastMessage(stream, (e) => errors.push(e));
  await failing;
  assert.equal(errors.length, 1, 'the SDK reported the error');
  assert.match(String(errors[0]?.message ?? errors[0]), /the tool timed out/);
});
