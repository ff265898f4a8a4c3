import { describe, expect, it } from 'vitest';
import {
  attemptNumbers,
  attemptTotals,
  childTotals,
  currentAttempt,
  isManaged,
  jobEventMatches,
  jobStateText,
  reasonText,
  restartSummary,
  wallSeconds,
} from './attempts';
import type { Attempt, ChildJob, Job } from './types';

function attempt(n: number, over: Partial<Attempt> = {}): Attempt {
  return {
    attempt: n,
    lease_id: `lease-${n}`,
    host_id: `host-${n}`,
    state: 'exited',
    started_at: '2026-01-01T00:00:00Z',
    ended_at: '2026-01-01T00:00:03.500Z',
    end_reason: 'failed',
    exit_code: 3,
    billed: '2.662',
    cost: '0.026620',
    sla_credit: '0',
    ...over,
  };
}

describe('reasonText', () => {
  it('explains the end reasons of attempts and jobs', () => {
    expect(reasonText('host_lost')).toBe('host lost (stopped reporting)');
    expect(reasonText('failed')).toBe('failed (non-zero exit)');
    expect(reasonText('exited')).toBe('exited (code 0)');
    expect(reasonText('attempts_exhausted')).toBe('attempts exhausted');
  });
  it('passes unknown codes through readably, and a dash for none', () => {
    expect(reasonText('some_new_reason')).toBe('some new reason');
    expect(reasonText(null)).toBe('—');
    expect(reasonText('')).toBe('—');
  });
});

describe('attemptTotals', () => {
  it('sums cost and SLA credits exactly, not as floats', () => {
    const t = attemptTotals([
      attempt(1, { cost: '0.1', sla_credit: '0.01' }),
      attempt(2, { cost: '0.2', sla_credit: '0.02', billed: '1.338' }),
    ]);
    expect(t.count).toBe(2);
    expect(t.cost).toBe('0.3');
    expect(t.slaCredits).toBe('0.03');
    expect(t.billedSeconds).toBe(4);
  });
  it('is zero for no attempts and skips garbage', () => {
    expect(attemptTotals([])).toEqual({ count: 0, billedSeconds: 0, cost: '0', slaCredits: '0' });
    expect(attemptTotals([attempt(1, { cost: 'x', billed: 'y' })]).cost).toBe('0');
  });
});

describe('wallSeconds', () => {
  it('measures start to end, or to now while running', () => {
    expect(wallSeconds(attempt(1))).toBe(3.5);
    const now = Date.parse('2026-01-01T00:01:00Z');
    expect(wallSeconds(attempt(1, { ended_at: null }), now)).toBe(60);
    expect(wallSeconds(attempt(1, { started_at: null }))).toBeNull();
  });
});

describe('restartSummary', () => {
  it('reads the policy', () => {
    expect(restartSummary({ on: ['failed'], max_attempts: 2, max_price: '1.5' })).toBe(
      'on failed · max 2 attempts · max price 1.5 / GPU-h',
    );
    expect(restartSummary({ on: ['host_lost', 'failed'], max_attempts: 1 })).toBe('on host_lost, failed · max 1 attempt');
    expect(restartSummary(null)).toBe('no restarts');
    expect(restartSummary({ on: [] })).toBe('no restarts');
  });
});

describe('jobStateText', () => {
  it('says why a job gave up', () => {
    expect(jobStateText({ job_state: 'gave_up', end_reason: 'attempts_exhausted' })).toBe('gave up: attempts exhausted');
    expect(jobStateText({ job_state: 'ended', end_reason: 'exited' })).toBe('ended: exited (code 0)');
    expect(jobStateText({ job_state: 'restarting', end_reason: null })).toBe('restarting');
    expect(jobStateText({})).toBe('—');
  });
});

describe('currentAttempt and attemptNumbers', () => {
  it('marks the attempt of the lease the view describes', () => {
    const attempts = [attempt(1), attempt(2)];
    expect(currentAttempt({ lease_id: 'lease-1', attempt: 1, attempts })).toBe(1);
    expect(currentAttempt({ lease_id: 'lease-9', attempt: 2, attempts })).toBe(2);
    expect(currentAttempt({ attempts })).toBe(2);
    expect(currentAttempt({ attempts: [] })).toBeNull();
  });
  it('lists attempt numbers once, ascending', () => {
    expect(attemptNumbers({ attempt: 3, attempts: [attempt(2), attempt(1)] })).toEqual([1, 2, 3]);
    expect(attemptNumbers({})).toEqual([]);
  });
});

describe('childTotals and isManaged', () => {
  const child = (held: string, spent: string): ChildJob => ({
    job_id: 'c',
    class: 'H100-80GB',
    status: 'open',
    gpus: 1,
    price: '1',
    max_hours: '1',
    held,
    spent,
    created_at: '2026-01-01T00:00:00Z',
  });
  it('sums what the children hold and spent exactly', () => {
    expect(childTotals([child('0.1', '0.7'), child('0.2', '0.000001')])).toEqual({ held: '0.3', spent: '0.700001' });
  });
  it('tells a managed job from a plain one', () => {
    const plain = { job_id: 'j', attempts: [attempt(1)] } as unknown as Job;
    expect(isManaged(plain)).toBe(false);
    expect(isManaged({ ...plain, restart: { on: ['failed'] } })).toBe(true);
    expect(isManaged({ ...plain, parent_job_id: 'p' })).toBe(true);
    expect(isManaged({ ...plain, budget: '5' })).toBe(true);
  });
});

describe('jobEventMatches', () => {
  const job = { job_id: 'job', lease_id: 'lease-2', attempts: [attempt(1), attempt(2)], job_state: 'running' };
  it('matches events naming the job or any of its leases', () => {
    expect(jobEventMatches({ job_id: 'job' }, job, 'job')).toBe(true);
    expect(jobEventMatches({ job_id: 'lease-1' }, job, 'job')).toBe(true);
    expect(jobEventMatches({ job_id: 'lease-2' }, job, 'lease-2')).toBe(true);
    expect(jobEventMatches({ other: 1 }, job, 'job')).toBe(true);
  });
  it("ignores other jobs' events unless a new attempt is awaited or nothing is loaded", () => {
    expect(jobEventMatches({ job_id: 'elsewhere' }, job, 'job')).toBe(false);
    expect(jobEventMatches({ job_id: 'elsewhere' }, { ...job, job_state: 'restarting' }, 'job')).toBe(true);
    expect(jobEventMatches({ job_id: 'elsewhere' }, null, 'job')).toBe(true);
  });
});
