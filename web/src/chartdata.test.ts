import { describe, expect, it } from 'vitest';
import { depthSeries, depthSteps, pricePrecision } from './chartdata';

describe('depthSeries', () => {
  it('accumulates GPUs away from the spread on each side', () => {
    const d = depthSeries({
      class: 'H100-80GB',
      bids: [
        { price: '2.5', gpus: 1, orders: 1 },
        { price: '2', gpus: 4, orders: 2 },
      ],
      asks: [
        { price: '3', gpus: 2, orders: 1 },
        { price: '3.5', gpus: 8, orders: 3 },
      ],
    });
    // Edges 15 % of the 2 .. 3.5 range beyond the outermost levels.
    expect(d.x).toEqual([1.775, 2, 2.5, 3, 3.5, 3.725]);
    expect(d.bids).toEqual([5, 5, 1, null, null, null]);
    expect(d.asks).toEqual([null, null, null, 2, 10, 10]);
  });

  it('draws a one-level side as an area between its price and the edge, not a dot', () => {
    const d = depthSeries({
      class: 'RTX4090-24GB',
      bids: [{ price: '0.46', gpus: 2, orders: 1 }],
      asks: [{ price: '0.45', gpus: 1, orders: 1 }],
    });
    const bidPoints = d.bids.filter((v) => v !== null);
    const askPoints = d.asks.filter((v) => v !== null);
    expect(bidPoints.length).toBeGreaterThanOrEqual(2);
    expect(askPoints.length).toBeGreaterThanOrEqual(2);
    expect(Math.max(...(bidPoints as number[]))).toBe(2);
    expect(Math.max(...(askPoints as number[]))).toBe(1);
    expect(d.x[0]).toBeLessThan(0.45);
    expect(d.x[d.x.length - 1]).toBeGreaterThan(0.46);
  });

  it('gives exact cumulative steps per side', () => {
    expect(
      depthSteps({
        class: 'x',
        bids: [
          { price: '2.5', gpus: 1, orders: 1 },
          { price: '2', gpus: 4, orders: 2 },
        ],
        asks: [{ price: '3', gpus: 2, orders: 1 }],
      }),
    ).toEqual({ bids: [{ price: '2.5', gpus: 1 }, { price: '2', gpus: 5 }], asks: [{ price: '3', gpus: 2 }] });
  });

  it('handles an empty book', () => {
    expect(depthSeries({ class: 'x', bids: [], asks: [] })).toEqual({ x: [], bids: [], asks: [] });
  });
});

describe('pricePrecision', () => {
  it('uses the decimals of the most precise price, 2 to 6', () => {
    expect(pricePrecision(['2', '2.5'])).toBe(2);
    expect(pricePrecision(['0.012345', '1.1'])).toBe(6);
    expect(pricePrecision(['1.2340'])).toBe(3);
    expect(pricePrecision([])).toBe(2);
  });
});
