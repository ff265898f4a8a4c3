import { describe, expect, it } from 'vitest';
import { shortId } from './components/ui';

describe('shortId', () => {
  it('tells apart UUIDv7 ids made in the same minute (their random tail, not their timestamp)', () => {
    const a = '01a21bc5-88e7-73b0-b2ab-d4d6e4973d64';
    const b = '01a21bc5-8e8a-72eb-9362-f6c7d2474971';
    expect(shortId(a)).toBe('e4973d64');
    expect(shortId(b)).toBe('d2474971');
    expect(shortId(a)).not.toBe(shortId(b));
  });

  it('shows a dash for a missing id', () => {
    expect(shortId(null)).toBe('—');
    expect(shortId(undefined)).toBe('—');
  });
});
