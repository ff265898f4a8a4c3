import { useMemo, useState } from 'preact/hooks';
import { api, IdempotencyKeys } from '../api';
import { Amount, Field, FormError, Loadable, Panel, fmtTime, inputValue, useForm } from '../components/ui';
import { useResource } from '../resource';

export function OperatorPage() {
  const invariants = useResource(() => api.invariants(), [], { live: ['wallet', 'trade', 'job'] });
  const fees = useResource(() => api.fees(), [], { live: ['wallet', 'trade', 'job'] });
  const users = useResource(() => api.users(), [], { live: ['wallet'] });
  const [mintTo, setMintTo] = useState('');

  return (
    <div class="page" data-testid="operator-page">
      <div class="cols">
        <Panel
          title="Ledger invariants"
          testid="invariants-panel"
          actions={
            <button type="button" class="small" onClick={invariants.reload} data-testid="invariants-recheck">
              Check now
            </button>
          }
        >
          <Loadable res={invariants} what="Invariants">
            {(inv) => (
              <>
                <div class={`invariant ${inv.ok ? 'ok' : 'bad'}`} data-testid="invariants-status">
                  {inv.ok ? '✓ Books balance' : '✗ Invariant violated'}
                </div>
                <div class="kv-grid">
                  <div>
                    <span>Sum of all balances</span>
                    <Amount value={inv.total} testid="invariants-total" />
                  </div>
                  <div>
                    <span>Accounts checked</span>
                    <span class="num">{inv.accounts_checked}</span>
                  </div>
                  <div>
                    <span>Checked at</span>
                    {fmtTime(inv.checked_at)}
                  </div>
                </div>
                {(inv.violations ?? []).length > 0 && (
                  <table class="grid dense" data-testid="violations">
                    <thead>
                      <tr>
                        <th>Account</th>
                        <th>Kind</th>
                        <th class="r">Balance</th>
                        <th class="r">Journal</th>
                      </tr>
                    </thead>
                    <tbody>
                      {inv.violations.map((v) => (
                        <tr key={`${v.account_id}-${v.kind}`}>
                          <td class="mono">{v.account_id}</td>
                          <td>{v.kind}</td>
                          <td class="r">
                            <Amount value={v.balance} />
                          </td>
                          <td class="r">
                            <Amount value={v.journal ?? null} />
                          </td>
                        </tr>
                      ))}
                    </tbody>
                  </table>
                )}
              </>
            )}
          </Loadable>
        </Panel>
        <Panel title="Treasury" testid="fees-panel">
          <Loadable res={fees} what="Fees">
            {(f) => (
              <div class="balances">
                <div class="stat big">
                  <span>Fees earned</span>
                  <Amount value={f.fees_earned} testid="fees-earned" />
                </div>
                {f.minted !== undefined && (
                  <div class="stat big">
                    <span>Minted</span>
                    <Amount value={f.minted} testid="minted" />
                  </div>
                )}
              </div>
            )}
          </Loadable>
        </Panel>
        <MintForm
          userId={mintTo}
          setUserId={setMintTo}
          onDone={() => {
            users.reload();
            invariants.reload();
            fees.reload();
          }}
        />
      </div>
      <Panel title="Users" testid="users-panel">
        <Loadable res={users} what="Users">
          {(page) => (
            <table class="grid dense" data-testid="users-table">
              <thead>
                <tr>
                  <th>Email</th>
                  <th>Roles</th>
                  <th>User id</th>
                  <th class="r">Available</th>
                  <th class="r">Held</th>
                  <th>Joined</th>
                  <th />
                </tr>
              </thead>
              <tbody>
                {page.items.map((u) => (
                  <tr key={u.user_id} data-testid={`user-row-${u.email}`}>
                    <td>{u.email}</td>
                    <td>{u.roles.join(', ')}</td>
                    <td class="mono">{u.user_id}</td>
                    <td class="r">
                      <Amount value={u.available} />
                    </td>
                    <td class="r">
                      <Amount value={u.held} />
                    </td>
                    <td>{fmtTime(u.created_at)}</td>
                    <td>
                      <button
                        type="button"
                        class="small"
                        onClick={() => setMintTo(u.user_id)}
                        data-testid={`mint-pick-${u.email}`}
                      >
                        Mint to
                      </button>
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          )}
        </Loadable>
      </Panel>
    </div>
  );
}

const MINT_FIELDS = ['user_id', 'amount', 'memo'] as const;

function MintForm(props: { userId: string; setUserId: (id: string) => void; onDone: () => void }) {
  const form = useForm(MINT_FIELDS);
  const keys = useMemo(() => new IdempotencyKeys(), []);
  const [amount, setAmount] = useState('');
  const [memo, setMemo] = useState('');
  const [done, setDone] = useState(false);

  const onSubmit = (e: Event) => {
    e.preventDefault();
    setDone(false);
    const body = { user_id: props.userId.trim(), amount: amount.trim(), memo };
    void form.submit(async () => {
      await api.mint(body, keys.keyFor(body));
      keys.done();
      setDone(true);
      setAmount('');
      props.onDone();
    });
  };

  return (
    <Panel title="Mint credits" testid="mint-panel">
      <form onSubmit={onSubmit} data-testid="mint-form" noValidate>
        <FormError form={form} testid="mint-error" />
        <Field form={form} name="user_id" id="mint-user" label="User id">
          {(aria) => (
            <input
              id="mint-user"
              name="user_id"
              autoComplete="off"
              spellcheck={false}
              value={props.userId}
              onInput={(e) => props.setUserId(inputValue(e))}
              data-testid="mint-user"
              {...aria}
            />
          )}
        </Field>
        <Field form={form} name="amount" id="mint-amount" label="Amount (credits)">
          {(aria) => (
            <input
              id="mint-amount"
              name="amount"
              inputMode="decimal"
              autoComplete="off"
              value={amount}
              onInput={(e) => setAmount(inputValue(e))}
              data-testid="mint-amount"
              {...aria}
            />
          )}
        </Field>
        <Field form={form} name="memo" id="mint-memo" label="Memo (optional)">
          {(aria) => (
            <input
              id="mint-memo"
              name="memo"
              maxLength={200}
              value={memo}
              onInput={(e) => setMemo(inputValue(e))}
              data-testid="mint-memo"
              {...aria}
            />
          )}
        </Field>
        <button type="submit" class="primary" disabled={form.busy} data-testid="mint-submit">
          {form.busy ? 'Minting…' : 'Mint'}
        </button>
        {done && (
          <div class="notice" data-testid="mint-done">
            Minted.
          </div>
        )}
      </form>
    </Panel>
  );
}
