import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { ApiClient, closeBrowser, newUser, ui, withPage } from './harness.mjs';

describe('markets', () => {
  after(closeBrowser);

  test('the markets overview loads, with the chart attribution in the footer', async (t) => {
    const buyer = await newUser(['buyer']);
    await withPage(t, async (page) => {
      await ui.login(page, buyer.email, buyer.password);
      await ui.go(page, '#/markets');
      await ui.byTestId(page, 'markets-panel').waitFor();
      // One of: the table, "no markets yet", or "not available yet" while the endpoint lands.
      await page
        .locator('[data-testid="markets-table"], [data-testid="markets-empty"], [data-testid="not-available"]')
        .first()
        .waitFor();
      assert.match(await ui.text(page, 'chart-attribution'), /TradingView/);
    });
  });

  test('a market page shows its ladder, charts and order entry', async (t) => {
    const buyer = await newUser(['buyer']);
    const cls = await new ApiClient().marketClass();
    await withPage(t, async (page) => {
      await ui.login(page, buyer.email, buyer.password);
      await ui.openMarket(page, cls);
      await ui.byTestId(page, 'ladder-panel').waitFor();
      await ui.byTestId(page, 'price-panel').waitFor();
      await ui.byTestId(page, 'depth-panel').waitFor();
      await ui.byTestId(page, 'bid-form').waitFor();
    });
  });
});
