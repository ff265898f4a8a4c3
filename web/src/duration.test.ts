import { describe, expect, it } from 'vitest';
import { fmtDuration } from './components/ui';

describe('fmtDuration', () => {
  it('reads the decimal strings the API sends for billed time', () => {
    expect(fmtDuration('2.662')).toBe('2s');
    expect(fmtDuration('3723.5')).toBe('1h 2m 3s');
    expect(fmtDuration(61)).toBe('1m 1s');
  });

  it('shows a dash for nothing or garbage', () => {
    expect(fmtDuration(null)).toBe('—');
    expect(fmtDuration('')).toBe('—');
    expect(fmtDuration('soon')).toBe('—');
  });
});
