import { describe, expect, it } from 'vitest';
import {
  MoneyError,
  compareAmounts,
  escrowMicro,
  formatCredits,
  formatMicro,
  microToDecimalString,
  parseCount,
  parseMicro,
  sumMicro,
  tryParseMicro,
} from './money';

describe('parseMicro', () => {
  it('parses plain decimals into micro-units', () => {
    expect(parseMicro('12.5')).toBe(12_500_000n);
    expect(parseMicro('0.000001')).toBe(1n);
    expect(parseMicro('1')).toBe(1_000_000n);
    expect(parseMicro('.5')).toBe(500_000n);
    expect(parseMicro('7.')).toBe(7_000_000n);
    expect(parseMicro(' 3.25 ')).toBe(3_250_000n);
    expect(parseMicro('-2.75')).toBe(-2_750_000n);
    expect(parseMicro('+4')).toBe(4_000_000n);
  });

  it('refuses more than 6 decimals instead of rounding', () => {
    expect(() => parseMicro('1.1234567')).toThrow(MoneyError);
    try {
      parseMicro('0.0000001');
    } catch (e) {
      expect((e as MoneyError).code).toBe('too_many_decimals');
    }
    // Zeros past the sixth place add no precision.
    expect(parseMicro('1.50000000')).toBe(1_500_000n);
  });

  it('refuses things that are not decimals', () => {
    for (const bad of ['', ' ', '.', 'abc', '1e3', '1,000', '1.2.3', '--1', '0x10', 'NaN', 'Infinity']) {
      expect(() => parseMicro(bad), bad).toThrow(MoneyError);
    }
    expect(tryParseMicro('nope')).toBeNull();
    expect(tryParseMicro(null)).toBeNull();
    expect(tryParseMicro('2')).toBe(2_000_000n);
  });

  it('handles values far beyond float precision', () => {
    expect(parseMicro('123456789012345678901234.123456')).toBe(123456789012345678901234123456n);
  });
});

describe('formatCredits', () => {
  it('shows at least 2 and at most 6 decimals', () => {
    expect(formatCredits('12.5')).toBe('12.50');
    expect(formatCredits('12')).toBe('12.00');
    expect(formatCredits('0.123456')).toBe('0.123456');
    expect(formatCredits('0.1200')).toBe('0.12');
    expect(formatCredits('0.000001')).toBe('0.000001');
    expect(formatCredits('0')).toBe('0.00');
  });

  it('adds thousands separators', () => {
    expect(formatCredits('1234567.5')).toBe('1,234,567.50');
    expect(formatCredits('999')).toBe('999.00');
    expect(formatCredits('1000')).toBe('1,000.00');
    expect(formatCredits('-1500.25')).toBe('-1,500.25');
  });

  it('keeps big values exact', () => {
    expect(formatCredits('98765432109876543210.123456')).toBe('98,765,432,109,876,543,210.123456');
    expect(formatCredits('9007199254740993')).toBe('9,007,199,254,740,993.00');
  });

  it('can fix the number of decimals', () => {
    expect(formatCredits('1.5', { minDecimals: 6 })).toBe('1.500000');
    expect(formatCredits('1.123456', { maxDecimals: 2 })).toBe('1.12');
    expect(formatCredits('1.125', { maxDecimals: 2 })).toBe('1.13');
    expect(formatCredits('-1.125', { maxDecimals: 2 })).toBe('-1.13');
    expect(formatCredits('-0.001', { maxDecimals: 2 })).toBe('0.00');
    expect(formatCredits('1234.5', { grouping: false })).toBe('1234.50');
  });

  it('shows a dash for missing or unreadable values', () => {
    expect(formatCredits(null)).toBe('—');
    expect(formatCredits(undefined)).toBe('—');
    expect(formatCredits('')).toBe('—');
    expect(formatCredits('abc')).toBe('—');
  });

  it('rounds display of over-precise server values rather than failing', () => {
    expect(formatCredits('0.00000049')).toBe('0.00');
    expect(formatCredits('0.0000005')).toBe('0.000001');
  });
});

describe('escrowMicro', () => {
  it('computes 0.1 x 3 exactly', () => {
    const micro = escrowMicro('0.1', 3, 1);
    expect(micro).toBe(300_000n);
    expect(formatMicro(micro!)).toBe('0.30');
    expect(microToDecimalString(micro!)).toBe('0.3');
  });

  it('multiplies price x GPUs x hours', () => {
    expect(escrowMicro('2.5', '8', '24')).toBe(480_000_000n);
    expect(formatMicro(escrowMicro('2.5', 8, 24)!)).toBe('480.00');
    expect(formatMicro(escrowMicro('0.000001', 1, 1)!)).toBe('0.000001');
    expect(formatMicro(escrowMicro('1.333333', 3, 7)!)).toBe('27.999993');
  });

  it('stays exact for big values', () => {
    const micro = escrowMicro('99999999.999999', 1024, 8760)!;
    // 100,000,000 x 8,970,240 GPU-hours, less 0.000001 x 8,970,240.
    expect(micro).toBe(99_999_999_999_999n * 1024n * 8760n);
    expect(formatMicro(micro)).toBe('897,023,999,999,991.02976');
  });

  it('refuses a price with too many decimals and non-whole counts', () => {
    expect(() => escrowMicro('1.1234567', 1, 1)).toThrow(MoneyError);
    expect(escrowMicro('1', '1.5', 1)).toBeNull();
    expect(escrowMicro('1', 2, '')).toBeNull();
    expect(escrowMicro('1', 0, 2)).toBeNull();
  });
});

describe('helpers', () => {
  it('parseCount accepts whole positive numbers only', () => {
    expect(parseCount('3')).toBe(3n);
    expect(parseCount(4)).toBe(4n);
    expect(parseCount('0')).toBeNull();
    expect(parseCount('-1')).toBeNull();
    expect(parseCount('1e2')).toBeNull();
  });

  it('sumMicro adds exactly and skips junk', () => {
    expect(sumMicro(['0.1', '0.2', null, 'x'])).toBe(300_000n);
    expect(formatMicro(sumMicro(['1000000.000001', '0.999999']))).toBe('1,000,001.00');
  });

  it('compareAmounts orders exactly', () => {
    expect(compareAmounts('0.3', '0.30')).toBe(0);
    expect(compareAmounts('10', '9.999999')).toBe(1);
    expect(compareAmounts('-1', '0')).toBe(-1);
    expect(['10', '2', '2.5'].sort(compareAmounts)).toEqual(['2', '2.5', '10']);
  });
});
