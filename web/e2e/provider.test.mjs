// Issue 19, items 1, 2 and 7: a provider's earnings equal what its wallet earned, each GPU
// shows the state the API gives (idle, offered by which ask, leased by which lease), and
// the wallet groups its movements by lease and order with a balance-over-time chart. One
// real simulated agent, one ask, one bid whose job runs a few seconds; every number the
// page shows is compared with the API.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import {
  closeBrowser,
  eventually,
  fundedBuyer,
  newUser,
  screenshot,
  startSimulatedAgent,
  ui,
  withPage,
} from './harness.mjs';

const CLASS = 'H100-80GB';

/** "1,234.50" (as the UI shows credits) -> 1234500000n micro-credits; "—" -> null. @param {string} text */
function micro(text) {
  const t = text.replace(/[,\s+]/g, '').replace('−', '-');
  if (!/^-?\d+(\.\d+)?$/.test(t)) return null;
  const neg = t.startsWith('-');
  const [whole, frac = ''] = t.replace('-', '').split('.');
  const v = BigInt(whole) * 1_000_000n + BigInt((frac + '000000').slice(0, 6));
  return neg ? -v : v;
}

describe('provider earnings, GPU states and grouped wallet movements', () => {
  /** @type {any} */ let provider;
  /** @type {any} */ let buyer;
  /** @type {any} */ let agent;
  /** @type {any} */ let ask;
  /** @type {string} */ let leaseId;

  before(async () => {
    provider = await newUser(['provider']);
    buyer = await fundedBuyer('100');
    agent = await startSimulatedAgent({ name: 'provider earnings and gpu states' }, provider, {
      gpus: ['H100', 'H100', 'H100'],
    });
    ask = await provider.api.placeAsk(CLASS, { hostId: agent.hostId, gpus: 2, price: '3' });
    // The job runs long enough for the states to be read while it holds its GPU.
    const bid = await buyer.api.call('POST', `/markets/${CLASS}/orders`, {
      body: {
        side: 'bid', gpus: 1, max_hours: '1', price: '3', tif: 'gtc',
        job: { command: ['sh', '-c', 'echo start; sleep 12; echo done'], env: {} },
      },
      idempotent: true,
    });
    leaseId = bid.fills?.[0]?.lease_id;
    assert.ok(leaseId, `the bid traded: ${JSON.stringify(bid)}`);
  });

  after(async () => {
    await provider?.api.call('DELETE', `/orders/${ask?.order_id}`).catch(() => undefined);
    await agent?.stop();
    await closeBrowser();
  });

  test('each GPU on the provider page shows the state and ids GET /hosts/{id} gives', async (t) => {
    await withPage(t, async (page) => {
      await ui.login(page, provider.email, provider.password);
      await ui.go(page, '#/provider');
      const card = ui.byTestId(page, `host-${agent.hostId}`);
      await card.locator('[data-testid="gpu-state"][data-state="leased"]').waitFor();
      const host = await eventually(async () => {
        const host = await provider.api.call('GET', `/hosts/${agent.hostId}`);
        for (const g of host.gpus) {
          const cell = card.locator(`[data-testid="host-gpu-${g.uuid}"] [data-testid="gpu-state"]`);
          assert.equal(await cell.getAttribute('data-state'), g.state, `GPU ${g.uuid}`);
          if (g.state === 'offered') {
            assert.match((await cell.locator('[data-testid="gpu-order"]').textContent()) ?? '', new RegExp(g.order_id.slice(-8)));
          }
          if (g.state === 'leased') {
            assert.match((await cell.locator('[data-testid="gpu-lease"]').textContent()) ?? '', new RegExp(g.lease_id.slice(-8)));
          }
        }
        return host;
      });
      const states = host.gpus.map((/** @type {any} */ g) => g.state).sort();
      assert.deepEqual(states, ['idle', 'leased', 'offered'], JSON.stringify(host.gpus));
      assert.equal(host.gpus.find((/** @type {any} */ g) => g.state === 'leased').lease_id, leaseId);
      assert.equal(host.gpus.find((/** @type {any} */ g) => g.state === 'offered').order_id, ask.order_id);
      // Nothing says "free" about a GPU an ask holds.
      assert.equal(await card.getByText('free', { exact: true }).count(), 0);
      await screenshot(page, t.name, 'states');
    });
  });

  test("the provider's earnings equal the wallet's earned credits", async (t) => {
    // The job ends by itself (exited; host_lost on a machine too loaded for the agent's
    // 1 s reports); then nothing more is billed and the numbers hold still.
    await eventually(async () => {
      const job = await buyer.api.call('GET', `/jobs/${leaseId}`);
      assert.ok(!['pending', 'running'].includes(job.state), job.state);
    }, 60_000);
    const wallet = await provider.api.call('GET', '/wallet');
    const hosts = await provider.api.call('GET', '/hosts');
    const job = await buyer.api.call('GET', `/jobs/${leaseId}`);
    const earned = micro(wallet.earned);
    assert.ok(earned && earned > 0n, `earned ${wallet.earned}`);
    assert.equal(micro(hosts.items[0].earnings), earned, 'the host earned what the wallet got');
    assert.equal(earned, (micro(job.cost_so_far) ?? 0n) - (micro(job.fee_so_far) ?? 0n), 'cost less the fee');
    await withPage(t, async (page) => {
      await ui.login(page, provider.email, provider.password);
      await ui.go(page, '#/provider');
      await eventually(async () => assert.equal(micro(await ui.text(page, 'earnings-total')), earned));
      const card = ui.byTestId(page, `host-${agent.hostId}`);
      assert.equal(micro((await card.locator('[data-testid="host-earnings"]').textContent()) ?? ''), earned);
      await screenshot(page, t.name, 'provider');
      await ui.go(page, '#/wallet');
      await eventually(async () => assert.equal(micro(await ui.text(page, 'wallet-earned')), earned));
      assert.equal(micro(await ui.text(page, 'wallet-available')), micro(wallet.available));
    });
  });

  test('the wallet groups movements by lease and order and charts the balance', async (t) => {
    const groups = await buyer.api.call('GET', '/wallet/movements');
    const wallet = await buyer.api.call('GET', '/wallet');
    const lease = groups.items.find((/** @type {any} */ g) => g.group === 'lease' && g.ref_id === leaseId);
    assert.ok(lease, JSON.stringify(groups));
    await withPage(t, async (page) => {
      await ui.login(page, buyer.email, buyer.password);
      await ui.go(page, '#/wallet');
      const rows = ui.byTestId(page, 'movement-group');
      await rows.first().waitFor();
      assert.equal(await rows.count(), groups.items.length, 'one row per group');
      for (const g of groups.items) {
        const row = page.locator(`[data-testid="movement-group"][data-ref="${g.ref_id}"]`);
        assert.equal(Number(await row.locator('[data-testid="movement-entries"]').textContent()), g.entries);
        const shown = (await row.locator('[data-testid="movement-wallet"]').textContent()) ?? '';
        assert.equal(micro(shown) ?? 0n, micro(g.wallet_delta), `group ${g.group} ${g.ref_id}: ${shown}`);
      }
      // Expanding the lease shows its entries by kind, as the API counts them.
      const leaseRow = page.locator(`[data-testid="movement-group"][data-ref="${leaseId}"]`);
      await leaseRow.locator('[data-testid="movement-toggle"]').click();
      const kinds = leaseRow.locator('[data-testid="movement-kind"]');
      await kinds.first().waitFor();
      assert.deepEqual(
        await kinds.evaluateAll((els) => els.map((e) => e.getAttribute('data-kind'))),
        lease.kinds.map((/** @type {any} */ k) => k.kind),
      );
      // The chart ends at the balance the wallet has now.
      const chart = ui.byTestId(page, 'balance-chart');
      await chart.waitFor();
      assert.equal(micro((await chart.getAttribute('data-last-available')) ?? ''), micro(wallet.available));
      assert.equal(micro((await chart.getAttribute('data-last-held')) ?? ''), micro(wallet.held));
      await page.locator('[data-testid="balance-series"] canvas').first().waitFor();
      await screenshot(page, t.name, 'buyer');
      // The provider's many settlement lines are one row per lease.
      await ui.logout(page);
      await ui.login(page, provider.email, provider.password);
      await ui.go(page, '#/wallet');
      const mine = await provider.api.call('GET', '/wallet/movements');
      assert.equal(mine.items.length, 1, JSON.stringify(mine));
      const row = page.locator(`[data-testid="movement-group"][data-ref="${leaseId}"]`);
      await row.waitFor();
      assert.equal(Number(await row.locator('[data-testid="movement-entries"]').textContent()), mine.items[0].entries);
      assert.ok(mine.items[0].entries > 1, 'several settlements, one row');
    });
  });
});
