import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { closeBrowser, newUser, ui, withPage } from './harness.mjs';

describe('live feed', () => {
  after(closeBrowser);

  test('the offline banner shows while the feed is cut and goes away when it reconnects by itself', async (t) => {
    const buyer = await newUser(['buyer']);
    await withPage(t, async (page) => {
      await ui.login(page, buyer.email, buyer.password);
      await ui.waitLive(page);
      assert.equal(await ui.byTestId(page, 'offline-banner').count(), 0);

      // Cut the feed: new stream requests fail, and the app is told to reconnect now.
      await page.route('**/api/v1/stream**', (route) => route.abort());
      await page.evaluate(() => window.dispatchEvent(new Event('online')));
      await ui.byTestId(page, 'offline-banner').waitFor();

      // Let it through again: the app's own backoff brings it back, with no reload.
      await page.unroute('**/api/v1/stream**');
      await ui.waitLive(page, 30_000);
      assert.equal(await ui.byTestId(page, 'offline-banner').count(), 0);
    });
  });
});
