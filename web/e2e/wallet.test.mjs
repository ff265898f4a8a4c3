import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { baseUrl, closeBrowser, newUser, operatorCredentials, ui, withPage } from './harness.mjs';

describe('wallet', () => {
  after(closeBrowser);

  test('the wallet shows the balance and ledger after the operator mints', async (t) => {
    baseUrl();
    const op = operatorCredentials();
    const buyer = await newUser(['buyer']);

    // The operator mints through the operator page.
    await withPage(
      t,
      async (page) => {
        await ui.login(page, op.email, op.password);
        await ui.byTestId(page, 'nav-operator').click();
        await ui.byTestId(page, 'invariants-status').waitFor();
        const form = ui.byTestId(page, 'mint-form');
        await form.getByLabel('User id').fill(buyer.userId);
        await form.getByLabel('Amount (credits)').fill('1234.5');
        await form.getByLabel('Memo (optional)').fill('e2e mint');
        await ui.byTestId(page, 'mint-submit').click();
        await ui.outcome(page, 'mint-done', 'mint-error');
        await ui.byTestId(page, `user-row-${buyer.email}`).filter({ hasText: '1,234.50' }).waitFor();
        assert.match(await ui.text(page, 'invariants-status'), /balance/);
      },
      'operator',
    );

    // The buyer sees it.
    await withPage(
      t,
      async (page) => {
        await ui.login(page, buyer.email, buyer.password);
        await ui.byTestId(page, 'nav-wallet').click();
        await page.locator('[data-testid="wallet-available"]', { hasText: '1,234.50' }).waitFor();
        assert.equal(await ui.text(page, 'wallet-held'), '0.00');
        assert.equal(await ui.text(page, 'wallet-total'), '1,234.50');
        const row = ui.byTestId(page, 'ledger-row').filter({ hasText: 'e2e mint' });
        await row.waitFor();
        assert.match((await row.textContent()) ?? '', /\+1,234\.50/);
      },
      'buyer',
    );
  });

  test('a transfer with too many decimals shows the error next to the amount', async (t) => {
    const alice = await newUser(['buyer'], 'alice');
    const bob = await newUser(['buyer'], 'bob');
    await withPage(t, async (page) => {
      await ui.login(page, alice.email, alice.password);
      await ui.go(page, '#/wallet');
      const form = ui.byTestId(page, 'transfer-form');
      await form.getByLabel('Recipient user id').fill(bob.userId);
      await form.getByLabel('Amount (credits)').fill('0.0000001');
      await ui.byTestId(page, 'transfer-submit').click();
      await ui.outcome(page, 'error-amount', 'transfer-error');
      await page.locator('.field:has(#transfer-amount) [data-testid="error-amount"]').waitFor();
    });
  });
});
