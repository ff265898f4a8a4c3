import assert from 'node:assert/strict';
import { randomInt } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import {
  ApiClient,
  UI_TIMEOUT_MS,
  closeBrowser,
  fundedBuyer,
  newUser,
  priceKey,
  startSimulatedAgent,
  ui,
  withPage,
} from './harness.mjs';

/** A low price no ask will cross, distinct per run: 0.01xxxx with a non-zero last digit. */
function restingPrice() {
  return `0.01${String(randomInt(1000, 9999))}`.replace(/0$/, '1');
}

/** An amount string ("12.5", "−1,234.50", "+0.01") as exact micro-credits. @param {string} text */
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

describe('trading', () => {
  after(closeBrowser);

  test('a buyer places a bid and sees it on the ladder and in My orders', async (t) => {
    const buyer = await fundedBuyer('1000');
    const cls = await new ApiClient().marketClass();
    const price = restingPrice();
    await withPage(t, async (page) => {
      await ui.login(page, buyer.email, buyer.password);
      await ui.openMarket(page, cls);

      // The escrow the bid will lock is shown before sending, computed exactly.
      await ui.fillBid(page, { gpus: 3, hours: 1, price: '0.1' });
      await page.locator('[data-testid="bid-escrow"]', { hasText: '0.30' }).waitFor();
      await ui.fillBid(page, { gpus: 2, hours: 3, price, command: 'echo hello from e2e' });
      await ui.byTestId(page, 'bid-submit').click();
      await ui.outcome(page, 'bid-placed', 'bid-error');

      // On the ladder, at its price (live feed or the offline poll brings it).
      const level = ui.byTestId(page, `ladder-bid-${priceKey(price)}`);
      await level.waitFor();
      assert.equal((await level.locator('td').nth(1).textContent())?.trim(), '2', 'GPUs at that level');

      // Under "my open orders here" on the market page.
      await ui.byTestId(page, 'my-market-orders').locator(`tr[data-price="${priceKey(price)}"]`).waitFor();

      // And in My orders, with a cancel button.
      await ui.byTestId(page, 'nav-orders').click();
      const row = ui.byTestId(page, 'orders-page').locator(`tr[data-side="bid"][data-price="${priceKey(price)}"]`);
      await row.waitFor();
      assert.equal(await row.locator('[data-testid^="cancel-order-"]').count(), 1);
    });
  });

  test('a price with more than 6 decimals shows the error next to the price input', async (t) => {
    const buyer = await fundedBuyer('100');
    const cls = await new ApiClient().marketClass();
    await withPage(t, async (page) => {
      await ui.login(page, buyer.email, buyer.password);
      await ui.openMarket(page, cls);
      await ui.placeBid(page, { gpus: 1, hours: 1, price: '1.1234567' });
      await ui.outcome(page, 'error-price', 'bid-error');
      const error = page.locator('.field:has(#bid-price) [data-testid="error-price"]');
      await error.waitFor();
      assert.ok(((await error.textContent()) ?? '').trim().length > 0, 'the server detail is shown');
      assert.equal(await page.locator('#bid-price').getAttribute('aria-invalid'), 'true');
      assert.equal(await ui.byTestId(page, 'bid-placed').count(), 0);
    });
  });

  test('full trade: live simulated agent, crossing ask, job, streaming logs, settlement', async (t) => {
    // The simulated H100s are in this market, whatever CAPEX_TEST_CLASS says.
    const cls = 'H100-80GB';
    const minted = '1000';
    const buyer = await fundedBuyer(minted);
    const provider = await newUser(['provider']);
    const agent = await startSimulatedAgent(t, provider, { gpus: ['H100', 'H100'] });
    t.after(() => agent.stop());

    // 36 credits per GPU-hour = 0.01 per GPU-second: a few seconds cost a visible amount.
    // Far above the resting bids of the other tests, so the ask fills this bid first.
    const price = '36';
    const escrowMicro = micro(price); // x 1 GPU x 1 hour
    // The job prints two lines, then waits (at most 2 minutes) until the test has seen
    // them in the page and opens the gate, then prints three more a second apart: so the
    // later lines are written only after the page already showed the earlier ones.
    const gate = join(agent.dir, 'gate');
    const command =
      `echo line 1; echo line 2; n=0; until [ -e ${gate} ] || [ $n -ge 600 ]; do sleep 0.2; n=$((n+1)); done; ` +
      'for i in 3 4 5; do echo line $i; sleep 1; done';
    const jobDone = 120_000; // the whole job, on a slow machine

    const jobId = await withPage(t, async (page) => {
      await ui.login(page, buyer.email, buyer.password);
      await ui.openMarket(page, cls);
      await ui.placeBid(page, { gpus: 1, hours: 1, price, command });
      const placed = await ui.outcome(page, 'bid-placed', 'bid-error');
      assert.match((await placed.textContent()) ?? '', /is open/, 'no ask yet: the bid rests');

      // The provider's ask for one of its two GPUs crosses the bid (setup, through the API).
      const ask = await provider.api.placeAsk(cls, { hostId: agent.hostId, gpus: 1, price });
      assert.equal(ask.fills?.length, 1, `the ask traded with the bid: ${JSON.stringify(ask)}`);
      const jobId = ask.fills[0].lease_id;
      // The job's own id (issue 17) is its bid's order id; the job list shows rows by it.
      const { job_id: stableJobId } = await buyer.api.call('GET', `/jobs/${jobId}`);
      assert.equal(ask.fills[0].price.replace(/\.0*$/, ''), price, 'the resting bid sets the price');

      // The job appears on the Jobs page, live, with its host and GPU count.
      await ui.byTestId(page, 'nav-jobs').click();
      const row = ui.byTestId(page, `job-row-${stableJobId}`);
      await row.waitFor();
      await page.locator(`[data-testid="job-row-${stableJobId}"][data-state="running"]`).waitFor({ timeout: 4 * UI_TIMEOUT_MS });
      assert.equal((await row.locator('[data-testid="job-row-host"]').textContent())?.trim(), agent.hostId.slice(-8));
      assert.equal((await row.locator('[data-testid="job-row-gpus"]').textContent())?.trim(), '1');

      await row.click();
      const detail = ui.byTestId(page, 'job-detail');
      await detail.waitFor();
      assert.equal(await ui.text(page, 'job-state'), 'running');
      assert.equal(await ui.text(page, 'job-host'), agent.hostId);
      assert.equal(await ui.text(page, 'job-gpus'), `1 × ${cls}`);

      // Logs stream into the open page: the first lines, then, once the gate opens, the rest,
      // without a reload (a marker set in the page now must survive).
      const logs = ui.byTestId(page, 'job-logs');
      await logs.filter({ hasText: 'line 2' }).waitFor({ timeout: 4 * UI_TIMEOUT_MS });
      assert.doesNotMatch((await logs.textContent()) ?? '', /line 3/, 'line 3 is not written before the gate opens');
      await page.evaluate(() => {
        /** @type {any} */ (window).__capexSamePage = true;
      });
      writeFileSync(gate, '');
      await logs.filter({ hasText: 'line 3' }).waitFor({ timeout: 4 * UI_TIMEOUT_MS });
      await logs.filter({ hasText: 'line 5' }).waitFor({ timeout: 4 * UI_TIMEOUT_MS });
      assert.equal(await page.evaluate(() => /** @type {any} */ (window).__capexSamePage), true, 'no reload');
      // (Each .log-line is one uploaded chunk of output, which may hold several lines.)
      const lines = (await logs.locator('.log-line').allTextContents()).join('').split('\n');
      assert.deepEqual(
        lines.map((l) => l.trim()).filter((l) => l !== ''),
        ['line 1', 'line 2', 'line 3', 'line 4', 'line 5'],
        'every line once, in order',
      );

      // The job finishes: exited 0, escrow settled.
      await page.locator('[data-testid="job-state"]', { hasText: 'exited' }).waitFor({ timeout: jobDone });
      assert.equal(await ui.text(page, 'job-exit-code'), '0');
      await page.locator('[data-testid="job-escrow-left"]', { hasText: '0.00' }).waitFor();

      // The job's GPU telemetry, readable by the buyer: only the leased GPU.
      await ui.byTestId(page, 'job-telemetry').locator('[data-testid="telemetry-utilization_pct"]').waitFor();
      assert.equal(await ui.byTestId(page, 'job-telemetry').locator('[role="alert"]').count(), 0);
      const telemetry = await buyer.api.call('GET', `/jobs/${jobId}/telemetry`);
      const job = await buyer.api.call('GET', `/jobs/${jobId}`);
      assert.deepEqual(
        telemetry.gpus.map((/** @type {any} */ g) => g.uuid),
        job.gpu_uuids,
      );
      assert.ok(agent.gpuUuids.includes(job.gpu_uuids[0]));

      // What the API says the job cost, shown on the job page.
      assert.equal(job.state, 'exited');
      const cost = micro(job.cost_so_far);
      assert.ok(cost > 0n, `attested time was billed: ${JSON.stringify(job)}`);
      assert.ok(cost < escrowMicro);
      await page.locator('[data-testid="job-cost"]', { hasText: shown(cost) }).waitFor();
      assert.match(await ui.text(page, 'job-billed'), /^(\d+h )?(\d+m )?\d+s$/, 'the billed time is shown');

      // The wallet: the rest of the escrow came back, so exactly the cost is gone.
      await ui.byTestId(page, 'nav-wallet').click();
      await page.locator('[data-testid="wallet-available"]', { hasText: shown(micro(minted) - cost) }).waitFor();
      assert.equal(await ui.text(page, 'wallet-held'), '0.00');
      assert.equal(await ui.text(page, 'wallet-total'), shown(micro(minted) - cost));

      // The ledger history shows the settlement: the bid's escrow moved to the lease's
      // (lease_escrow), captures out of it (the provider's part and the fee) adding up to
      // the cost, and the refund of the rest to the wallet.
      const rows = ui.byTestId(page, 'ledger-row').filter({ hasText: `lease ${jobId}` });
      await page.locator('[data-testid="ledger-row"][data-kind="escrow_release"]', { hasText: jobId }).first().waitFor();
      const entries = await rows.evaluateAll((trs) =>
        trs.map((tr) => ({
          kind: tr.getAttribute('data-kind'),
          account: tr.getAttribute('data-account'),
          direction: tr.getAttribute('data-direction'),
          amount: tr.querySelector('[data-testid="ledger-amount"]')?.textContent ?? '',
        })),
      );
      const sum = (/** @type {(e: any) => boolean} */ pick) =>
        entries.filter(pick).reduce((total, e) => total + micro(e.amount), 0n);
      const captured = sum(
        (e) => e.account === 'escrow' && e.direction === 'debit' && (e.kind === 'settlement' || e.kind === 'fee'),
      );
      assert.equal(shown(captured), shown(cost), `captures = cost: ${JSON.stringify(entries)}`);
      const refunded = sum((e) => e.kind === 'escrow_release' && e.account === 'wallet' && e.direction === 'credit');
      assert.equal(shown(refunded), shown(escrowMicro - cost), `refund = escrow - cost: ${JSON.stringify(entries)}`);
      assert.ok(entries.some((e) => e.kind === 'settlement'), 'the provider was paid from the escrow');
      assert.equal(shown(sum((e) => e.kind === 'lease_escrow' && e.direction === 'credit')), shown(escrowMicro));
      return jobId;
    });

    // The provider was paid the cost less the operator's fee, as the API reports them.
    const job = await buyer.api.call('GET', `/jobs/${jobId}`);
    const wallet = await provider.api.call('GET', '/wallet');
    assert.equal(micro(wallet.available), micro(job.cost_so_far) - micro(job.fee_so_far));
  });
});
