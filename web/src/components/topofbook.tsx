// The top of a market's book order by order (sizes, hosts, limits) and, where the best
// bid is at or above the best ask, why those orders do not trade: an aggregated ladder
// alone makes a book whose bid for 2 GPUs rests above a 1-GPU ask look broken.
import { api } from '../api';
import type { LiveEvent } from '../live';
import { useResource } from '../resource';
import type { CrossingPair, TopOrder } from '../types';
import { Amount, Loadable, Panel, shortId } from './ui';

/** Leading orders listed per side. */
const TOP_ORDERS_SHOWN = 3;

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}

function describe(o: TopOrder): string {
  const size = plural(o.gpus, 'GPU');
  return o.side === 'ask' ? `${o.price} × ${size} on ${o.host_name ?? shortId(o.host_id)}` : `${o.price} × ${size}`;
}

function limits(o: TopOrder): string {
  const parts: string[] = [];
  if (o.side === 'bid') {
    if (o.max_hours) parts.push(`for ${o.max_hours} h`);
    parts.push(o.min_verification ? `≥ ${o.min_verification}` : 'any level');
    if (o.min_uptime_7d) parts.push(`uptime ≥ ${o.min_uptime_7d}`);
  } else {
    if (o.verification) parts.push(o.verification);
    if (o.host_uptime_7d) parts.push(`uptime ${o.host_uptime_7d}`);
  }
  return parts.join(', ');
}

export function TopOfBookPanel(props: { cls: string; liveFilter: (event: LiveEvent, data: unknown) => boolean }) {
  const top = useResource(() => api.top(props.cls), [props.cls], {
    live: ['book', 'trade', 'order'],
    liveFilter: props.liveFilter,
  });
  return (
    <Panel title="Top of book" testid="top-panel">
      <Loadable res={top} what="Top of book">
        {(t) => {
          const byId = new Map([...t.bids, ...t.asks].map((o) => [o.order_id, o]));
          return (
            <div class="top-of-book">
              <p class={t.crossed ? 'notice warn' : 'muted'} data-testid="top-summary" data-crossed={String(t.crossed)}>
                {t.summary}
              </p>
              <div class="top-sides">
                {(['bid', 'ask'] as const).map((side) => {
                  const orders = (side === 'bid' ? t.bids : t.asks).slice(0, TOP_ORDERS_SHOWN);
                  return (
                    <table class="grid dense" data-testid={`top-${side}s`} key={side}>
                      <thead>
                        <tr>
                          <th>{side === 'bid' ? 'Bids' : 'Asks'}</th>
                          <th class="r">Price</th>
                          <th class="r">GPUs</th>
                          <th>{side === 'ask' ? 'Host' : 'Wants'}</th>
                          <th>Limits</th>
                        </tr>
                      </thead>
                      <tbody>
                        {orders.length === 0 && (
                          <tr>
                            <td colSpan={5} class="muted c">
                              no {side}s
                            </td>
                          </tr>
                        )}
                        {orders.map((o, i) => (
                          <tr key={o.order_id} data-testid={`top-${side}`} data-order={o.order_id}>
                            <td class="mono muted">{i === 0 ? 'best' : shortId(o.order_id)}</td>
                            <td class={`r ${side}`}>
                              <Amount value={o.price} testid="top-price" />
                            </td>
                            <td class="r num" data-testid="top-gpus">
                              {o.gpus}
                            </td>
                            <td data-testid="top-host">
                              {side === 'ask' ? (o.host_name ?? shortId(o.host_id)) : 'all on one host'}
                            </td>
                            <td class="muted small">{limits(o)}</td>
                          </tr>
                        ))}
                      </tbody>
                    </table>
                  );
                })}
              </div>
              {t.crossing.length > 0 && (
                <div class="crossing" data-testid="crossing">
                  <strong>Why the crossing orders do not trade</strong>
                  <ul>
                    {t.crossing.slice(0, 6).map((p) => (
                      <CrossingRow key={`${p.bid_order_id}-${p.ask_order_id}`} pair={p} byId={byId} />
                    ))}
                  </ul>
                </div>
              )}
            </div>
          );
        }}
      </Loadable>
    </Panel>
  );
}

function CrossingRow(props: { pair: CrossingPair; byId: Map<string, TopOrder> }) {
  const p = props.pair;
  const bid = props.byId.get(p.bid_order_id);
  const ask = props.byId.get(p.ask_order_id);
  return (
    <li data-testid="crossing-pair" data-bid={p.bid_order_id} data-ask={p.ask_order_id}>
      <span class="bid">bid {bid ? describe(bid) : p.bid_price}</span> vs{' '}
      <span class="ask">ask {ask ? describe(ask) : p.ask_price}</span>:{' '}
      {p.reasons.map((r) => (
        <span key={r.code} class="reason" data-code={r.code} data-testid="crossing-reason">
          {r.message}
        </span>
      ))}
    </li>
  );
}
