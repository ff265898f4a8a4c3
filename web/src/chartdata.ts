// Turning API data into what the charts plot (numbers, for drawing only).
import { toPlotNumber } from './money';
import type { Book } from './types';

/** One step of cumulative depth: at `price` (exact API string), `gpus` on that side at that price or better. */
export interface DepthStep {
  price: string;
  gpus: number;
}

/**
 * Cumulative depth per side, best price first: each level adds its GPUs to those of the
 * better levels. Exact prices, for the chart's data attributes and for tests.
 */
export function depthSteps(book: Book): { bids: DepthStep[]; asks: DepthStep[] } {
  const side = (levels: Book['bids']) => {
    let sum = 0;
    return levels.map((l) => ({ price: l.price, gpus: (sum += l.gpus) }));
  };
  return { bids: side(book.bids), asks: side(book.asks) };
}

/**
 * What the depth chart plots: cumulative GPUs on each side by price, drawn as stepped,
 * filled areas. Bids run from the best bid down to the left edge (at price p, the GPUs
 * wanted at p or higher), asks from the best ask up to the right edge (offered at p or
 * lower). The edges lie a margin beyond the outermost levels so that a side with a single
 * level is an area, not a dot; each side is null beyond its best price.
 */
export function depthSeries(book: Book): { x: number[]; bids: (number | null)[]; asks: (number | null)[] } {
  const steps = depthSteps(book);
  const bids = steps.bids.map((s) => ({ p: toPlotNumber(s.price), gpus: s.gpus })).filter((s) => Number.isFinite(s.p));
  const asks = steps.asks.map((s) => ({ p: toPlotNumber(s.price), gpus: s.gpus })).filter((s) => Number.isFinite(s.p));
  if (bids.length + asks.length === 0) return { x: [], bids: [], asks: [] };
  const prices = [...bids, ...asks].map((s) => s.p);
  const lo = Math.min(...prices);
  const hi = Math.max(...prices);
  // 15 % of the range beyond each edge; a book at one price gets 5 % of that price.
  const margin = hi > lo ? (hi - lo) * 0.15 : Math.max(Math.abs(hi) * 0.05, 0.01);
  const left = lo - margin;
  const right = hi + margin;
  const x = [...new Set([...(bids.length ? [left] : []), ...prices, ...(asks.length ? [right] : [])])].sort(
    (a, b) => a - b,
  );
  const bestBid = bids.length ? Math.max(...bids.map((b) => b.p)) : -Infinity;
  const bestAsk = asks.length ? Math.min(...asks.map((a) => a.p)) : Infinity;
  const bidAt = (p: number) => {
    if (p > bestBid) return null;
    let cum = 0;
    for (const b of bids) if (b.p >= p) cum = Math.max(cum, b.gpus);
    return cum;
  };
  const askAt = (p: number) => {
    if (p < bestAsk) return null;
    let cum = 0;
    for (const a of asks) if (a.p <= p) cum = Math.max(cum, a.gpus);
    return cum;
  };
  return { x, bids: x.map(bidAt), asks: x.map(askAt) };
}

/** Decimals the price axis needs: those of the most precise price, 2 to 6. */
export function pricePrecision(prices: string[]): number {
  let most = 2;
  for (const p of prices) {
    const frac = String(p).split('.')[1]?.replace(/0+$/, '') ?? '';
    most = Math.max(most, Math.min(frac.length, 6));
  }
  return most;
}
