import assert from 'node:assert/strict';
import { randomInt } from 'node:crypto';
import { after, describe, test } from 'node:test';
import { ApiClient, closeBrowser, fundedBuyer, priceKey, ui, withPage } from './harness.mjs';

/** A low price no ask will cross, distinct per run: 0.01xxxx with a non-zero last digit. */
function restingPrice() {
  return `0.01${String(randomInt(1000, 9999))}`.replace(/0$/, '1');
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

  // Lands with hosts, the simulated agent and jobs: provider starts an agent, offers an ask
  // that crosses the bid, the job appears under Jobs, its logs stream, and both wallets show
  // the settlement.
  test.todo('full trade: live simulated agent, crossing ask, job, streaming logs, settlement');
});
