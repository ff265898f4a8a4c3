// Turning API data into what the charts plot (numbers, for drawing only).
import { toPlotNumber } from './money';
import type { Book } from './types';

/**
 * Cumulative GPUs on each side by price: bids step down to the left of the spread, asks
 * step up to the right.
 */
export function depthSeries(book: Book): { x: number[]; bids: (number | null)[]; asks: (number | null)[] } {
  const bidCum = new Map<number, number>();
  let sum = 0;
  for (const level of book.bids) {
    sum += level.gpus;
    bidCum.set(toPlotNumber(level.price), sum);
  }
  const askCum = new Map<number, number>();
  sum = 0;
  for (const level of book.asks) {
    sum += level.gpus;
    askCum.set(toPlotNumber(level.price), sum);
  }
  const x = [...new Set([...bidCum.keys(), ...askCum.keys()])].filter(Number.isFinite).sort((a, b) => a - b);
  // Bids: at price p, the GPUs wanted at p or higher; asks: offered at p or lower.
  const bids = x.map((p) => {
    let best: number | null = null;
    for (const [price, cum] of bidCum) if (price >= p) best = Math.max(best ?? 0, cum);
    return best;
  });
  const asks = x.map((p) => {
    let best: number | null = null;
    for (const [price, cum] of askCum) if (price <= p) best = Math.max(best ?? 0, cum);
    return best;
  });
  return { x, bids, asks };
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
