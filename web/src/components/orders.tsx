import { Fragment } from 'preact';
import { useState } from 'preact/hooks';
import { api } from '../api';
import { microToDecimalString, tryParseMicro } from '../money';
import { href } from '../router';
import { useResource } from '../resource';
import type { Order } from '../types';
import { reasonDetail, reasonHeadline, requirementText } from '../verification';
import { Amount, ErrorBox, StatusBadge, fmtClock, shortId } from './ui';
import { LevelBadge } from './verification';

/** The canonical text of a price for test ids and comparisons: "1.50" -> "1.5". */
export function priceKey(price: string): string {
  const micro = tryParseMicro(price);
  return micro === null ? price : microToDecimalString(micro);
}

/**
 * Open bids whose reasons are fetched, per table: the order list does not carry reasons,
 * so each bid's come from GET /orders/{id}, one request per bid and live event.
 */
const REASONS_FETCHED_MAX = 20;

/** Orders with a cancel button; shared by the market page and My orders. */
export function OrderTable(props: { orders: Order[]; onChanged: () => void; showReasons?: boolean; showClass?: boolean }) {
  const [cancelError, setCancelError] = useState<unknown>(null);
  const [cancelling, setCancelling] = useState<string | null>(null);
  const reasonsFetched = new Set(
    props.orders
      .filter((o) => o.side === 'bid' && o.status === 'open')
      .slice(0, REASONS_FETCHED_MAX)
      .map((o) => o.order_id),
  );
  const cancel = async (id: string) => {
    setCancelError(null);
    setCancelling(id);
    try {
      await api.cancelOrder(id);
    } catch (err) {
      setCancelError(err);
    } finally {
      setCancelling(null);
      props.onChanged();
    }
  };
  return (
    <>
      <ErrorBox error={cancelError} testid="cancel-error" />
      <table class="grid dense" data-testid="orders-table">
        <thead>
          <tr>
            <th>Order</th>
            {props.showClass && <th>Market</th>}
            <th>Side</th>
            <th class="r">Price</th>
            <th class="r">GPUs left</th>
            <th class="r">Hours / until</th>
            <th class="r">Escrow</th>
            <th>TIF</th>
            <th title="Bids: the weakest level they accept. Asks: the level of their weakest GPU.">Verification</th>
            <th>Status</th>
            <th>Placed</th>
            <th />
          </tr>
        </thead>
        <tbody>
          {props.orders.map((o) => {
            const openBid = o.side === 'bid' && o.status === 'open';
            const withReasons = props.showReasons && openBid && reasonsFetched.has(o.order_id);
            return (
              <Fragment key={o.order_id}>
                <tr data-testid={`order-row-${o.order_id}`} data-side={o.side} data-price={priceKey(o.price)}>
                  <td class="mono">{shortId(o.order_id)}</td>
                  {props.showClass && (
                    <td>
                      <a href={href('markets', o.class)}>{o.class}</a>
                    </td>
                  )}
                  <td class={o.side} data-testid={`order-side-${o.order_id}`}>
                    {o.side}
                    {o.priority === 'interruptible' && (
                      <span class="badge small" title="Interruptible: trades at interruptible prices, may be preempted">
                        {' '}
                        interruptible
                      </span>
                    )}
                  </td>
                  <td class="r">
                    <Amount value={o.price} />
                    {o.interruptible_price && (
                      <div class="muted small" data-testid={`order-interruptible-price-${o.order_id}`}>
                        interruptible <Amount value={o.interruptible_price} />
                      </div>
                    )}
                  </td>
                  <td class="r num">
                    {o.gpus_remaining} / {o.gpus}
                    {!!o.gpus_interruptible && (
                      <div class="muted small" data-testid={`order-gpus-interruptible-${o.order_id}`}>
                        {o.gpus_interruptible} in interruptible use
                      </div>
                    )}
                  </td>
                  <td class="r num">{o.side === 'bid' ? `${o.max_hours ?? '—'} h` : fmtUntil(o.available_until)}</td>
                  <td class="r">
                    <Amount value={o.escrow} />
                  </td>
                  <td>{o.tif}</td>
                  <td data-testid={`order-verification-${o.order_id}`}>
                    <OrderVerification order={o} />
                  </td>
                  <td>
                    <StatusBadge status={o.status} testid={`order-status-${o.order_id}`} />
                  </td>
                  <td>{fmtClock(o.created_at)}</td>
                  <td>
                    {o.status === 'open' && (
                      <button
                        type="button"
                        class="small danger"
                        disabled={cancelling === o.order_id}
                        onClick={() => void cancel(o.order_id)}
                        data-testid={`cancel-order-${o.order_id}`}
                      >
                        {cancelling === o.order_id ? 'Cancelling…' : 'Cancel'}
                      </button>
                    )}
                  </td>
                </tr>
                {withReasons && <ReasonsRow order={o} colSpan={props.showClass ? 12 : 11} />}
              </Fragment>
            );
          })}
        </tbody>
      </table>
    </>
  );
}

/** Why an open bid has not traded, as the matcher says now (refetched on book changes). */
function ReasonsRow(props: { order: Order; colSpan: number }) {
  const o = props.order;
  const res = useResource(() => api.order(o.order_id), [o.order_id, o.gpus_remaining], {
    live: ['book', 'trade', 'order'],
    liveFilter: (_event, data) => {
      const c = (data as { class?: unknown } | null)?.class;
      return typeof c !== 'string' || c === o.class;
    },
  });
  const reasons = res.data?.unfilled_reasons ?? o.unfilled_reasons ?? [];
  if (reasons.length === 0 || res.data?.status === 'filled') return null;
  return (
    <tr class="reasons">
      <td colSpan={props.colSpan}>
        <span class="muted">Why not filled:</span>
        <ul data-testid={`unfilled-reasons-${o.order_id}`}>
          {reasons.map((r) => (
            <li key={r.code} data-code={r.code} title={r.code}>
              <strong>{reasonHeadline(r)}</strong>: {reasonDetail(r)}
            </li>
          ))}
        </ul>
      </td>
    </tr>
  );
}

/** A bid's requirement ("any", "≥ challenged") or an ask's level as a badge. */
function OrderVerification(props: { order: Order }) {
  const o = props.order;
  if (o.side === 'bid') {
    return o.min_verification ? (
      <LevelBadge level={o.min_verification} prefix="≥ " />
    ) : (
      <span class="muted">{requirementText(null)}</span>
    );
  }
  return o.verification ? <LevelBadge level={o.verification} /> : <span class="muted">—</span>;
}

function fmtUntil(iso: string | null | undefined): string {
  return iso ? `until ${fmtClock(iso)}` : '—';
}
