// Issue 17, the job page: a managed job whose attempt 1 fails (exit 3) on host A is
// restarted by the exchange on host B (never on the host that failed it); attempt 2 fails
// too and the job gives up, attempts exhausted. The page must show exactly the attempts,
// hosts, end reasons, billed time and costs that GET /api/v1/jobs/{id} returns, and each
// attempt's own log lines.
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { closeBrowser, fundedBuyer, newUser, startSimulatedAgent, ui, withPage } from './harness.mjs';

/** An amount string ("12.5", "0.026620") as exact micro-credits. @param {string} text */
function micro(text) {
  const m = /^[+\u2212-]?([\d,]*)(?:\.(\d{0,6}))?$/.exec(text.trim());
  assert.ok(m, `not an amount: "${text}"`);
  return BigInt(m[1].replace(/,/g, '') || '0') * 1_000_000n + BigInt((m[2] ?? '').padEnd(6, '0'));
}

/** Micro-credits the way the UI shows them: grouped, 2 to 6 decimals. @param {bigint} m */
function shown(m) {
  const whole = (m / 1_000_000n).toString().replace(/\B(?=(\d{3})+(?!\d))/g, ',');
  const frac = (m % 1_000_000n).toString().padStart(6, '0').replace(/0{1,4}$/, '');
  return `${whole}.${frac.padEnd(2, '0')}`;
}

/** Seconds as the UI writes them (fmtDuration): "2s", "1m 1s", "1h 2m 3s". @param {string} seconds */
function duration(seconds) {
  const s = Math.max(0, Math.floor(Number(seconds)));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const r = s % 60;
  return h > 0 ? `${h}h ${m}m ${r}s` : m > 0 ? `${m}m ${r}s` : `${r}s`;
}

describe('job page: managed job attempts', () => {
  after(closeBrowser);

  test('a failed attempt restarts on the other host; the page shows both attempts as the API does', async (t) => {
    const cls = 'H100-80GB';
    // Above every resting bid of the other tests, and a price no other test uses.
    const price = '37.5';
    const buyer = await fundedBuyer('1000');
    const provider = await newUser(['provider']);
    const hostA = await startSimulatedAgent(t, provider, { gpus: ['H100'] });
    t.after(() => hostA.stop());
    const hostB = await startSimulatedAgent(t, provider, { gpus: ['H100'] });
    t.after(() => hostB.stop());

    // The managed bid (setup, through the API): restart on failure, two attempts at most.
    const bid = await buyer.api.call('POST', `/markets/${encodeURIComponent(cls)}/orders`, {
      body: {
        side: 'bid',
        gpus: 1,
        max_hours: '1',
        price,
        tif: 'gtc',
        job: {
          command: ['sh', '-c', 'echo attempt $CAPEX_ATTEMPT of $CAPEX_JOB_ID; sleep 2; exit 3'],
          restart: { on: ['failed'], max_attempts: 2 },
        },
      },
      idempotent: true,
    });
    const jobId = bid.order_id;
    // Host A's ask trades with it: attempt 1 runs there. Host B's ask rests, for attempt 2.
    const askA = await provider.api.placeAsk(cls, { hostId: hostA.hostId, gpus: 1, price });
    assert.equal(askA.fills?.length, 1, `host A's ask traded with the bid: ${JSON.stringify(askA)}`);
    await provider.api.placeAsk(cls, { hostId: hostB.hostId, gpus: 1, price });

    // Wait until the API shows both attempts ended and the job gave up.
    /** @type {any} */
    let job = null;
    const deadline = Date.now() + 120_000;
    for (;;) {
      job = await buyer.api.call('GET', `/jobs/${jobId}`);
      if (job.attempts.length === 2 && job.job_state === 'gave_up') break;
      if (Date.now() > deadline) {
        throw new Error(
          `no second failed attempt within 120 s: ${JSON.stringify(job)}\nhost A:\n${hostA.logTail()}\nhost B:\n${hostB.logTail()}`,
        );
      }
      await new Promise((r) => setTimeout(r, 500));
    }
    assert.equal(job.job_id, jobId);
    assert.equal(job.end_reason, 'attempts_exhausted');
    assert.deepEqual(
      job.attempts.map((/** @type {any} */ a) => [a.attempt, a.host_id, a.end_reason]),
      [
        [1, hostA.hostId, 'failed'],
        [2, hostB.hostId, 'failed'],
      ],
      'attempt 2 ran on the other host',
    );
    t.diagnostic(`attempts: ${JSON.stringify(job.attempts)}`);

    await withPage(t, async (page) => {
      await ui.login(page, buyer.email, buyer.password);
      await ui.go(page, `#/jobs/${jobId}`);
      const table = ui.byTestId(page, 'attempts-table');
      await table.waitFor();
      await page.locator('[data-testid="job-lifecycle"][data-state="gave_up"]').waitFor();
      assert.equal(await ui.text(page, 'job-lifecycle'), 'gave up: attempts exhausted');
      assert.equal(await ui.text(page, 'job-restart'), 'on failed · max 2 attempts · max price 37.5 / GPU-h');
      assert.equal(await ui.byTestId(page, 'job-next-bid').count(), 0, 'no next bid waits');
      assert.equal(await ui.text(page, 'job-sla-credits'), shown(micro(job.sla_credits)));
      assert.match(await ui.text(page, 'job-sla-explanation'), /CAPEX_SLA_CREDIT_RATE/);

      // Exactly the API's attempts, one row each, in order.
      const rows = table.locator('tbody tr');
      assert.equal(await rows.count(), job.attempts.length);
      for (const [i, a] of job.attempts.entries()) {
        const row = rows.nth(i);
        const cell = async (/** @type {string} */ id) =>
          ((await row.locator(`[data-testid="${id}"]`).textContent()) ?? '').trim();
        assert.equal(await row.getAttribute('data-attempt'), String(a.attempt));
        assert.equal(await cell('attempt-host'), a.host_id);
        assert.equal(await row.locator('[data-testid="attempt-reason"]').getAttribute('data-reason'), a.end_reason);
        assert.equal(await cell('attempt-reason'), `failed (non-zero exit) (exit ${a.exit_code})`);
        assert.equal(await cell('attempt-cost'), shown(micro(a.cost)));
        assert.equal(await cell('attempt-sla'), shown(micro(a.sla_credit)));
        assert.equal(await cell('attempt-billed'), duration(a.billed));
        assert.notEqual(await cell('attempt-started'), '—');
        assert.notEqual(await cell('attempt-ended'), '—');
        assert.equal(await row.getAttribute('data-current'), a.attempt === job.attempt ? 'true' : 'false');
      }
      const total = job.attempts.reduce((/** @type {bigint} */ s, /** @type {any} */ a) => s + micro(a.cost), 0n);
      assert.equal(await ui.text(page, 'attempts-total-cost'), shown(total));

      // Each attempt's own log lines.
      const select = ui.byTestId(page, 'job-log-attempt');
      for (const n of [1, 2]) {
        await select.selectOption(String(n));
        const logs = page.locator(`[data-testid="job-logs"][data-attempt="${n}"]`);
        await logs.filter({ hasText: `attempt ${n} of ${jobId}` }).waitFor();
        const attemptsShown = await logs.locator('.log-line').evaluateAll((els) =>
          els.map((e) => e.getAttribute('data-attempt')),
        );
        assert.ok(attemptsShown.length > 0 && attemptsShown.every((a) => a === String(n)), `only attempt ${n}'s lines`);
      }
      await select.selectOption('1');
      await page.locator('[data-testid="job-logs"][data-attempt="1"]').filter({ hasText: 'attempt 1' }).waitFor();
    });
  });
});
