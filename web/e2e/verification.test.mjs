// Verification levels as a person sees them, checked against what the API says: the
// provider page's level per GPU and the host's evidence, a bid requiring `challenged`
// placed through the form, and the per-level supply counts of the market pages.
//
// The browser-test server allows the simulated backend (CAPEX_ALLOW_SIMULATED=true) and is
// not in demo mode, so the agents' GPUs are `simulated` and never challenged: nothing at
// `challenged` exists, and a bid requiring it rests with the verification reason. The
// agents here have L40S GPUs, a market no other browser test trades in.
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import {
  UI_TIMEOUT_MS,
  closeBrowser,
  fundedBuyer,
  newUser,
  screenshot,
  startSimulatedAgent,
  ui,
  withPage,
} from './harness.mjs';

const LEVELS = ['simulated', 'reported', 'challenged', 'cc_attested'];

/**
 * The per-level counts a LevelCountsRow shows, as { level: n }.
 * @param {import('playwright-core').Page} page @param {string} testid
 */
async function shownCounts(page, testid) {
  const row = ui.byTestId(page, testid);
  await row.waitFor();
  return row.locator('[data-level]').evaluateAll((els) =>
    Object.fromEntries(els.map((e) => [e.getAttribute('data-level'), Number(e.getAttribute('data-count'))])),
  );
}

/**
 * Waits until the page's counts under `testids` equal what GET /api/v1/markets says for
 * `cls` (both sides are re-read each round: live updates and the API move together), and
 * returns the last pair compared.
 * @param {import('playwright-core').Page} page @param {any} api @param {string} cls
 * @param {{ offered: string, free: string }} testids
 */
async function countsMatchApi(page, api, cls, testids) {
  const deadline = Date.now() + UI_TIMEOUT_MS;
  for (;;) {
    const market = (await api.call('GET', '/markets')).items.find((/** @type {any} */ m) => m.class === cls);
    assert.ok(market, `GET /markets lists ${cls}`);
    for (const key of ['offered_gpus_by_level', 'free_gpus_by_level']) {
      assert.deepEqual(Object.keys(market[key]).sort(), [...LEVELS].sort(), `${key} has every level`);
    }
    const offered = await shownCounts(page, testids.offered);
    const free = await shownCounts(page, testids.free);
    const same =
      JSON.stringify(offered) === JSON.stringify(pick(market.offered_gpus_by_level)) &&
      JSON.stringify(free) === JSON.stringify(pick(market.free_gpus_by_level));
    if (same) return { market, offered, free };
    if (Date.now() > deadline) {
      assert.deepEqual({ offered, free }, { offered: pick(market.offered_gpus_by_level), free: pick(market.free_gpus_by_level) });
    }
    await new Promise((r) => setTimeout(r, 250));
  }
}

/** Counts in level order, so two objects compare as JSON. @param {Record<string, number>} counts */
function pick(counts) {
  return Object.fromEntries(LEVELS.map((l) => [l, counts[l] ?? 0]));
}

describe('verification', () => {
  after(closeBrowser);

  test('the provider page shows each GPU at the level the API gives it, and the host evidence', async (t) => {
    const provider = await newUser(['provider']);
    const agent = await startSimulatedAgent(t, provider, { gpus: ['L40S', 'L40S'] });
    t.after(() => agent.stop());

    const host = await provider.api.call('GET', `/hosts/${agent.hostId}`);
    const evidence = await provider.api.call('GET', `/hosts/${agent.hostId}/verification`);
    assert.equal(host.backend, 'simulated');
    assert.equal(evidence.backend, 'simulated');
    assert.equal(host.challenge_blocked_at, null);
    for (const g of host.gpus) {
      assert.equal(g.reporting, true, `${g.uuid} is in the latest report`);
      assert.equal(g.verification.level, 'simulated', `${g.uuid}: simulated outside demo mode`);
    }

    await withPage(t, async (page) => {
      await ui.login(page, provider.email, provider.password);
      await ui.go(page, '#/provider');
      const card = ui.byTestId(page, `host-${agent.hostId}`);
      await card.waitFor();
      assert.equal(await card.locator('[data-testid="host-backend"]').textContent(), host.backend);
      assert.equal(await card.locator('[data-testid="challenge-blocked"]').count(), 0, 'no blocked banner');

      // Each GPU's badge: the API's level, its label, and a title saying what it proves.
      for (const g of host.gpus) {
        const badge = card.locator(`[data-testid="host-gpu-${g.uuid}"] [data-testid="gpu-level"]`);
        await badge.waitFor();
        assert.equal(await badge.getAttribute('data-level'), g.verification.level);
        assert.equal((await badge.textContent())?.trim(), 'simulated');
        assert.match((await badge.getAttribute('title')) ?? '', /simulated backend/);
      }

      // The verification panel of the (only, so selected) host: backend, levels, evidence.
      const panel = ui.byTestId(page, 'provider-verification-panel');
      const view = panel.locator('[data-testid="verification"]');
      await view.waitFor();
      assert.equal(await view.getAttribute('data-backend'), evidence.backend);
      for (const g of evidence.gpus) {
        const badge = panel.locator(`[data-testid="verification-gpu-${g.gpu_uuid}"] [data-level]`);
        assert.equal(await badge.getAttribute('data-level'), g.level);
      }
      // Evidence may have grown since it was read: compare with a fresh read.
      const now = await provider.api.call('GET', `/hosts/${agent.hostId}/verification`);
      if (now.challenges.length === 0) {
        await panel.locator('[data-testid="challenges-empty"]').waitFor();
      } else {
        assert.equal(await panel.locator('[data-testid^="challenge-"][data-state]').count(), now.challenges.length);
      }
      if (now.attestations.length === 0) {
        await panel.locator('[data-testid="attestations-empty"]').waitFor();
      } else {
        assert.equal(await panel.locator('[data-testid^="attestation-"][data-state]').count(), now.attestations.length);
      }
      assert.equal(await panel.locator('[data-testid="challenge-blocked"]').count(), 0);
    });
  });

  // The browser-test server cannot produce challenged or CC-attested GPUs, nor a blocked
  // host (its agents are simulated and never challenged). Here the page gets the real host's
  // answers with those fields changed, so the badges, deadlines, evidence rows and banner
  // for them are seen at least once; what the fields mean is tested against the server in
  // the API tests (tests/api).
  test('challenged, CC-attested and blocked states render (API answers altered in the page)', async (t) => {
    const provider = await newUser(['provider']);
    const agent = await startSimulatedAgent(t, provider, { gpus: ['L40S', 'L40S'] });
    t.after(() => agent.stop());
    const [a, b] = agent.gpuUuids;
    const at = (/** @type {number} */ h) => new Date(Date.now() + h * 3600_000).toISOString();
    const challengedUntil = at(6);
    const ccUntil = at(12);
    const blockedAt = at(-1);
    /** @param {any} gpu @param {string} uuid */
    const level = (gpu, uuid) =>
      uuid === a
        ? { ...gpu, level: 'challenged', challenged_until: challengedUntil, verified_at: at(-0.5) }
        : { ...gpu, level: 'cc_attested', cc_attested_until: ccUntil, cc_measurements_checked: false, verified_at: at(-0.2) };
    const challenge = {
      gpu_uuid: a, class: 'L40S-48GB', reason: 'scheduled', n: 1024, k: 16, commit_by: at(-0.9),
      seed: 'ab'.repeat(32), root: 'cd'.repeat(32), rows_asked: [1, 2, 3],
    };

    await withPage(t, async (page) => {
      await page.route(/\/api\/v1\/hosts(\?.*)?$/, async (route) => {
        const response = await route.fetch();
        const json = await response.json();
        for (const h of json.items) {
          if (h.host_id !== agent.hostId) continue;
          h.challenge_blocked_at = blockedAt;
          h.gpus = h.gpus.map((/** @type {any} */ g) => ({ ...g, verification: level(g.verification, g.uuid) }));
        }
        await route.fulfill({ response, json });
      });
      await page.route(/\/api\/v1\/hosts\/[^/]+\/verification$/, async (route) => {
        const response = await route.fetch();
        const json = await response.json();
        json.challenge_blocked_at = blockedAt;
        json.challenge_failures = 3;
        json.refusals = { challenge_wrong_row: 3 };
        json.gpus = json.gpus.map((/** @type {any} */ g) => level(g, g.gpu_uuid));
        json.challenges = [
          { ...challenge, challenge_id: '01900000-0000-7000-8000-00000000c002', issued_at: at(-0.95),
            committed_at: new Date(Date.parse(at(-0.95)) + 420).toISOString(), decided_at: at(-0.94), state: 'failed',
            failure_code: 'challenge_wrong_row', failure_detail: 'row 2 differs', verify_us: 3210 },
          { ...challenge, challenge_id: '01900000-0000-7000-8000-00000000c001', issued_at: at(-1.5),
            committed_at: new Date(Date.parse(at(-1.5)) + 380).toISOString(), decided_at: at(-1.49), state: 'passed',
            failure_code: null, failure_detail: null, verify_us: 850 },
        ];
        json.attestations = [
          { request_id: '01900000-0000-7000-8000-0000000a0001', gpu_uuid: b, requested_at: at(-0.3), state: 'verified',
            decided_at: at(-0.29), code: null, detail: null, verified: { measurements_checked: false } },
        ];
        await route.fulfill({ response, json });
      });

      await ui.login(page, provider.email, provider.password);
      await ui.go(page, '#/provider');
      const card = ui.byTestId(page, `host-${agent.hostId}`);
      const banner = card.locator('[data-testid="challenge-blocked"]');
      await banner.waitFor();
      assert.match((await banner.textContent()) ?? '', /Blocked after failed challenges.*until an operator clears it/);

      const badgeA = card.locator(`[data-testid="host-gpu-${a}"] [data-testid="gpu-level"]`);
      assert.equal(await badgeA.getAttribute('data-level'), 'challenged');
      assert.match((await badgeA.getAttribute('title')) ?? '', /proof-of-compute.*Holds until/);
      const badgeB = card.locator(`[data-testid="host-gpu-${b}"] [data-testid="gpu-level"]`);
      assert.equal(await badgeB.getAttribute('data-level'), 'cc_attested');
      assert.equal((await badgeB.textContent())?.trim(), 'CC attested*');
      assert.match((await badgeB.getAttribute('title')) ?? '', /Holds until.*Measurements not checked/);

      const panel = ui.byTestId(page, 'provider-verification-panel');
      await panel.locator('[data-testid="challenge-blocked"]').waitFor();
      assert.match(
        (await panel.locator(`[data-testid="verification-gpu-${b}"]`).textContent()) ?? '',
        /measurements not checked/,
      );
      const failed = panel.locator('[data-testid="challenge-01900000-0000-7000-8000-00000000c002"]');
      assert.equal(await failed.getAttribute('data-state'), 'failed');
      const failedText = (await failed.textContent()) ?? '';
      assert.match(failedText, /challenge_wrong_row/);
      assert.match(failedText, /420 ms/, 'committed 420 ms after issue');
      assert.match(failedText, /3\.21 ms/, 'the verify time');
      assert.match((await panel.locator('[data-testid^="attestation-"][data-state="verified"]').textContent()) ?? '', /measurements not checked/);
      await screenshot(page, t.name, 'provider');
    });
  });

  test('a bid requiring challenged GPUs rests with the verification reason; per-level counts match the API', async (t) => {
    const provider = await newUser(['provider']);
    const agent = await startSimulatedAgent(t, provider, { gpus: ['L40S', 'L40S'] });
    t.after(() => agent.stop());
    const host = await provider.api.call('GET', `/hosts/${agent.hostId}`);
    const cls = host.gpus[0].class;

    // One of the two simulated GPUs offered (setup, through the API): the market then has
    // supply at "simulated" only, at a price the bid will meet.
    const price = '2.5';
    const ask = await provider.api.placeAsk(cls, { hostId: agent.hostId, gpus: 1, price });
    t.after(() => provider.api.call('DELETE', `/orders/${ask.order_id}`).catch(() => undefined));
    assert.equal(ask.status, 'open');
    assert.equal(ask.verification, 'simulated', `the ask is graded by its GPU: ${JSON.stringify(ask)}`);

    const buyer = await fundedBuyer('100');
    /** @type {any} */
    let bid;
    await withPage(t, async (page) => {
      await ui.login(page, buyer.email, buyer.password);

      // Markets overview: the row's per-level counts are the API's.
      await ui.go(page, '#/markets');
      await ui.byTestId(page, `market-row-${cls}`).waitFor();
      const overview = await countsMatchApi(page, buyer.api, cls, {
        offered: `market-offered-${cls}`,
        free: `market-free-${cls}`,
      });
      assert.ok(overview.offered.simulated >= 1, `our ask's GPU is offered: ${JSON.stringify(overview)}`);
      assert.equal(overview.offered.challenged, 0);
      await screenshot(page, t.name, 'overview');

      // The market page shows the same counts.
      await ui.openMarket(page, cls);
      await countsMatchApi(page, buyer.api, cls, { offered: 'market-offered', free: 'market-free' });

      // A bid at the ask's price, requiring challenged GPUs, through the form.
      await ui.fillBid(page, { gpus: 1, hours: 1, price, command: 'echo never runs' });
      const form = ui.byTestId(page, 'bid-form');
      await form.getByLabel('Require verification').selectOption('challenged');
      // The hint counts what the requirement could buy: nothing at challenged or above.
      await page.locator('[data-testid="bid-min-verification-hint"]', { hasText: /^0 GPUs offered now at challenged or above/ }).waitFor();
      await ui.byTestId(page, 'bid-submit').click();
      const placed = await ui.outcome(page, 'bid-placed', 'bid-error');
      assert.match((await placed.textContent()) ?? '', /is open.*requires challenged or above/);

      // The API has the requirement, and says why the bid has not traded.
      const open = await buyer.api.call('GET', '/orders?status=open');
      const listed = open.items.find((/** @type {any} */ o) => o.side === 'bid' && o.class === cls);
      assert.ok(listed, `the bid is open: ${JSON.stringify(open.items)}`);
      t.after(() => buyer.api.call('DELETE', `/orders/${listed.order_id}`).catch(() => undefined));
      assert.equal(listed.min_verification, 'challenged', 'the list has the requirement');
      // The reasons come with one order (the list leaves them out).
      bid = await buyer.api.call('GET', `/orders/${listed.order_id}`);
      assert.equal(bid.min_verification, 'challenged');
      assert.equal(bid.fills.length, 0, 'nothing challenged exists, so nothing traded');
      const codes = bid.unfilled_reasons.map((/** @type {any} */ r) => r.code);
      assert.ok(codes.includes('verification_below_required'), `reasons: ${JSON.stringify(bid.unfilled_reasons)}`);

      // The page shows the requirement and every reason the API gives, readably.
      const mine = ui.byTestId(page, 'my-market-orders');
      const level = mine.locator(`[data-testid="order-verification-${bid.order_id}"] [data-level]`);
      await level.waitFor();
      assert.equal(await level.getAttribute('data-level'), 'challenged');
      assert.equal((await level.textContent())?.trim(), '≥ challenged');
      const reasons = mine.locator(`[data-testid="unfilled-reasons-${bid.order_id}"]`);
      await reasons.waitFor();
      assert.deepEqual(
        await reasons.locator('li').evaluateAll((els) => els.map((e) => e.getAttribute('data-code'))),
        codes,
      );
      const why = (await reasons.locator('li[data-code="verification_below_required"]').textContent()) ?? '';
      assert.match(why, /No GPUs offered at the verification you require/);
      assert.match(why, /strongest offered is simulated/);
      assert.doesNotMatch(why, /min_verification/, 'the request field is not shown raw');

      // The counts still agree once the bid rests (a bid moves no supply).
      await countsMatchApi(page, buyer.api, cls, { offered: 'market-offered', free: 'market-free' });
      await screenshot(page, t.name, 'market');
    });

    // The provider sees the ask's level in its asks.
    await withPage(
      t,
      async (page) => {
        await ui.login(page, provider.email, provider.password);
        await ui.go(page, '#/provider');
        const cell = ui.byTestId(page, 'my-asks-panel').locator(`[data-testid="order-verification-${ask.order_id}"] [data-level]`);
        await cell.waitFor();
        const now = await provider.api.call('GET', `/orders/${ask.order_id}`);
        assert.equal(await cell.getAttribute('data-level'), now.verification);
        assert.equal(now.verification, 'simulated');
      },
      'provider',
    );
  });
});
