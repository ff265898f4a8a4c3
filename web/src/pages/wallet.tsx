import { useMemo, useState } from 'preact/hooks';
import { api, IdempotencyKeys } from '../api';
import { TimeSeriesChart } from '../components/charts';
import { toPlotNumber } from '../money';
import { href } from '../router';
import type { BalancePoint, MovementGroup } from '../types';
import { PagedView } from '../components/paged';
import { Amount, Field, FormError, Loadable, Panel, fmtTime, inputValue, shortId, useForm } from '../components/ui';
import { usePagedList, useResource } from '../resource';
import { session } from '../session';
import { useStore } from '../store';

/** Ledger lines per page. */
const LEDGER_PAGE_LINES = 50;
/** Movement groups per page. */
const MOVEMENT_PAGE_GROUPS = 25;
/** Points of the balance chart. */
const BALANCE_POINTS = 300;

export function WalletPage() {
  const s = useStore(session);
  const wallet = useResource(() => api.wallet(), [], { live: ['wallet'] });
  const movements = usePagedList(
    (cursor) => api.movements(cursor, MOVEMENT_PAGE_GROUPS),
    (g) => `${g.group}:${g.ref_id}`,
    [],
    { live: ['wallet'] },
  );
  const history = useResource(() => api.balanceHistory(BALANCE_POINTS), [], { live: ['wallet'] });
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
                {w.earned !== undefined && w.earned !== '0' && (
                  <div class="stat big" title="Settlements your hosts' leases paid into this wallet, all time">
                    <span>Earned from leases</span>
                    <Amount value={w.earned} testid="wallet-earned" />
                  </div>
                )}
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
      <Panel title="Balance over time" testid="balance-panel">
        <Loadable res={history} what="Balance history">
          {(h) =>
            h.points.length === 0 ? (
              <div class="empty" data-testid="balance-empty">
                No movements yet.
              </div>
            ) : (
              <BalanceChart points={h.points} />
            )
          }
        </Loadable>
      </Panel>
      <Panel title="Movements by lease and order" testid="movements-panel">
        <PagedView list={movements} what="Movements" testid="movements" empty="No movements yet.">
          {(items) => <MovementTable groups={items} />}
        </PagedView>
      </Panel>
      <Panel title="All ledger entries" testid="ledger-panel">
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

function BalanceChart(props: { points: BalancePoint[] }) {
  const series = useMemo(
    () =>
      (['available', 'held'] as const).map((k) => ({
        key: k,
        label: k,
        points: props.points.map((p) => ({ at: p.at, value: toPlotNumber(p[k]) })),
      })),
    [props.points],
  );
  const last = props.points[props.points.length - 1];
  return (
    <div data-testid="balance-chart" data-last-available={last?.available} data-last-held={last?.held}>
      <TimeSeriesChart series={series} height={180} precision={2} stepped testid="balance-series" />
    </div>
  );
}

const GROUP_LABELS: Record<string, string> = { lease: 'Lease', order: 'Order', transfer: 'Transfer' };

/** A signed amount: green when credits came in, red when they left, nothing when zero. */
function Signed(props: { value: string; testid?: string }) {
  const zero = /^-?0(\.0*)?$/.test(props.value);
  const negative = props.value.startsWith('-');
  return (
    <span class={zero ? 'muted' : negative ? 'ask' : 'bid'} data-testid={props.testid}>
      {zero ? '—' : negative ? '−' : '+'}
      {!zero && <Amount value={negative ? props.value.slice(1) : props.value} />}
    </span>
  );
}

function MovementTable(props: { groups: MovementGroup[] }) {
  const [open, setOpen] = useState<Set<string>>(new Set());
  const toggle = (key: string) =>
    setOpen((s) => {
      const next = new Set(s);
      if (next.has(key)) next.delete(key);
      else next.add(key);
      return next;
    });
  return (
    <table class="grid dense movements" data-testid="movements-table">
      <thead>
        <tr>
          <th />
          <th>Last movement</th>
          <th>What</th>
          <th>Market</th>
          <th class="r">Entries</th>
          <th class="r">Available</th>
          <th class="r">Held</th>
        </tr>
      </thead>
      {props.groups.map((g) => {
        const key = `${g.group}:${g.ref_id}`;
        const expanded = open.has(key);
        return (
          <tbody key={key} data-testid="movement-group" data-group={g.group} data-ref={g.ref_id}>
            <tr class="clickable" onClick={() => toggle(key)}>
              <td>
                <button
                  type="button"
                  class="small"
                  aria-expanded={expanded}
                  aria-label={expanded ? 'Hide entries by kind' : 'Show entries by kind'}
                  data-testid="movement-toggle"
                  onClick={(e) => {
                    e.stopPropagation();
                    toggle(key);
                  }}
                >
                  {expanded ? '▾' : '▸'}
                </button>
              </td>
              <td>{fmtTime(g.last_at)}</td>
              <td>
                {GROUP_LABELS[g.group] ?? g.group}{' '}
                {g.group === 'lease' ? (
                  <a class="mono" href={href('jobs', g.ref_id)} onClick={(e) => e.stopPropagation()}>
                    {shortId(g.ref_id)}
                  </a>
                ) : (
                  <span class="mono">{shortId(g.ref_id)}</span>
                )}
                {g.group !== 'transfer' && (
                  <span class="muted small"> {g.kinds.map((k) => k.kind.replace(/_/g, ' ')).join(', ')}</span>
                )}
                {g.group === 'transfer' && <span class="muted small"> {g.kinds[0]?.kind.replace(/_/g, ' ')}</span>}
              </td>
              <td>{g.class ?? <span class="muted">—</span>}</td>
              <td class="r num" data-testid="movement-entries">
                {g.entries}
              </td>
              <td class="r">
                <Signed value={g.wallet_delta} testid="movement-wallet" />
              </td>
              <td class="r">
                <Signed value={g.held_delta} testid="movement-held" />
              </td>
            </tr>
            {expanded &&
              g.kinds.map((k) => (
                <tr key={k.kind} class="movement-kind" data-testid="movement-kind" data-kind={k.kind}>
                  <td />
                  <td class="muted small">
                    {k.entries > 1 ? `${fmtTime(k.first_at)} – ${fmtTime(k.last_at)}` : fmtTime(k.last_at)}
                  </td>
                  <td colSpan={2}>{k.kind.replace(/_/g, ' ')}</td>
                  <td class="r num">{k.entries}</td>
                  <td class="r">
                    <Signed value={k.wallet_delta} />
                  </td>
                  <td class="r">
                    <Signed value={k.held_delta} />
                  </td>
                </tr>
              ))}
          </tbody>
        );
      })}
    </table>
  );
}
