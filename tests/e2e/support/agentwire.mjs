// Runs the real `agentwire` binary (path from AGENTWIRE_BINARY, which ctest sets) as separate
// processes: an embedded Kafka broker, gateway replicas, the supervisor, `emit` (and `emit
// simulate` as a worker) and `token`.
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';

import { waitFor } from './wait.mjs';

export const kJwtSecret = 'e2e-secret-that-is-at-least-32-bytes-long';

export function binary() {
  const file = process.env.AGENTWIRE_BINARY;
  if (!file || !existsSync(file)) {
    throw new Error(`AGENTWIRE_BINARY must name the built agentwire executable (got "${file || ''}")`);
  }
  return file;
}

export async function tempDir(prefix) {
  return mkdtemp(path.join(os.tmpdir(), `agentwire-${prefix}-`));
}

// The secret travels in the environment, not on command lines (which `ps` shows).
const childEnv = () => ({ ...process.env, AGENTWIRE_JWT_SECRET: kJwtSecret, AGENTWIRE_LOG_FORMAT: 'text' });

/** A child process whose stderr is kept (the last 200 lines) for failure messages. */
class Child {
  constructor(name, args, options = {}) {
    this.name = name;
    this.log = [];
    this.proc = spawn(binary(), args, { env: childEnv(), stdio: ['pipe', 'pipe', 'pipe'], ...options });
    this.exited = new Promise((resolve) => {
      this.proc.on('exit', (code, signal) => resolve({ code, signal }));
    });
    this.exitStatus = null;
    this.exited.then((status) => {
      this.exitStatus = status;
    });
    createInterface({ input: this.proc.stderr }).on('line', (line) => {
      this.log.push(line);
      if (this.log.length > 200) this.log.shift();
    });
  }

  tail() {
    return `--- ${this.name} stderr (last lines) ---\n${this.log.slice(-40).join('\n')}`;
  }

  async kill(signal = 'SIGTERM') {
    if (this.exitStatus) return this.exitStatus;
    this.proc.kill(signal);
    const timer = setTimeout(() => this.proc.kill('SIGKILL'), 15000);
    const status = await this.exited;
    clearTimeout(timer);
    return status;
  }
}

/** `agentwire broker`: the default topics on an embedded Kafka; resolves once it serves. */
export async function startBroker(dir) {
  const file = path.join(dir, 'bootstrap');
  const broker = new Child('broker', ['broker', '--bootstrap-file', file]);
  await waitFor('the broker bootstrap file', () => broker.exitStatus || existsSync(file), { timeoutMs: 60000 });
  if (broker.exitStatus) throw new Error(`broker exited ${JSON.stringify(broker.exitStatus)}\n${broker.tail()}`);
  broker.bootstrap = readFileSync(file, 'utf8').trim();
  return broker;
}

/**
 * `agentwire gateway` on 127.0.0.1:`port` (0 = any free port); resolves once it printed its URL
 * and /readyz answers 200 (tailing every partition), with `url`, `port` and `wsUrl` set.
 */
export async function startGateway(bootstrap, port = 0, extraArgs = []) {
  const args = ['gateway', '--brokers', bootstrap, '--listen', '127.0.0.1', '--port', String(port), ...extraArgs];
  // A port freed by a killed replica can take a moment to bind again: retry a few times.
  for (let attempt = 1; ; attempt++) {
    const gateway = new Child(`gateway :${port}`, args);
    const firstLine = new Promise((resolve) => {
      createInterface({ input: gateway.proc.stdout }).once('line', resolve);
      gateway.exited.then(() => resolve(''));
    });
    const line = await firstLine;
    const match = /^http:\/\/127\.0\.0\.1:(\d+)/.exec(line.trim());
    if (!match) {
      const status = await Promise.race([gateway.exited, new Promise((r) => setTimeout(() => r(null), 2000))]);
      if (attempt < 5 && port !== 0) {
        await gateway.kill('SIGKILL');
        await new Promise((r) => setTimeout(r, 500));
        continue;
      }
      await gateway.kill('SIGKILL');
      throw new Error(`gateway did not start (first line "${line}", exit ${JSON.stringify(status)})\n${gateway.tail()}`);
    }
    gateway.port = Number(match[1]);
    gateway.url = `http://127.0.0.1:${gateway.port}`;
    gateway.wsUrl = `ws://127.0.0.1:${gateway.port}/v1/events`;
    await waitFor(`gateway :${gateway.port} ready`, async () => {
      if (gateway.exitStatus) throw new Error(`gateway exited\n${gateway.tail()}`);
      try {
        return (await fetch(`${gateway.url}/readyz`)).status === 200;
      } catch {
        return false;
      }
    }, { timeoutMs: 60000, intervalMs: 100 });
    return gateway;
  }
}

/** A TCP port that was free a moment ago (for a child's --metrics-port). */
export async function freePort() {
  const server = net.createServer();
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const { port } = server.address();
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/**
 * `agentwire supervisor` (docs/runs.md) with its metrics on a free local port; resolves once its
 * /readyz answers 200, with `metricsUrl` set.
 */
export async function startSupervisor(bootstrap, extraArgs = []) {
  const port = await freePort();
  const supervisor = new Child('supervisor', [
    'supervisor', '--brokers', bootstrap, '--metrics-address', '127.0.0.1', '--metrics-port', String(port),
    ...extraArgs,
  ]);
  supervisor.proc.stdout.resume();
  supervisor.metricsUrl = `http://127.0.0.1:${port}`;
  await waitFor('the supervisor ready', async () => {
    if (supervisor.exitStatus) {
      throw new Error(`supervisor exited ${JSON.stringify(supervisor.exitStatus)}\n${supervisor.tail()}`);
    }
    try {
      return (await fetch(`${supervisor.metricsUrl}/readyz`)).status === 200;
    } catch {
      return false;
    }
  }, { timeoutMs: 60000, intervalMs: 200 });
  return supervisor;
}

/**
 * `agentwire emit simulate` as a worker (runs with run control: heartbeats, Stop honoured);
 * returns the child at once (`kill('SIGKILL')` is a crashed worker).
 */
export function startSimulator(bootstrap, args) {
  const worker = new Child('simulate', ['emit', 'simulate', '--brokers', bootstrap, ...args]);
  worker.proc.stdout.resume();
  return worker;
}

/** `agentwire token --user U`: a JWT the gateways accept. */
export async function mintToken(user, { ttl = '' } = {}) {
  const child = new Child('token', ['token', '--user', user, ...(ttl ? ['--ttl', ttl] : [])]);
  child.proc.stdin.end();
  let out = '';
  child.proc.stdout.on('data', (chunk) => {
    out += chunk;
  });
  const status = await child.exited;
  if (status.code !== 0) throw new Error(`agentwire token exited ${status.code}\n${child.tail()}`);
  return out.trim();
}

/**
 * Publishes `events` through `agentwire emit` (one JSON object per stdin line); resolves when
 * every one is acknowledged by Kafka (emit exits 0). With `pauseEvery`, writes that many lines,
 * then waits `pauseMs`, so a run is spread over time ("mid-stream" for the readers).
 */
export async function emit(bootstrap, events, { pauseEvery = 0, pauseMs = 0 } = {}) {
  const child = new Child('emit', ['emit', '--brokers', bootstrap]);
  child.proc.stdout.resume();
  for (let i = 0; i < events.length; i++) {
    child.proc.stdin.write(`${JSON.stringify(events[i])}\n`);
    if (pauseEvery && (i + 1) % pauseEvery === 0) await new Promise((r) => setTimeout(r, pauseMs));
  }
  child.proc.stdin.end();
  const status = await child.exited;
  if (status.code !== 0) throw new Error(`agentwire emit exited ${status.code}\n${child.tail()}`);
}

/**
 * Events of one run in the JSON form `agentwire emit` reads: started, thinking, a tool call,
 * streamed text, completed. `prefix` makes every event_id unique and traceable.
 */
export function runEvents({ user, threadId, runId, prefix, firstSeq = 1, count = 8, agent = 'researcher' }) {
  const events = [];
  const body = (seq) => {
    const index = seq - 1;
    if (index === 0) return ['agent_started', { input: `question from ${user} (${runId})`, model: 'gpt-test' }];
    if (seq === count) return ['agent_completed', { result: `answer for ${runId}`, duration_ms: 1234 }];
    switch (index % 4) {
      case 1:
        return ['agent_thinking', { text: `thinking step ${seq}` }];
      case 2:
        return ['tool_executing', { tool_name: 'web_search', input: `{"q":"${seq}"}`, tool_call_id: `call-${seq}` }];
      case 3:
        return ['tool_completed', { tool_name: 'web_search', output: `result ${seq}`, duration_ms: 40 + seq, tool_call_id: `call-${seq - 1}` }];
      default:
        return ['message_delta', { text: `part ${seq} ` }];
    }
  };
  for (let seq = firstSeq; seq <= count; seq++) {
    const [type, payload] = body(seq);
    events.push({
      type,
      event_id: `${prefix}-${String(seq).padStart(3, '0')}`,
      user_id: user,
      thread_id: threadId,
      run_id: runId,
      run_seq: seq,
      agent_name: agent,
      [type]: payload,
    });
  }
  return events;
}

// Debian's Chromium, headless, without what a test box lacks or must not do (a sandbox needs
// user namespaces; QUIC, sync and component updates reach the network).
const kChromiumArgs = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

/** Launches Debian's Chromium (or $CHROMIUM_PATH) through playwright-core: never a downloaded browser. */
export async function launchChromium() {
  const { chromium } = await import('playwright-core');
  return chromium.launch({
    executablePath: process.env.CHROMIUM_PATH || '/usr/bin/chromium',
    headless: true,
    args: kChromiumArgs,
  });
}
