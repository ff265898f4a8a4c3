import { useEffect, useMemo, useState } from 'preact/hooks';
import { api, IdempotencyKeys } from '../api';
import { CandleChart, DepthChart } from '../components/charts';
import {
  Amount,
  Empty,
  ErrorBox,
  Field,
  FormError,
  Loadable,
  NotAvailable,
  Panel,
  fmtClock,
  inputValue,
  shortId,
  useForm,
} from '../components/ui';
import type { LiveEvent } from '../live';
import {
  MoneyError,
  compareAmounts,
  escrowMicro,
  formatMicro,
  tryParseMicro,
} from '../money';
import { parseEnv } from '../forms';
import { useResource } from '../resource';
import { OrderTable, priceKey } from '../components/orders';
import { href } from '../router';
import { hasRole, session } from '../session';
import { useStore } from '../store';
import type { BidPriority, Book, BookLevel, Host, LevelCounts, Market, Order, VerificationLevel } from '../types';
import { LevelBadge, LevelCountsRow } from '../components/verification';
import { TopOfBookPanel } from '../components/topofbook';
import { REQUIRABLE_LEVELS, countAtOrAbove, levelLabel, levelMeaning, lowestLevel } from '../verification';

/** Most price levels shown per side of the ladder. */
const LADDER_LEVELS_MAX = 15;
/** Most trades shown on the tape. */
const TAPE_TRADES_MAX = 50;


/** Drops live events about other markets (events without a class still refetch). */
function sameMarket(cls: string) {
  return (_event: LiveEvent, data: unknown) => {
    const c = (data as { class?: unknown } | null)?.class;
    return typeof c !== 'string' || c === cls;
  };
}

export function MarketPage(props: { cls: string }) {
  const { cls } = props;
  const s = useStore(session);
  const filter = useMemo(() => sameMarket(cls), [cls]);
  const book = useResource(() => api.book(cls), [cls], { live: ['book', 'trade', 'order'], liveFilter: filter });
  const [interval, setCandleInterval] = useState<'1m' | '1h'>('1m');
  const candles = useResource(() => api.candles(cls, interval), [cls, interval], {
    live: ['trade'],
    liveFilter: filter,
  });
  const trades = useResource(() => api.trades(cls), [cls], { live: ['trade'], liveFilter: filter });
  // Per-level supply: the market list is the one endpoint that has it.
  const markets = useResource(() => api.markets(), [], { live: ['book', 'trade', 'host', 'order'] });
  const market: Market | undefined = markets.data?.items.find((m) => m.class === cls);
  const [pickedPrice, setPickedPrice] = useState<string | null>(null);

  const bestBid = book.data?.bids[0]?.price ?? null;
  const bestAsk = book.data?.asks[0]?.price ?? null;
  const last = trades.data?.items[0]?.price ?? null;

  return (
    <div class="page market" data-testid="market-page">
      <div class="market-head">
        <h1 data-testid="market-class">{cls}</h1>
        <div class="stat">
          <span>Best bid</span>
          <Amount value={bestBid} testid="best-bid" />
        </div>
        <div class="stat">
          <span>Best ask</span>
          <Amount value={bestAsk} testid="best-ask" />
        </div>
        <div class="stat">
          <span>Last</span>
          <Amount value={last} testid="last-price" />
        </div>
        <div class="stat" title="The cheapest interruptible price of an ask with idle GPUs">
          <span>Interruptible ask</span>
          <Amount value={book.data?.interruptible_asks?.[0]?.price ?? null} testid="best-interruptible-ask" />
        </div>
        <span class="muted small">credits per GPU-hour</span>
        <a class="muted small" href={href('markets')}>
          ← all markets
        </a>
      </div>
      {market && <MarketLevels market={market} />}
      <TopOfBookPanel cls={cls} liveFilter={filter} />
      <div class="market-grid">
        <Panel title="Order book" testid="ladder-panel" class="ladder-panel">
          <Loadable res={book} what="Order book">
            {(b) => <Ladder book={b} onPick={setPickedPrice} />}
          </Loadable>
          <Loadable res={book} what="Interruptible book">
            {(b) => <InterruptibleBook book={b} />}
          </Loadable>
        </Panel>
        <div class="market-center">
          <Panel
            title="Price"
            testid="price-panel"
            actions={
              <div class="seg" role="group" aria-label="Candle interval">
                {(['1m', '1h'] as const).map((i) => (
                  <button
                    key={i}
                    type="button"
                    class={interval === i ? 'on' : ''}
                    aria-pressed={interval === i}
                    onClick={() => setCandleInterval(i)}
                    data-testid={`interval-${i}`}
                  >
                    {i}
                  </button>
                ))}
              </div>
            }
          >
            <Loadable res={candles} what="Price history">
              {(c) =>
                c.items.length === 0 ? (
                  <Empty testid="candles-empty">No trades yet in this market.</Empty>
                ) : (
                  <CandleChart candles={c.items} />
                )
              }
            </Loadable>
          </Panel>
          <Panel title="Depth" testid="depth-panel">
            <Loadable res={book} what="Depth">
              {(b) =>
                b.bids.length + b.asks.length === 0 ? (
                  <Empty testid="depth-empty">The book is empty.</Empty>
                ) : (
                  <DepthChart book={b} />
                )
              }
            </Loadable>
          </Panel>
        </div>
        <div class="market-side">
          {!s ? (
            <Panel title="Trade" testid="trade-login">
              <p>
                <a href={`#/login?next=${encodeURIComponent(href('markets', cls))}`}>Log in</a> to place orders.
              </p>
            </Panel>
          ) : (
            <>
              {hasRole(s, 'buyer') && (
                <BidForm cls={cls} pickedPrice={pickedPrice} offered={market?.offered_gpus_by_level} />
              )}
              {hasRole(s, 'provider') && <AskForm cls={cls} pickedPrice={pickedPrice} />}
              {!hasRole(s, 'buyer') && !hasRole(s, 'provider') && (
                <Panel title="Trade">
                  <p class="muted">Your account has neither the buyer nor the provider role.</p>
                </Panel>
              )}
            </>
          )}
        </div>
      </div>
      <div class="market-bottom">
        <Panel title="Trades" testid="tape-panel">
          <Loadable res={trades} what="Trades">
            {(t) =>
              t.items.length === 0 ? (
                <Empty testid="tape-empty">No trades yet.</Empty>
              ) : (
                <table class="grid dense" data-testid="trade-tape">
                  <thead>
                    <tr>
                      <th>Time</th>
                      <th class="r">Price</th>
                      <th class="r">GPUs</th>
                      <th class="r">Max hours</th>
                    </tr>
                  </thead>
                  <tbody>
                    {t.items.slice(0, TAPE_TRADES_MAX).map((tr, i) => {
                      const prev = t.items[i + 1];
                      const dir = prev ? compareAmounts(tr.price, prev.price) : 0;
                      return (
                        <tr key={tr.trade_id} data-testid="trade-row">
                          <td>{fmtClock(tr.at)}</td>
                          <td class={`r ${dir > 0 ? 'bid' : dir < 0 ? 'ask' : ''}`}>
                            <Amount value={tr.price} />
                          </td>
                          <td class="r num">{tr.gpus}</td>
                          <td class="r num">{tr.max_hours}</td>
                        </tr>
                      );
                    })}
                  </tbody>
                </table>
              )
            }
          </Loadable>
        </Panel>
        {s && <MyMarketOrders cls={cls} />}
      </div>
    </div>
  );
}

/** Offered and free GPUs of the market per verification level. */
function MarketLevels(props: { market: Market }) {
  const m = props.market;
  return (
    <div class="market-levels" data-testid="market-levels">
      <span>
        <span>Offered by open asks</span>
        <LevelCountsRow counts={m.offered_gpus_by_level} what="GPUs offered by open asks are" testid="market-offered" />
      </span>
      <span>
        <span>Free, not offered</span>
        <LevelCountsRow counts={m.free_gpus_by_level} what="free GPUs (not offered, not leased) are" testid="market-free" />
      </span>
    </div>
  );
}

function Ladder(props: { book: Book; onPick: (price: string) => void }) {
  const asks = props.book.asks.slice(0, LADDER_LEVELS_MAX);
  const bids = props.book.bids.slice(0, LADDER_LEVELS_MAX);
  const maxGpus = Math.max(1, ...asks.map((l) => l.gpus), ...bids.map((l) => l.gpus));
  const row = (side: 'bid' | 'ask', level: BookLevel) => (
    <tr
      key={`${side}-${level.price}`}
      class={`ladder-row ${side} clickable`}
      data-testid={`ladder-${side}-${priceKey(level.price)}`}
      data-price={priceKey(level.price)}
      title="Use this price"
      onClick={() => props.onPick(priceKey(level.price))}
    >
      <td class={`r ${side}`}>
        <Amount value={level.price} />
      </td>
      <td class="r num">{level.gpus}</td>
      <td class="r num muted">{level.orders}</td>
      <td class="bar-cell">
        <div class={`bar ${side}`} style={{ width: `${(100 * level.gpus) / maxGpus}%` }} />
      </td>
    </tr>
  );
  const bestBid = tryParseMicro(bids[0]?.price);
  const bestAsk = tryParseMicro(asks[0]?.price);
  const spread = bestBid !== null && bestAsk !== null ? bestAsk - bestBid : null;
  return (
    <table class="grid dense ladder" data-testid="ladder">
      <thead>
        <tr>
          <th class="r">Price</th>
          <th class="r">GPUs</th>
          <th class="r">Orders</th>
          <th />
        </tr>
      </thead>
      <tbody data-testid="ladder-asks">
        {asks.length === 0 && (
          <tr>
            <td colSpan={4} class="muted c">
              no asks
            </td>
          </tr>
        )}
        {[...asks].reverse().map((l) => row('ask', l))}
      </tbody>
      <tbody>
        <tr class="spread">
          <td colSpan={4} class="c muted" data-testid="spread">
            {spread === null
              ? 'spread —'
              : spread > 0n
                ? `spread ${formatMicro(spread)}`
                : 'bid ≥ ask: these orders cannot trade (see Top of book)'}
          </td>
        </tr>
      </tbody>
      <tbody data-testid="ladder-bids">
        {bids.map((l) => row('bid', l))}
        {bids.length === 0 && (
          <tr>
            <td colSpan={4} class="muted c">
              no bids
            </td>
          </tr>
        )}
      </tbody>
    </table>
  );
}

/**
 * The interruptible side of the book: asks' idle GPUs at their interruptible prices, the
 * interruptible bids, and how many GPUs interruptible jobs hold (still offered on demand).
 */
function InterruptibleBook(props: { book: Book }) {
  const asks = (props.book.interruptible_asks ?? []).slice(0, LADDER_LEVELS_MAX);
  const bids = (props.book.interruptible_bids ?? []).slice(0, LADDER_LEVELS_MAX);
  const inUse = props.book.interruptible_gpus_in_use ?? 0;
  const line = (side: 'bid' | 'ask', l: BookLevel) => (
    <tr key={`${side}-${l.price}`} class={`ladder-row ${side}`} data-testid={`interruptible-${side}-${priceKey(l.price)}`}>
      <td class={`r ${side}`}>
        <Amount value={l.price} />
      </td>
      <td class="r num">{l.gpus}</td>
      <td class="r num muted">{l.orders}</td>
    </tr>
  );
  return (
    <div class="interruptible-book" data-testid="interruptible-book">
      <h3 class="small">
        Interruptible{' '}
        <span class="muted" data-testid="interruptible-in-use">
          · {inUse} GPU{inUse === 1 ? '' : 's'} in interruptible use
        </span>
      </h3>
      {asks.length + bids.length === 0 ? (
        <p class="muted small" data-testid="interruptible-empty">
          No interruptible asks or bids. Asks with an interruptible price sell their idle GPUs cheaper; on-demand bids
          preempt them.
        </p>
      ) : (
        <table class="grid dense ladder">
          <tbody data-testid="interruptible-asks">{[...asks].reverse().map((l) => line('ask', l))}</tbody>
          <tbody data-testid="interruptible-bids">{bids.map((l) => line('bid', l))}</tbody>
        </table>
      )}
    </div>
  );
}

const BID_FIELDS = [
  'gpus',
  'max_hours',
  'price',
  'tif',
  'priority',
  'min_verification',
  'job.command',
  'job.env',
] as const;

type Requirement = '' | Exclude<VerificationLevel, 'simulated'>;

function BidForm(props: { cls: string; pickedPrice: string | null; offered?: LevelCounts }) {
  const form = useForm(BID_FIELDS);
  const keys = useMemo(() => new IdempotencyKeys(), []);
  const [gpus, setGpus] = useState('1');
  const [hours, setHours] = useState('1');
  const [price, setPrice] = useState('');
  const [tif, setTif] = useState<'gtc' | 'ioc'>('gtc');
  const [minVerification, setMinVerification] = useState<Requirement>('');
  const [priority, setPriority] = useState<BidPriority>('on_demand');
  const [command, setCommand] = useState('nvidia-smi && sleep 60');
  const [envText, setEnvText] = useState('');
  const [placed, setPlaced] = useState<Order | null>(null);
  const wallet = useResource(() => api.wallet(), [], { live: ['wallet'] });

  // A click on the ladder fills the price in.
  useEffect(() => {
    if (props.pickedPrice) setPrice(props.pickedPrice);
  }, [props.pickedPrice]);

  let escrow: { text: string; micro: bigint | null; note?: string };
  try {
    const micro = price.trim() ? escrowMicro(price, gpus, hours) : null;
    escrow = micro === null ? { text: '—', micro: null } : { text: formatMicro(micro), micro };
  } catch (e) {
    escrow = { text: '—', micro: null, note: e instanceof MoneyError ? `price: ${e.message}` : undefined };
  }
  const available = tryParseMicro(wallet.data?.available);
  const short = escrow.micro !== null && available !== null && escrow.micro > available;

  const onSubmit = (e: Event) => {
    e.preventDefault();
    setPlaced(null);
    const env = parseEnv(envText);
    if (typeof env === 'string') {
      form.setFieldError('job.env', env);
      return;
    }
    const body = {
      side: 'bid' as const,
      gpus: Number(gpus),
      max_hours: Number(hours),
      price: price.trim(),
      tif,
      job: { command: ['sh', '-c', command], env },
      ...(minVerification ? { min_verification: minVerification } : {}),
      ...(priority === 'interruptible' ? { priority } : {}),
    };
    void form.submit(async () => {
      const order = await api.placeOrder(props.cls, body, keys.keyFor(body));
      keys.done();
      setPlaced(order);
      wallet.reload();
    });
  };

  return (
    <Panel title="Buy GPU time (bid)" testid="bid-panel">
      <form onSubmit={onSubmit} data-testid="bid-form" noValidate>
        <FormError form={form} testid="bid-error" />
        <div class="row2">
          <Field form={form} name="gpus" id="bid-gpus" label="GPUs">
            {(aria) => (
              <input
                id="bid-gpus"
                name="gpus"
                type="number"
                min={1}
                step={1}
                inputMode="numeric"
                value={gpus}
                onInput={(e) => setGpus(inputValue(e))}
                data-testid="bid-gpus"
                {...aria}
              />
            )}
          </Field>
          <Field form={form} name="max_hours" id="bid-hours" label="Max hours">
            {(aria) => (
              <input
                id="bid-hours"
                name="max_hours"
                type="number"
                min={1}
                step={1}
                inputMode="numeric"
                value={hours}
                onInput={(e) => setHours(inputValue(e))}
                data-testid="bid-hours"
                {...aria}
              />
            )}
          </Field>
        </div>
        <div class="row2">
          <Field form={form} name="price" id="bid-price" label="Limit price (credits / GPU-hour)">
            {(aria) => (
              <input
                id="bid-price"
                name="price"
                type="text"
                inputMode="decimal"
                autoComplete="off"
                placeholder="e.g. 2.50"
                value={price}
                onInput={(e) => setPrice(inputValue(e))}
                data-testid="bid-price"
                {...aria}
              />
            )}
          </Field>
          <Field form={form} name="tif" id="bid-tif" label="Time in force">
            {(aria) => (
              <select
                id="bid-tif"
                name="tif"
                value={tif}
                onChange={(e) => setTif(inputValue(e) as 'gtc' | 'ioc')}
                data-testid="bid-tif"
                {...aria}
              >
                <option value="gtc">good till cancel</option>
                <option value="ioc">immediate or cancel</option>
              </select>
            )}
          </Field>
        </div>
        <Field
          form={form}
          name="priority"
          id="bid-priority"
          label="Priority"
          hint={
            <span class="muted small" data-testid="bid-priority-hint">
              {priority === 'interruptible'
                ? "Trades at asks' interruptible prices; an on-demand buyer may take the GPUs (your job gets SIGTERM, then is killed after the grace, and is not billed for it)"
                : 'The GPUs are yours until the lease ends'}
            </span>
          }
        >
          {(aria) => (
            <select
              id="bid-priority"
              name="priority"
              value={priority}
              onChange={(e) => setPriority(inputValue(e) as BidPriority)}
              data-testid="bid-priority"
              {...aria}
            >
              <option value="on_demand">on demand</option>
              <option value="interruptible">interruptible (cheaper, may be preempted)</option>
            </select>
          )}
        </Field>
        <Field
          form={form}
          name="min_verification"
          id="bid-min-verification"
          label="Require verification"
          hint={
            props.offered && (
              <span data-testid="bid-min-verification-hint">
                {countAtOrAbove(props.offered, minVerification || null)} GPUs offered now at{' '}
                {minVerification ? `${levelLabel(minVerification)} or above` : 'any level'}
              </span>
            )
          }
        >
          {(aria) => (
            <select
              id="bid-min-verification"
              name="min_verification"
              value={minVerification}
              onChange={(e) => setMinVerification(inputValue(e) as Requirement)}
              data-testid="bid-min-verification"
              {...aria}
            >
              <option value="" title="Any GPU the market sells, simulated ones included">
                any level
              </option>
              {REQUIRABLE_LEVELS.map((l) => (
                <option key={l} value={l} title={levelMeaning(l)}>
                  {levelLabel(l)} or above
                </option>
              ))}
            </select>
          )}
        </Field>
        <Field form={form} name="job.command" id="bid-command" label="Command (run with sh -c)">
          {(aria) => (
            <textarea
              id="bid-command"
              name="command"
              rows={2}
              spellcheck={false}
              value={command}
              onInput={(e) => setCommand(inputValue(e))}
              data-testid="bid-command"
              {...aria}
            />
          )}
        </Field>
        <Field form={form} name="job.env" id="bid-env" label="Environment (KEY=value per line, optional)">
          {(aria) => (
            <textarea
              id="bid-env"
              name="env"
              rows={1}
              spellcheck={false}
              value={envText}
              onInput={(e) => setEnvText(inputValue(e))}
              data-testid="bid-env"
              {...aria}
            />
          )}
        </Field>
        <div class={`escrow ${short ? 'short' : ''}`} data-testid="bid-escrow-box">
          Locks in escrow: <strong class="num" data-testid="bid-escrow">{escrow.text}</strong> credits
          {escrow.micro !== null && (
            <span class="muted small">
              {' '}
              = {price.trim()} × {gpus} GPU × {hours} h
            </span>
          )}
          {escrow.note && <div class="muted small">{escrow.note}</div>}
          {wallet.data && (
            <div class="muted small">
              Available: <Amount value={wallet.data.available} testid="bid-available" />
              {short && <span class="warn"> — not enough credits</span>}
            </div>
          )}
        </div>
        <button type="submit" class="primary buy" disabled={form.busy} data-testid="bid-submit">
          {form.busy ? 'Placing…' : 'Place bid'}
        </button>
        {placed && (
          <div class="notice" data-testid="bid-placed">
            Bid {shortId(placed.order_id)} {placed.status === 'filled' ? 'filled' : `is ${placed.status}`}
            {placed.min_verification && <> (requires {levelLabel(placed.min_verification)} or above)</>}
            {placed.priority === 'interruptible' && <> (interruptible)</>}
            {placed.escrow && (
              <>
                {' '}
                — escrow <Amount value={placed.escrow} />
              </>
            )}
            .
          </div>
        )}
      </form>
    </Panel>
  );
}

const ASK_FIELDS = ['host_id', 'gpus', 'price', 'interruptible_price', 'available_until', 'tif'] as const;

/** Free GPUs of a class on a host: its GPUs of that class that are not busy. */
export function freeGpus(host: Host, cls: string): number {
  return host.gpus.filter((g) => g.class === cls && !g.busy).length;
}

/**
 * The weakest level of a host's free GPUs of a class: an ask is graded by the weakest GPU
 * it binds, so this is the level an ask of all of them would have (at worst).
 */
export function hostLevel(host: Host, cls: string): VerificationLevel | null {
  return lowestLevel(host.gpus.filter((g) => g.class === cls && !g.busy).map((g) => g.verification?.level));
}

function toLocalInput(d: Date): string {
  const pad = (n: number) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

function AskForm(props: { cls: string; pickedPrice: string | null }) {
  const form = useForm(ASK_FIELDS);
  const keys = useMemo(() => new IdempotencyKeys(), []);
  const hosts = useResource(() => api.hosts(), [], { live: ['host'] });
  const [hostId, setHostId] = useState('');
  const [gpus, setGpus] = useState('1');
  const [price, setPrice] = useState('');
  const [interruptiblePrice, setInterruptiblePrice] = useState('');
  const [until, setUntil] = useState(() => toLocalInput(new Date(Date.now() + 24 * 3600 * 1000)));
  const [tif, setTif] = useState<'gtc' | 'ioc'>('gtc');
  const [placed, setPlaced] = useState<Order | null>(null);

  useEffect(() => {
    if (props.pickedPrice) setPrice(props.pickedPrice);
  }, [props.pickedPrice]);

  const eligible = (hosts.data?.items ?? []).filter((h) => h.live && h.gpus.some((g) => g.class === props.cls));
  const selected = eligible.find((h) => h.host_id === hostId) ?? eligible[0];

  const onSubmit = (e: Event) => {
    e.preventDefault();
    setPlaced(null);
    const untilDate = new Date(until);
    if (Number.isNaN(untilDate.getTime())) {
      form.setFieldError('available_until', 'pick a date and time');
      return;
    }
    const body = {
      side: 'ask' as const,
      host_id: selected?.host_id ?? '',
      gpus: Number(gpus),
      available_until: untilDate.toISOString(),
      price: price.trim(),
      tif,
      ...(interruptiblePrice.trim() ? { interruptible_price: interruptiblePrice.trim() } : {}),
    };
    void form.submit(async () => {
      const order = await api.placeOrder(props.cls, body, keys.keyFor(body));
      keys.done();
      setPlaced(order);
      hosts.reload();
    });
  };

  return (
    <Panel title="Sell GPU time (ask)" testid="ask-panel">
      {hosts.notAvailable ? (
        <NotAvailable what="Hosts" />
      ) : hosts.data && eligible.length === 0 ? (
        <Empty testid="ask-no-hosts">
          You have no live host with {props.cls} GPUs. Start <code>capex-agent</code> on one; it shows up under{' '}
          <a href={href('provider')}>Provider</a>.
        </Empty>
      ) : (
        <form onSubmit={onSubmit} data-testid="ask-form" noValidate>
          <ErrorBox error={hosts.error} />
          <FormError form={form} testid="ask-error" />
          <Field form={form} name="host_id" id="ask-host" label="Host">
            {(aria) => (
              <select
                id="ask-host"
                name="host_id"
                value={selected?.host_id ?? ''}
                onChange={(e) => setHostId(inputValue(e))}
                data-testid="ask-host"
                {...aria}
              >
                {eligible.map((h) => (
                  <option key={h.host_id} value={h.host_id}>
                    {h.name} — {freeGpus(h, props.cls)} free of {h.gpus.filter((g) => g.class === props.cls).length}
                    {hostLevel(h, props.cls) && ` · ${levelLabel(hostLevel(h, props.cls))}`}
                  </option>
                ))}
              </select>
            )}
          </Field>
          <div class="row2">
            <Field form={form} name="gpus" id="ask-gpus" label="GPUs">
              {(aria) => (
                <input
                  id="ask-gpus"
                  name="gpus"
                  type="number"
                  min={1}
                  max={selected ? freeGpus(selected, props.cls) : undefined}
                  step={1}
                  value={gpus}
                  onInput={(e) => setGpus(inputValue(e))}
                  data-testid="ask-gpus"
                  {...aria}
                />
              )}
            </Field>
            <Field form={form} name="price" id="ask-price" label="Price (credits / GPU-hour)">
              {(aria) => (
                <input
                  id="ask-price"
                  name="price"
                  type="text"
                  inputMode="decimal"
                  autoComplete="off"
                  placeholder="e.g. 2.50"
                  value={price}
                  onInput={(e) => setPrice(inputValue(e))}
                  data-testid="ask-price"
                  {...aria}
                />
              )}
            </Field>
          </div>
          <Field
            form={form}
            name="interruptible_price"
            id="ask-interruptible-price"
            label="Interruptible price (optional, below the price)"
            hint={
              <span class="muted small">
                Idle GPUs of the ask also sell at this price to interruptible bids; they stay offered on demand and an
                on-demand buyer preempts them.
              </span>
            }
          >
            {(aria) => (
              <input
                id="ask-interruptible-price"
                name="interruptible_price"
                type="text"
                inputMode="decimal"
                autoComplete="off"
                placeholder="e.g. 1.20"
                value={interruptiblePrice}
                onInput={(e) => setInterruptiblePrice(inputValue(e))}
                data-testid="ask-interruptible-price"
                {...aria}
              />
            )}
          </Field>
          <div class="row2">
            <Field form={form} name="available_until" id="ask-until" label="Available until">
              {(aria) => (
                <input
                  id="ask-until"
                  name="available_until"
                  type="datetime-local"
                  value={until}
                  onInput={(e) => setUntil(inputValue(e))}
                  data-testid="ask-until"
                  {...aria}
                />
              )}
            </Field>
            <Field form={form} name="tif" id="ask-tif" label="Time in force">
              {(aria) => (
                <select
                  id="ask-tif"
                  name="tif"
                  value={tif}
                  onChange={(e) => setTif(inputValue(e) as 'gtc' | 'ioc')}
                  data-testid="ask-tif"
                  {...aria}
                >
                  <option value="gtc">good till cancel</option>
                  <option value="ioc">immediate or cancel</option>
                </select>
              )}
            </Field>
          </div>
          {selected && hostLevel(selected, props.cls) && (
            <p class="muted small" data-testid="ask-level">
              Your free GPUs here are at least <LevelBadge level={hostLevel(selected, props.cls)} />; an ask is graded
              by the weakest GPU it binds.
            </p>
          )}
          <button type="submit" class="primary sell" disabled={form.busy || !selected} data-testid="ask-submit">
            {form.busy ? 'Placing…' : 'Place ask'}
          </button>
          {placed && (
            <div class="notice" data-testid="ask-placed">
              Ask {shortId(placed.order_id)} is {placed.status}
              {placed.interruptible_price && <> (interruptible at {placed.interruptible_price})</>}.
            </div>
          )}
        </form>
      )}
    </Panel>
  );
}

/** My open orders in this market, with the reasons the matcher gives for what is unfilled. */
function MyMarketOrders(props: { cls: string }) {
  const orders = useResource(() => api.orders('open'), [], { live: ['order', 'trade', 'book'] });
  return (
    <Panel title="My open orders here" testid="my-market-orders">
      <Loadable res={orders} what="Orders">
        {(page) => {
          const mine = page.items.filter((o) => o.class === props.cls);
          return mine.length === 0 ? (
            <Empty testid="my-market-orders-empty">No open orders in this market.</Empty>
          ) : (
            <OrderTable orders={mine} onChanged={orders.reload} showReasons />
          );
        }}
      </Loadable>
    </Panel>
  );
}

