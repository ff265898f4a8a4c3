import { describe, expect, it } from 'vitest';
import {
  LEVELS,
  compareLevels,
  countAtOrAbove,
  fmtMicros,
  fmtSpan,
  isLevel,
  levelCountList,
  levelLabel,
  levelRank,
  levelTitle,
  lowestLevel,
  meetsLevel,
  reasonDetail,
  reasonHeadline,
  requirementText,
} from './verification';

describe('level order', () => {
  it('ranks simulated < reported < challenged < cc_attested', () => {
    expect(LEVELS.map(levelRank)).toEqual([0, 1, 2, 3]);
    expect(compareLevels('simulated', 'reported')).toBeLessThan(0);
    expect(compareLevels('cc_attested', 'challenged')).toBeGreaterThan(0);
    expect(compareLevels('challenged', 'challenged')).toBe(0);
  });

  it('puts unknown levels below every known one', () => {
    expect(levelRank('attested')).toBe(-1);
    expect(levelRank(null)).toBe(-1);
    expect(isLevel('attested')).toBe(false);
    expect(compareLevels('attested', 'simulated')).toBeLessThan(0);
  });

  it('says whether a level meets a requirement, null meaning any', () => {
    expect(meetsLevel('simulated', null)).toBe(true);
    expect(meetsLevel('simulated', undefined)).toBe(true);
    expect(meetsLevel('reported', 'challenged')).toBe(false);
    expect(meetsLevel('challenged', 'challenged')).toBe(true);
    expect(meetsLevel('cc_attested', 'challenged')).toBe(true);
    expect(meetsLevel('bogus', 'reported')).toBe(false);
  });

  it('finds the weakest level, ignoring unknown ones', () => {
    expect(lowestLevel(['cc_attested', 'reported', 'challenged'])).toBe('reported');
    expect(lowestLevel(['challenged', 'nonsense', null])).toBe('challenged');
    expect(lowestLevel([])).toBeNull();
  });
});

describe('labels and tooltips', () => {
  it('labels every level, cc_attested as "CC attested"', () => {
    expect(LEVELS.map(levelLabel)).toEqual(['simulated', 'reported', 'challenged', 'CC attested']);
    expect(levelLabel('something_new')).toBe('something_new');
  });

  const fmt = (iso: string) => `<${iso}>`;

  it('says what simulated and reported prove, with no deadline', () => {
    expect(levelTitle('simulated', null, fmt)).toMatch(/simulated backend/);
    const reported = levelTitle('reported', { challenged_until: null, cc_attested_until: null, cc_measurements_checked: null }, fmt);
    expect(reported).toMatch(/host's word/);
    expect(reported).not.toMatch(/until/);
  });

  it('gives challenged its deadline', () => {
    const t = levelTitle(
      'challenged',
      { challenged_until: '2030-01-01T10:00:00Z', cc_attested_until: null, cc_measurements_checked: null },
      fmt,
    );
    expect(t).toMatch(/proof-of-compute/);
    expect(t).toContain('Holds until <2030-01-01T10:00:00Z>.');
  });

  it('says when cc_attested measurements were not checked', () => {
    const t = levelTitle(
      'cc_attested',
      { challenged_until: null, cc_attested_until: '2030-01-02T00:00:00Z', cc_measurements_checked: false },
      fmt,
    );
    expect(t).toContain('Holds until <2030-01-02T00:00:00Z>.');
    expect(t).toMatch(/measurements not checked/i);
    const checked = levelTitle(
      'cc_attested',
      { challenged_until: null, cc_attested_until: null, cc_measurements_checked: true },
      fmt,
    );
    expect(checked).not.toMatch(/not checked/);
    expect(checked).toMatch(/Measurements checked/);
  });
});

describe('counts', () => {
  const counts = { simulated: 2, reported: 1, challenged: 3, cc_attested: 0 };

  it('lists every level in order, missing ones as 0', () => {
    expect(levelCountList({ challenged: 4 })).toEqual([
      { level: 'simulated', n: 0 },
      { level: 'reported', n: 0 },
      { level: 'challenged', n: 4 },
      { level: 'cc_attested', n: 0 },
    ]);
    expect(levelCountList(undefined).every((c) => c.n === 0)).toBe(true);
  });

  it('counts what a requirement could buy', () => {
    expect(countAtOrAbove(counts, null)).toBe(6);
    expect(countAtOrAbove(counts, 'reported')).toBe(4);
    expect(countAtOrAbove(counts, 'challenged')).toBe(3);
    expect(countAtOrAbove(counts, 'cc_attested')).toBe(0);
  });

  it('writes a bid requirement', () => {
    expect(requirementText(null)).toBe('any');
    expect(requirementText('challenged')).toBe('≥ challenged');
    expect(requirementText('cc_attested')).toBe('≥ CC attested');
  });
});

describe('unfilled reasons', () => {
  it('has a headline for the verification and reliability codes', () => {
    expect(reasonHeadline({ code: 'verification_below_required' })).toMatch(/verification you require/);
    expect(reasonHeadline({ code: 'reliability_below_required' })).toMatch(/uptime/);
    expect(reasonHeadline({ code: 'no_asks' })).toBe('No asks in this market');
    expect(reasonHeadline({ code: 'brand_new_code' })).toBe('brand new code');
  });

  it('spells levels in the message as the badges do', () => {
    expect(
      reasonDetail({ message: "no ask's GPUs meet min_verification (the strongest offered is cc_attested)" }),
    ).toBe("no ask's GPUs meet the required verification (the strongest offered is CC attested)");
    expect(reasonDetail({ message: 'your price is below the cheapest ask (1.5)' })).toBe(
      'your price is below the cheapest ask (1.5)',
    );
  });
});

describe('durations', () => {
  it('formats verification time in µs, ms or s', () => {
    expect(fmtMicros(850)).toBe('850 µs');
    expect(fmtMicros(3210)).toBe('3.21 ms');
    expect(fmtMicros(42_500)).toBe('42.5 ms');
    expect(fmtMicros(1_250_000)).toBe('1.25 s');
    expect(fmtMicros(null)).toBe('—');
  });

  it('formats the span between two times', () => {
    expect(fmtSpan('2030-01-01T00:00:00.000Z', '2030-01-01T00:00:00.420Z')).toBe('420 ms');
    expect(fmtSpan('2030-01-01T00:00:00Z', '2030-01-01T00:00:03.400Z')).toBe('3.4 s');
    expect(fmtSpan('2030-01-01T00:00:00Z', null)).toBe('—');
  });
});
