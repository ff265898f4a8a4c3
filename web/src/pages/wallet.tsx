import { useMemo, useState } from 'preact/hooks';
import { api, IdempotencyKeys } from '../api';
import { PagedView } from '../components/paged';
import { Amount, Field, FormError, Loadable, Panel, fmtTime, inputValue, shortId, useForm } from '../components/ui';
import { usePagedList, useResource } from '../resource';
import { session } from '../session';
import { useStore } from '../store';

/** Ledger lines per page. */
const LEDGER_PAGE_LINES = 50;

export function WalletPage() {
  const s = useStore(session);
  const wallet = useResource(() => api.wallet(), [], { live: ['wallet'] });
  const ledger = usePagedList(
    (cursor) => api.ledger(cursor, LEDGER_PAGE_LINES),
    (l) => `${l.entry_id}.${l.direction}.${l.account}`,
    [],
    { live: ['wallet'] },
  );

  return (
    <div class="page" data-testid="wallet-page">
      <div class="cols">
        <Panel title="Balance" testid="wallet-panel">
          <Loadable res={wallet} what="Wallet">
            {(w) => (
              <div class="balances">
                <div class="stat big">
                  <span>Available</span>
                  <Amount value={w.available} testid="wallet-available" />
                </div>
                <div class="stat big">
                  <span>Held in escrow</span>
                  <Amount value={w.held} testid="wallet-held" />
                </div>
                <div class="stat big">
                  <span>Total</span>
                  <Amount value={w.total} testid="wallet-total" />
                </div>
              </div>
            )}
          </Loadable>
          {s && (
            <p class="muted small">
              Your user id (for incoming transfers): <code data-testid="my-user-id">{s.user.user_id}</code>
            </p>
          )}
        </Panel>
        <TransferForm
          onDone={() => {
            wallet.reload();
            ledger.reload();
          }}
        />
      </div>
      <Panel title="Ledger" testid="ledger-panel">
        <PagedView list={ledger} what="Ledger" testid="ledger" empty="No ledger entries yet.">
          {(items) => (
            <table class="grid dense" data-testid="ledger-table">
              <thead>
                <tr>
                  <th>Time</th>
                  <th>Account</th>
                  <th>Kind</th>
                  <th class="r">Amount</th>
                  <th>Memo</th>
                  <th>Transfer</th>
                </tr>
              </thead>
              <tbody>
                {items.map((l) => (
                  <tr
                    key={`${l.entry_id}.${l.direction}.${l.account}`}
                    data-testid="ledger-row"
                    data-kind={l.kind}
                    data-account={l.account}
                    data-direction={l.direction}
                  >
                    <td>{fmtTime(l.at)}</td>
                    <td>{l.account}</td>
                    <td>{l.kind.replace(/_/g, ' ')}</td>
                    <td class={`r ${l.direction === 'credit' ? 'bid' : 'ask'}`} data-testid="ledger-amount">
                      {l.direction === 'credit' ? '+' : '−'}
                      <Amount value={l.amount} />
                    </td>
                    <td class="memo">{l.memo}</td>
                    <td class="mono muted">{shortId(l.transfer_id)}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          )}
        </PagedView>
      </Panel>
    </div>
  );
}

const TRANSFER_FIELDS = ['to_user', 'amount', 'memo'] as const;

function TransferForm(props: { onDone: () => void }) {
  const form = useForm(TRANSFER_FIELDS);
  const keys = useMemo(() => new IdempotencyKeys(), []);
  const [toUser, setToUser] = useState('');
  const [amount, setAmount] = useState('');
  const [memo, setMemo] = useState('');
  const [sent, setSent] = useState(false);

  const onSubmit = (e: Event) => {
    e.preventDefault();
    setSent(false);
    const body = { to_user: toUser.trim(), amount: amount.trim(), memo };
    void form.submit(async () => {
      await api.transfer(body, keys.keyFor(body));
      keys.done();
      setSent(true);
      setAmount('');
      setMemo('');
      props.onDone();
    });
  };

  return (
    <Panel title="Send credits" testid="transfer-panel">
      <form onSubmit={onSubmit} data-testid="transfer-form" noValidate>
        <FormError form={form} testid="transfer-error" />
        <Field form={form} name="to_user" id="transfer-to" label="Recipient user id">
          {(aria) => (
            <input
              id="transfer-to"
              name="to_user"
              autoComplete="off"
              spellcheck={false}
              value={toUser}
              onInput={(e) => setToUser(inputValue(e))}
              data-testid="transfer-to"
              {...aria}
            />
          )}
        </Field>
        <Field form={form} name="amount" id="transfer-amount" label="Amount (credits)">
          {(aria) => (
            <input
              id="transfer-amount"
              name="amount"
              inputMode="decimal"
              autoComplete="off"
              value={amount}
              onInput={(e) => setAmount(inputValue(e))}
              data-testid="transfer-amount"
              {...aria}
            />
          )}
        </Field>
        <Field form={form} name="memo" id="transfer-memo" label="Memo (optional)">
          {(aria) => (
            <input
              id="transfer-memo"
              name="memo"
              maxLength={200}
              value={memo}
              onInput={(e) => setMemo(inputValue(e))}
              data-testid="transfer-memo"
              {...aria}
            />
          )}
        </Field>
        <button type="submit" class="primary" disabled={form.busy} data-testid="transfer-submit">
          {form.busy ? 'Sending…' : 'Send'}
        </button>
        {sent && (
          <div class="notice" data-testid="transfer-sent">
            Sent.
          </div>
        )}
      </form>
    </Panel>
  );
}
