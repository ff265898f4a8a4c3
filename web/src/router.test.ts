import { describe, expect, it } from 'vitest';
import { parseHash } from './router';

describe('parseHash', () => {
  it('splits and decodes path segments and reads the query', () => {
    const r = parseHash('#/markets/RTX4090-24GB');
    expect(r.parts).toEqual(['markets', 'RTX4090-24GB']);
    const l = parseHash('#/login?next=%23%2Fwallet');
    expect(l.parts).toEqual(['login']);
    expect(l.query.get('next')).toBe('#/wallet');
    expect(parseHash('').parts).toEqual([]);
    expect(parseHash('#/a%20b/').parts).toEqual(['a b']);
  });
});
