// Bounded waits: every wait in this suite goes through here, so nothing hangs
// and nothing relies on sleeping for synchronization.

export class TimeoutError extends Error {}

/** Race `promise` against a timer; rejects with TimeoutError(`what`). */
export function withTimeout(promise, ms, what = 'operation') {
  let timer;
  const t = new Promise((_, rej) => {
    timer = setTimeout(() => rej(new TimeoutError(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([promise, t]).finally(() => clearTimeout(timer));
}

/** A promise with its resolve/reject exposed. */
export function deferred() {
  let resolve, reject;
  const promise = new Promise((res, rej) => { resolve = res; reject = rej; });
  return { promise, resolve, reject };
}

/** Default per-wait timeout (ms); scale with SWITCHBOARD_TEST_TIMEOUT_SCALE on slow machines. */
export const T = Math.round(5000 * Number(process.env.SWITCHBOARD_TEST_TIMEOUT_SCALE || 1));
/** Per-test timeout for node:test. */
export const TEST_TIMEOUT = Math.round(60000 * Number(process.env.SWITCHBOARD_TEST_TIMEOUT_SCALE || 1));

/**
 * Resolves with `check()`'s value once it is truthy; re-checks every 50 ms and fails after
 * `timeoutMs`. For what the server learns a moment after the client's call returned (the
 * client's stop() does not wait for the server's answer to its close).
 */
export async function eventually(check, what, timeoutMs = T) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await check();
    if (v) return v;
    if (Date.now() > deadline) throw new TimeoutError(`not within ${timeoutMs} ms: ${what}`);
    await new Promise((res) => setTimeout(res, 50));
  }
}
