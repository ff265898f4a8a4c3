// Credits and prices arrive from the API as decimal strings ("12.5", at most 6 decimals).
// Everything here works on those strings and on BigInt micro-units (1 credit = 1_000_000
// micro-credits): a float never touches an amount, so 0.1 x 3 is 0.3, not 0.30000000000000004.

/** Decimal places the exchange keeps for credits and prices. */
export const CREDITS_SCALE = 6;

/** A string that is not a decimal amount the exchange accepts. */
export class MoneyError extends Error {
  constructor(
    readonly code: 'invalid_decimal' | 'too_many_decimals',
    message: string,
  ) {
    super(message);
    this.name = 'MoneyError';
  }
}

/** An exact decimal: value x 10^-scale. */
interface Decimal {
  value: bigint;
  scale: number;
}

const DECIMAL_RE = /^([+-]?)(\d*)(?:\.(\d*))?$/;

/** Parses "1234.5", "-0.000001", ".5", "1_000"-free plain decimals (no exponent, no separators). */
function parseDecimal(raw: string): Decimal {
  const text = raw.trim();
  const m = DECIMAL_RE.exec(text);
  if (!m || (m[2] === '' && (m[3] ?? '') === '')) {
    throw new MoneyError('invalid_decimal', `"${raw}" is not a decimal number`);
  }
  const sign = m[1] === '-' ? -1n : 1n;
  const whole = m[2] || '0';
  const frac = m[3] ?? '';
  return { value: sign * BigInt(whole + frac), scale: frac.length };
}

/** Moves a decimal to `scale` places, rounding half away from zero when it loses digits. */
function rescale(d: Decimal, scale: number): bigint {
  if (d.scale <= scale) return d.value * 10n ** BigInt(scale - d.scale);
  const div = 10n ** BigInt(d.scale - scale);
  const negative = d.value < 0n;
  const abs = negative ? -d.value : d.value;
  let q = abs / div;
  if ((abs % div) * 2n >= div) q += 1n;
  return negative ? -q : q;
}

/**
 * Parses an amount the way the server does: a plain decimal with at most 6 decimal places.
 * More precision is refused, not rounded. Returns micro-units.
 */
export function parseMicro(raw: string): bigint {
  const d = parseDecimal(raw);
  // Trailing zeros beyond 6 places carry no precision ("1.5000000" is 1.5).
  let { value, scale } = d;
  while (scale > CREDITS_SCALE && value % 10n === 0n) {
    value /= 10n;
    scale -= 1;
  }
  if (scale > CREDITS_SCALE) {
    throw new MoneyError('too_many_decimals', `at most ${CREDITS_SCALE} decimal places`);
  }
  return rescale({ value, scale }, CREDITS_SCALE);
}

/** Like `parseMicro`, but null instead of an error. */
export function tryParseMicro(raw: string | null | undefined): bigint | null {
  if (raw === null || raw === undefined) return null;
  try {
    return parseMicro(raw);
  } catch {
    return null;
  }
}

function groupThousands(digits: string): string {
  return digits.replace(/\B(?=(\d{3})+(?!\d))/g, ',');
}

export interface FormatOptions {
  /** Fewest decimals shown (trailing zeros are kept down to this). Default 2. */
  minDecimals?: number;
  /** Most decimals shown; more precise values are rounded half away from zero. Default 6. */
  maxDecimals?: number;
  /** Thousands separators. Default true. */
  grouping?: boolean;
}

/** Formats micro-units: 1234567500000n -> "1,234,567.50". */
export function formatMicro(micro: bigint, opts: FormatOptions = {}): string {
  return formatDecimal({ value: micro, scale: CREDITS_SCALE }, opts);
}

function formatDecimal(d: Decimal, opts: FormatOptions): string {
  const maxDecimals = opts.maxDecimals ?? CREDITS_SCALE;
  const minDecimals = Math.min(opts.minDecimals ?? 2, maxDecimals);
  const grouping = opts.grouping ?? true;
  const scaled = rescale(d, maxDecimals);
  const negative = scaled < 0n;
  const digits = (negative ? -scaled : scaled).toString().padStart(maxDecimals + 1, '0');
  const whole = digits.slice(0, digits.length - maxDecimals);
  let frac = digits.slice(digits.length - maxDecimals);
  let end = frac.length;
  while (end > minDecimals && frac[end - 1] === '0') end -= 1;
  frac = frac.slice(0, end);
  const sign = negative && scaled !== 0n ? '-' : '';
  const wholeText = grouping ? groupThousands(whole) : whole;
  return frac ? `${sign}${wholeText}.${frac}` : `${sign}${wholeText}`;
}

/**
 * Formats an API amount string for display: "1234.5" -> "1,234.50". Null, undefined or
 * an unparseable string show as a dash (the raw text is never shown as if it were a number).
 */
export function formatCredits(raw: string | null | undefined, opts: FormatOptions = {}): string {
  if (raw === null || raw === undefined || raw === '') return '—';
  try {
    return formatDecimal(parseDecimal(raw), opts);
  } catch {
    return '—';
  }
}

/** Micro-units as the plain decimal string the API takes: 300000n -> "0.3". */
export function microToDecimalString(micro: bigint): string {
  return formatMicro(micro, { minDecimals: 0, grouping: false });
}

/** Parses a whole, positive count ("3"); null for anything else ("3.5", "-1", "", "1e3"). */
export function parseCount(raw: string | number): bigint | null {
  const text = String(raw).trim();
  if (!/^\d+$/.test(text)) return null;
  const n = BigInt(text);
  return n > 0n ? n : null;
}

/**
 * The escrow a bid locks: price per GPU-hour x GPUs x hours, in micro-units, exact.
 * Throws MoneyError for a bad price; null when the counts are not whole positive numbers.
 */
export function escrowMicro(price: string, gpus: string | number, hours: string | number): bigint | null {
  const priceMicro = parseMicro(price);
  const g = parseCount(gpus);
  const h = parseCount(hours);
  if (g === null || h === null) return null;
  return priceMicro * g * h;
}

/** Sums amount strings exactly (unparseable ones are skipped); result in micro-units. */
export function sumMicro(amounts: Iterable<string | null | undefined>): bigint {
  let total = 0n;
  for (const a of amounts) {
    const micro = tryParseMicro(a);
    if (micro !== null) total += micro;
  }
  return total;
}

/** Compares two amount strings exactly: negative, zero or positive like a sort comparator. */
export function compareAmounts(a: string, b: string): number {
  const x = parseMicro(a);
  const y = parseMicro(b);
  return x < y ? -1 : x > y ? 1 : 0;
}

/**
 * A number for plotting only (chart axes need numbers). Never use the result for
 * arithmetic or display of money: that is what the functions above are for.
 */
export function toPlotNumber(raw: string | null | undefined): number {
  if (raw === null || raw === undefined) return NaN;
  return Number(raw);
}
