import { describe, expect, it } from 'vitest';
import { depthSeries, pricePrecision } from './chartdata';

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
    expect(d.x).toEqual([2, 2.5, 3, 3.5]);
    expect(d.bids).toEqual([5, 1, null, null]);
    expect(d.asks).toEqual([null, null, 2, 10]);
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
