// Verification levels of GPUs (see docs/verification.md): what the exchange itself checked
// about a GPU, weakest first. Pure logic, unit-tested; the badge and panels that show it
// are in components/verification.tsx.
import type { GpuVerification, LevelCounts, UnfilledReason, VerificationLevel } from './types';

/** Every level, weakest first: each promises everything the ones before it do. */
export const LEVELS: readonly VerificationLevel[] = ['simulated', 'reported', 'challenged', 'cc_attested'];

/** What a bid may require (every GPU is at least simulated, so that is no requirement). */
export const REQUIRABLE_LEVELS: readonly VerificationLevel[] = ['reported', 'challenged', 'cc_attested'];

export function isLevel(text: unknown): text is VerificationLevel {
  return typeof text === 'string' && (LEVELS as readonly string[]).includes(text);
}

/** 0 for simulated up to 3 for cc_attested; -1 for anything the UI does not know. */
export function levelRank(level: string | null | undefined): number {
  return isLevel(level) ? LEVELS.indexOf(level) : -1;
}

/** Negative when `a` is weaker than `b`. Unknown levels sort below every known one. */
export function compareLevels(a: string | null | undefined, b: string | null | undefined): number {
  return levelRank(a) - levelRank(b);
}

/** Whether a GPU at `level` satisfies a bid requiring `required` (null: any level). */
export function meetsLevel(level: string | null | undefined, required: string | null | undefined): boolean {
  if (required === null || required === undefined || required === '') return true;
  return isLevel(level) && compareLevels(level, required) >= 0;
}

/** The weakest of some levels (an ask is as verified as its least verified GPU); null if none. */
export function lowestLevel(levels: readonly (string | null | undefined)[]): VerificationLevel | null {
  let low: VerificationLevel | null = null;
  for (const l of levels) {
    if (isLevel(l) && (low === null || levelRank(l) < levelRank(low))) low = l;
  }
  return low;
}

const LABELS: Record<VerificationLevel, string> = {
  simulated: 'simulated',
  reported: 'reported',
  challenged: 'challenged',
  cc_attested: 'CC attested',
};

/** The short name a badge shows. */
export function levelLabel(level: string | null | undefined): string {
  return isLevel(level) ? LABELS[level] : (level ?? 'unknown');
}

const MEANINGS: Record<VerificationLevel, string> = {
  simulated: "Simulated: the agent's simulated backend; no real GPU stands behind it.",
  reported: "Reported: NVML on the host says so; the host's word only, not checked by the exchange.",
  challenged: 'Challenged: passed a proof-of-compute challenge from the exchange, computed fast enough for its class.',
  cc_attested: "CC attested: NVIDIA confidential-computing evidence for this GPU, verified by the exchange.",
};

/** One sentence: what the level proves. */
export function levelMeaning(level: string | null | undefined): string {
  return isLevel(level) ? MEANINGS[level] : `Unknown verification level "${level ?? ''}".`;
}

/** A time as the tooltips write it: local, 24-hour, to the minute. */
export function fmtDeadline(iso: string): string {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  return d.toLocaleString(undefined, {
    hour12: false,
    year: 'numeric',
    month: 'short',
    day: 'numeric',
    hour: '2-digit',
    minute: '2-digit',
  });
}

/**
 * The tooltip of a GPU's badge: what its level proves, until when it holds (challenged,
 * cc_attested), and for cc_attested whether the measurements were compared with
 * reference values.
 */
export function levelTitle(
  level: string | null | undefined,
  v?: Pick<GpuVerification, 'challenged_until' | 'cc_attested_until' | 'cc_measurements_checked'> | null,
  fmt: (iso: string) => string = fmtDeadline,
): string {
  const parts = [levelMeaning(level)];
  if (level === 'challenged' && v?.challenged_until) parts.push(`Holds until ${fmt(v.challenged_until)}.`);
  if (level === 'cc_attested') {
    if (v?.cc_attested_until) parts.push(`Holds until ${fmt(v.cc_attested_until)}.`);
    if (v?.cc_measurements_checked === false) parts.push('Measurements not checked against reference values.');
    if (v?.cc_measurements_checked === true) parts.push('Measurements checked against reference values.');
    if (v?.challenged_until) parts.push(`Also challenged until ${fmt(v.challenged_until)}.`);
  }
  return parts.join(' ');
}

/** Per-level counts in level order, a missing level counting 0. */
export function levelCountList(counts: LevelCounts | null | undefined): { level: VerificationLevel; n: number }[] {
  return LEVELS.map((level) => ({ level, n: Number(counts?.[level] ?? 0) || 0 }));
}

/** GPUs at `level` or above: what a bid requiring `level` could buy (null: all). */
export function countAtOrAbove(counts: LevelCounts | null | undefined, level: string | null | undefined): number {
  return levelCountList(counts)
    .filter((c) => meetsLevel(c.level, level))
    .reduce((sum, c) => sum + c.n, 0);
}

/** A bid's requirement as the order lists write it. */
export function requirementText(min: string | null | undefined): string {
  return min ? `≥ ${levelLabel(min)}` : 'any';
}

const REASON_HEADLINES: Record<string, string> = {
  no_asks: 'No asks in this market',
  only_own_asks: 'Only your own asks',
  price_below_best_ask: 'Price below the cheapest ask',
  no_host_with_enough_gpus: 'No host offers that many GPUs',
  no_ask_long_enough: 'No ask lasts long enough',
  verification_below_required: 'No GPUs offered at the verification you require',
  reliability_below_required: 'No host meets the uptime you require',
  no_single_ask_fits: 'No single ask meets all your limits',
};

/** A person's headline for an unfilled reason; the code itself, spaced, for unknown codes. */
export function reasonHeadline(reason: Pick<UnfilledReason, 'code'>): string {
  return REASON_HEADLINES[reason.code] ?? reason.code.replace(/_/g, ' ');
}

/**
 * The server's message with level names as the badges spell them ("cc_attested" ->
 * "CC attested") and the request field named as the form does.
 */
export function reasonDetail(reason: Pick<UnfilledReason, 'message'>): string {
  return reason.message
    .replace(/\bmin_verification\b/g, 'the required verification')
    .replace(/\b(simulated|reported|challenged|cc_attested)\b/g, (l) => levelLabel(l));
}

/** Server time spent checking a challenge's answer: "850 µs", "3.2 ms", "1.25 s". */
export function fmtMicros(us: number | null | undefined): string {
  if (us === null || us === undefined || !Number.isFinite(us)) return '—';
  if (us < 1000) return `${Math.round(us)} µs`;
  if (us < 1_000_000) return `${trim(us / 1000, us < 10_000 ? 2 : 1)} ms`;
  return `${trim(us / 1_000_000, 2)} s`;
}

/** Milliseconds between two times, as "420 ms" or "3.4 s"; "—" when either is missing. */
export function fmtSpan(fromIso: string | null | undefined, toIso: string | null | undefined): string {
  if (!fromIso || !toIso) return '—';
  const ms = Date.parse(toIso) - Date.parse(fromIso);
  if (!Number.isFinite(ms)) return '—';
  if (ms < 1000) return `${Math.max(0, Math.round(ms))} ms`;
  return `${trim(ms / 1000, ms < 10_000 ? 2 : 1)} s`;
}

function trim(x: number, decimals: number): string {
  return x.toFixed(decimals).replace(/\.?0+$/, '');
}
