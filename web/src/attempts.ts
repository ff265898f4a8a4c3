// Pure helpers for a managed job's attempts, restart policy, SLA credits and children
// (issue 17). No DOM, no fetch: unit-tested in attempts.test.ts.
import { microToDecimalString, sumMicro } from './money';
import type { Attempt, ChildJob, Job, RestartPolicy } from './types';

/** What an attempt's or a job's end reason means, in a few words. Unknown codes pass through. */
const REASONS: Record<string, string> = {
  exited: 'exited (code 0)',
  failed: 'failed (non-zero exit)',
  host_lost: 'host lost (stopped reporting)',
  preempted: 'preempted by an on-demand buyer',
  cancelled: 'cancelled',
  released: 'released its GPUs',
  max_duration: 'reached max hours',
  attempts_exhausted: 'attempts exhausted',
  deadline: 'next bid not filled before the deadline',
  insufficient_funds: 'wallet could not fund the next attempt',
  placement_refused: 'next bid refused',
  bid_cancelled: 'next bid cancelled',
};

export function reasonText(reason: string | null | undefined): string {
  if (!reason) return '—';
  return REASONS[reason] ?? reason.replace(/_/g, ' ');
}

/** The attempt the job view's lease fields describe (the latest one, unless a lease was named). */
export function currentAttempt(job: Pick<Job, 'attempt' | 'lease_id' | 'attempts'>): number | null {
  const attempts = job.attempts ?? [];
  const byLease = job.lease_id ? attempts.find((a) => a.lease_id === job.lease_id) : undefined;
  if (byLease) return byLease.attempt;
  if (typeof job.attempt === 'number') return job.attempt;
  return attempts.length ? attempts[attempts.length - 1].attempt : null;
}

/** Wall-clock seconds from start to end (or to `now` while it runs); null before it started. */
export function wallSeconds(a: Pick<Attempt, 'started_at' | 'ended_at'>, now = Date.now()): number | null {
  if (!a.started_at) return null;
  const start = Date.parse(a.started_at);
  const end = a.ended_at ? Date.parse(a.ended_at) : now;
  if (!Number.isFinite(start) || !Number.isFinite(end)) return null;
  return Math.max(0, (end - start) / 1000);
}

export interface AttemptTotals {
  count: number;
  /** Seconds billed over all attempts (sum of the decimal strings, exact to the millisecond). */
  billedSeconds: number;
  /** Credits billed, gross, as an exact decimal string. */
  cost: string;
  /** SLA credits paid back, as an exact decimal string. */
  slaCredits: string;
}

/** Exact sums over the attempts: amounts summed as micro-credits, never as floats. */
export function attemptTotals(attempts: readonly Attempt[]): AttemptTotals {
  const billedMilli = attempts.reduce((t, a) => {
    const n = Number(a.billed);
    return Number.isFinite(n) ? t + Math.round(n * 1000) : t;
  }, 0);
  return {
    count: attempts.length,
    billedSeconds: billedMilli / 1000,
    cost: microToDecimalString(sumMicro(attempts.map((a) => a.cost))),
    slaCredits: microToDecimalString(sumMicro(attempts.map((a) => a.sla_credit))),
  };
}

/** "on failed, host_lost · max 3 attempts · max price 1.5 / GPU-h"; "no restarts" without one. */
export function restartSummary(policy: RestartPolicy | null | undefined): string {
  if (!policy || !policy.on || policy.on.length === 0) return 'no restarts';
  const parts = [`on ${policy.on.join(', ')}`];
  if (policy.max_attempts != null) parts.push(`max ${policy.max_attempts} attempt${policy.max_attempts === 1 ? '' : 's'}`);
  if (policy.max_price != null && policy.max_price !== '') parts.push(`max price ${policy.max_price} / GPU-h`);
  return parts.join(' · ');
}

/** The job state line: "gave up: attempts exhausted", "restarting", "running". */
export function jobStateText(job: Pick<Job, 'job_state' | 'end_reason'>): string {
  const state = job.job_state ?? '';
  if (!state) return '—';
  const label = state === 'preempting' ? 'preempting (SIGTERM sent; killed at the deadline)' : state.replace(/_/g, ' ');
  return (state === 'gave_up' || state === 'ended') && job.end_reason ? `${label}: ${reasonText(job.end_reason)}` : label;
}

/** A job is managed when it has a restart policy, more than one attempt, a budget, children or a parent. */
export function isManaged(job: Job): boolean {
  return (
    !!job.restart ||
    (job.attempts?.length ?? 0) > 1 ||
    job.budget != null ||
    (job.children?.length ?? 0) > 0 ||
    !!job.parent_job_id
  );
}

/** Exact sums over the children: what they hold now and what they spent. */
export function childTotals(children: readonly ChildJob[]): { held: string; spent: string } {
  return {
    held: microToDecimalString(sumMicro(children.map((c) => c.held))),
    spent: microToDecimalString(sumMicro(children.map((c) => c.spent))),
  };
}

/** The attempt numbers a log selector offers, ascending, without duplicates. */
export function attemptNumbers(job: Pick<Job, 'attempt' | 'attempts'>): number[] {
  const set = new Set<number>((job.attempts ?? []).map((a) => a.attempt));
  if (typeof job.attempt === 'number') set.add(job.attempt);
  return [...set].sort((a, b) => a - b);
}

/**
 * Whether a live event is about this job. Lease events name the attempt's lease in their
 * `job_id`, so an event matches the job's id, its current lease or any attempt's lease; while
 * the job is restarting (the next attempt's lease not seen yet) or not loaded yet, any job
 * event may be its own. Events without a `job_id` always match.
 */
export function jobEventMatches(
  data: unknown,
  job: Pick<Job, 'job_id' | 'lease_id' | 'attempts' | 'job_state'> | null | undefined,
  id: string,
): boolean {
  const j = (data as { job_id?: unknown } | null)?.job_id;
  if (typeof j !== 'string' || j === id) return true;
  if (!job) return true;
  if (j === job.job_id || j === job.lease_id) return true;
  if ((job.attempts ?? []).some((a) => a.lease_id === j)) return true;
  return job.job_state === 'restarting';
}
