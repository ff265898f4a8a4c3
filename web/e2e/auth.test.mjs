import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { PASSWORD, baseUrl, closeBrowser, newUser, ui, uniqueEmail, withPage } from './harness.mjs';

describe('accounts', () => {
  after(closeBrowser);

  test('register, log out, log in again', async (t) => {
    baseUrl();
    const email = uniqueEmail('reg');
    await withPage(t, async (page) => {
      await ui.register(page, email, PASSWORD, ['buyer', 'provider']);
      assert.match(await ui.text(page, 'current-user'), /buyer, provider/);
      // Buyer and provider pages are offered; the operator page is not.
      await ui.byTestId(page, 'nav-wallet').waitFor();
      await ui.byTestId(page, 'nav-provider').waitFor();
      assert.equal(await ui.byTestId(page, 'nav-operator').count(), 0);

      await ui.logout(page);
      await ui.login(page, email, PASSWORD);
      await ui.byTestId(page, 'markets-page').waitFor();
    });
  });

  test('a short password is refused next to the password field', async (t) => {
    baseUrl();
    await withPage(t, async (page) => {
      await ui.go(page, '#/register');
      await page.getByLabel('Email', { exact: true }).fill(uniqueEmail('short'));
      await page.getByLabel('Password', { exact: true }).fill('short');
      await ui.byTestId(page, 'register-submit').click();
      const error = page.locator('.field:has(#register-password) [data-testid="error-password"]');
      await error.waitFor();
      assert.ok((await error.textContent())?.length, 'the error has the server detail');
      assert.equal(await page.locator('#register-password').getAttribute('aria-invalid'), 'true');
    });
  });

  test('a wrong password shows an error at the top of the login form', async (t) => {
    baseUrl();
    await withPage(t, async (page) => {
      await ui.go(page, '#/login');
      await page.getByLabel('Email', { exact: true }).fill(uniqueEmail('nobody'));
      await page.getByLabel('Password', { exact: true }).fill('definitely-wrong');
      await ui.byTestId(page, 'login-submit').click();
      await ui.byTestId(page, 'login-error').waitFor();
      assert.equal(await ui.byTestId(page, 'current-user').count(), 0);
    });
  });

  test('pages that need an account send visitors to the login page', async (t) => {
    baseUrl();
    await withPage(t, async (page) => {
      await ui.go(page, '#/wallet');
      await ui.byTestId(page, 'login-form').waitFor();
      assert.match(page.url(), /#\/login\?next=/);
    });
  });

  test('a logged-in user who opens a login link goes to its next page', async (t) => {
    const user = await newUser(['buyer']);
    await withPage(t, async (page) => {
      await ui.login(page, user.email, user.password);
      await ui.go(page, `#/login?next=${encodeURIComponent('#/wallet')}`);
      await ui.byTestId(page, 'wallet-page').waitFor();
      assert.equal(new URL(page.url()).hash, '#/wallet');
      assert.equal(await ui.byTestId(page, 'login-form').count(), 0);
      // A next that leaves the app or loops back to the login page is not followed.
      await ui.go(page, `#/login?next=${encodeURIComponent('https://example.com/')}`);
      await ui.byTestId(page, 'markets-panel').waitFor();
      assert.equal(new URL(page.url()).hash, '#/markets');
    });
  });
});
