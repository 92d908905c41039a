// Polling helper shared by the e2e tests.
import { setTimeout as sleep } from 'node:timers/promises';

/**
 * Resolves with the first truthy value of `probe()` (which may be async); rejects after
 * `timeoutMs` with `what` and the last value seen, so a failure says what was missing.
 */
export async function waitFor(what, probe, { timeoutMs = 30000, intervalMs = 50 } = {}) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    last = await probe();
    if (last) return last;
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what} (last: ${JSON.stringify(last)})`);
    }
    await sleep(intervalMs);
  }
}

export { sleep };
