import { useEffect, useLayoutEffect, useRef, useState } from 'preact/hooks';
import { api, asApiError, type ApiError } from '../api';
import { GpuTelemetry } from '../components/telemetry';
import {
  Amount,
  Empty,
  ErrorBox,
  Loadable,
  NotAvailable,
  Panel,
  StatusBadge,
  fmtClock,
  fmtDuration,
  fmtTime,
  shortId,
} from '../components/ui';
import { useLive } from '../live';
import { useResource } from '../resource';
import { href, navigate } from '../router';
import {
  attemptNumbers,
  attemptTotals,
  childTotals,
  currentAttempt,
  jobEventMatches,
  jobStateText,
  reasonText,
  restartSummary,
} from '../attempts';
import type { Attempt, ChildJob, Job, LogLine } from '../types';

/** Lines kept in the log view; older ones scroll off. */
const LOG_LINES_MAX = 5_000;
/** How often logs are read while a job runs. */
const LOG_POLL_MS = 2_000;

export function isActive(job: Job): boolean {
  return job.state === 'pending' || job.state === 'running';
}

export function JobsPage(props: { selected?: string }) {
  const jobs = useResource(() => api.jobs(), [], { live: ['job', 'wallet'] });
  return (
    <div class="page" data-testid="jobs-page">
      <Panel title="My jobs" testid="jobs-panel">
        <Loadable res={jobs} what="Jobs">
          {(page) =>
            page.items.length === 0 ? (
              <Empty testid="jobs-empty">No jobs yet. A job starts when one of your bids trades.</Empty>
            ) : (
              <table class="grid dense" data-testid="jobs-table">
                <thead>
                  <tr>
                    <th>Job</th>
                    <th>State</th>
                    <th>Market</th>
                    <th>Host</th>
                    <th class="r">GPUs</th>
                    <th class="r">Price</th>
                    <th class="r">Billed</th>
                    <th class="r">Cost so far</th>
                    <th class="r">Escrow left</th>
                    <th>Started</th>
                  </tr>
                </thead>
                <tbody>
                  {page.items.map((j) => (
                    <tr
                      key={j.lease_id ?? j.job_id}
                      class={`clickable ${props.selected === j.job_id ? 'selected' : ''}`}
                      onClick={() => navigate(href('jobs', j.job_id))}
                      data-testid={`job-row-${j.job_id}`}
                      data-state={j.state}
                    >
                      <td class="mono">
                        <a href={href('jobs', j.job_id)}>{shortId(j.job_id)}</a>
                        {(j.attempt ?? 1) > 1 && (
                          <span class="muted" data-testid="job-row-attempt">
                            {' '}
                            #{j.attempt}
                          </span>
                        )}
                      </td>
                      <td>
                        <StatusBadge status={j.state} testid="job-row-state" />
                      </td>
                      <td>{j.class}</td>
                      <td class="mono" data-testid="job-row-host">
                        {shortId(j.host_id)}
                      </td>
                      <td class="r num" data-testid="job-row-gpus">
                        {j.gpus}
                      </td>
                      <td class="r">
                        <Amount value={j.price} />
                      </td>
                      <td class="r num">{fmtDuration(j.billed_seconds)}</td>
                      <td class="r">
                        <Amount value={j.cost_so_far} />
                      </td>
                      <td class="r">
                        <Amount value={j.escrow_left} />
                      </td>
                      <td>{fmtTime(j.started_at)}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
            )
          }
        </Loadable>
      </Panel>
      {props.selected && <JobDetail id={props.selected} />}
    </div>
  );
}

function JobDetail(props: { id: string }) {
  // Lease events name the attempt's lease, not the job: match them against what was loaded.
  const loaded = useRef<Job | null>(null);
  const matches = (_e: unknown, data: unknown) => jobEventMatches(data, loaded.current, props.id);
  const job = useResource(() => api.job(props.id), [props.id], { live: ['job', 'wallet'], liveFilter: matches });
  loaded.current = job.data ?? null;
  const [cancelError, setCancelError] = useState<unknown>(null);
  const [cancelling, setCancelling] = useState(false);
  const cancel = async () => {
    setCancelError(null);
    setCancelling(true);
    try {
      await api.cancelJob(props.id);
    } catch (err) {
      setCancelError(err);
    } finally {
      setCancelling(false);
      job.reload();
    }
  };
  return (
    <Panel title={`Job ${shortId(props.id)}`} testid="job-detail">
      <Loadable res={job} what="Job">
        {(j) => (
          <>
            <div class="kv-grid">
              <div>
                <span>State</span>
                <StatusBadge status={j.state} testid="job-state" />
              </div>
              <div>
                <span>Host</span>
                <code data-testid="job-host">{j.host_id ?? '—'}</code>
              </div>
              <div>
                <span>GPUs</span>
                <span class="num" data-testid="job-gpus">
                  {j.gpus} × {j.class}
                </span>
              </div>
              <div>
                <span>Price</span>
                <Amount value={j.price} unit="/ GPU-h" />
              </div>
              <div>
                <span>Billed time</span>
                <span class="num" data-testid="job-billed">
                  {fmtDuration(j.billed_seconds)}
                </span>
              </div>
              <div>
                <span>Cost so far</span>
                <Amount value={j.cost_so_far} testid="job-cost" />
              </div>
              <div>
                <span>Escrow left</span>
                <Amount value={j.escrow_left} testid="job-escrow-left" />
              </div>
              <div>
                <span>Exit code</span>
                <span class="num" data-testid="job-exit-code">
                  {j.exit_code ?? '—'}
                </span>
              </div>
              <div>
                <span>Started</span>
                {fmtTime(j.started_at)}
              </div>
              <div>
                <span>Ended</span>
                {fmtTime(j.ended_at)}
              </div>
            </div>
            <div class="command">
              <code>{(j.command ?? []).join(' ')}</code>
            </div>
            {isActive(j) && (
              <button
                type="button"
                class="danger"
                disabled={cancelling}
                onClick={() => void cancel()}
                data-testid="job-cancel"
              >
                {cancelling ? 'Cancelling…' : 'Cancel job'}
              </button>
            )}
            <ErrorBox error={cancelError} testid="job-cancel-error" />
            <JobAttempts job={j} />
            <JobChildren job={j} />
            <h3>Logs</h3>
            <JobLogs
              id={j.job_id}
              active={isActive(j)}
              current={currentAttempt(j)}
              attempts={attemptNumbers(j)}
              matches={matches}
            />
            {j.host_id && (j.gpu_uuids ?? []).length > 0 && (
              <>
                <h3>GPU telemetry{(j.attempts?.length ?? 0) > 1 ? ` (attempt ${j.attempt})` : ''}</h3>
                <GpuTelemetry
                  hostId={j.host_id}
                  jobId={j.lease_id ?? j.job_id}
                  uuids={j.gpu_uuids}
                  testid="job-telemetry"
                />
              </>
            )}
          </>
        )}
      </Loadable>
    </Panel>
  );
}

/** The job as a whole (issue 17): its state, restart policy, next bid, attempts and SLA credits. */
function JobAttempts(props: { job: Job }) {
  const j = props.job;
  const attempts = j.attempts ?? [];
  const current = currentAttempt(j);
  const totals = attemptTotals(attempts);
  return (
    <section data-testid="job-attempts">
      <h3>Attempts</h3>
      <div class="kv-grid">
        <div>
          <span>Job state</span>
          <span data-testid="job-lifecycle" data-state={j.job_state ?? ''}>
            {jobStateText(j)}
          </span>
        </div>
        <div>
          <span>Priority</span>
          <span data-testid="job-priority">
            {j.priority === 'interruptible' ? 'interruptible (an on-demand buyer may preempt it)' : 'on demand'}
            {j.preempt_deadline && (
              <span class="muted small" data-testid="job-preempt-deadline">
                {' '}
                · preempted {fmtClock(j.preempted_at ?? '')}, killed by {fmtClock(j.preempt_deadline)}
              </span>
            )}
          </span>
        </div>
        <div>
          <span>Restart policy</span>
          <span data-testid="job-restart">{restartSummary(j.restart)}</span>
        </div>
        <div>
          <span>Next attempt</span>
          {j.next_bid_id ? (
            <span data-testid="job-next-bid">
              bid <code title={j.next_bid_id}>{shortId(j.next_bid_id)}</code> waits in the book
            </span>
          ) : (
            <span class="muted" data-testid="job-next-bid-none">
              none waiting
            </span>
          )}
        </div>
        <div>
          <span>SLA credits</span>
          <Amount value={j.sla_credits ?? totals.slaCredits} testid="job-sla-credits" />
        </div>
      </div>
      <p class="muted small" data-testid="job-sla-explanation">
        SLA credits are paid by the provider when a lease was lost to a silent host: CAPEX_SLA_CREDIT_RATE (default
        0.1) × what that lease had billed, credited to the buyer automatically.
      </p>
      {attempts.length === 0 ? (
        <Empty testid="attempts-empty">No attempts yet.</Empty>
      ) : (
        <table class="grid dense" data-testid="attempts-table">
          <thead>
            <tr>
              <th class="r">#</th>
              <th>Host</th>
              <th>State</th>
              <th>Started</th>
              <th>Ended</th>
              <th>End reason</th>
              <th class="r">Billed</th>
              <th class="r">Cost</th>
              <th class="r">SLA credit</th>
            </tr>
          </thead>
          <tbody>
            {attempts.map((a) => (
              <AttemptRow key={a.lease_id} a={a} current={a.attempt === current} />
            ))}
          </tbody>
          <tfoot>
            <tr data-testid="attempts-total">
              <td colSpan={6}>
                {totals.count} attempt{totals.count === 1 ? '' : 's'}
              </td>
              <td class="r num">{fmtDuration(totals.billedSeconds)}</td>
              <td class="r">
                <Amount value={totals.cost} testid="attempts-total-cost" />
              </td>
              <td class="r">
                <Amount value={totals.slaCredits} testid="attempts-total-sla" />
              </td>
            </tr>
          </tfoot>
        </table>
      )}
    </section>
  );
}

function AttemptRow(props: { a: Attempt; current: boolean }) {
  const a = props.a;
  return (
    <tr
      class={props.current ? 'selected' : ''}
      data-testid={`attempt-row-${a.attempt}`}
      data-attempt={a.attempt}
      data-current={props.current ? 'true' : 'false'}
    >
      <td class="r num" data-testid="attempt-number">
        {a.attempt}
        {props.current && (
          <span class="badge badge-current" data-testid="attempt-current">
            current
          </span>
        )}
      </td>
      <td class="mono" data-testid="attempt-host" title={a.host_id}>
        {a.host_id}
      </td>
      <td>
        <StatusBadge status={a.state} testid="attempt-state" />
      </td>
      <td data-testid="attempt-started">{fmtTime(a.started_at)}</td>
      <td data-testid="attempt-ended">{fmtTime(a.ended_at)}</td>
      <td data-testid="attempt-reason" data-reason={a.end_reason ?? ''}>
        {reasonText(a.end_reason)}
        {a.exit_code != null && a.exit_code !== 0 ? ` (exit ${a.exit_code})` : ''}
      </td>
      <td class="r num" data-testid="attempt-billed">
        {fmtDuration(a.billed)}
      </td>
      <td class="r">
        <Amount value={a.cost} testid="attempt-cost" />
      </td>
      <td class="r">
        <Amount value={a.sla_credit} testid="attempt-sla" />
      </td>
    </tr>
  );
}

/** The job's budget for child bids, its children, and its parent if it is one. */
function JobChildren(props: { job: Job }) {
  const j = props.job;
  const children: ChildJob[] = j.children ?? [];
  if (!j.parent_job_id && j.budget == null && children.length === 0) return null;
  const totals = childTotals(children);
  return (
    <section data-testid="job-children">
      <h3>Children</h3>
      <div class="kv-grid">
        {j.parent_job_id && (
          <div>
            <span>Parent job</span>
            <a href={href('jobs', j.parent_job_id)} data-testid="job-parent" title={j.parent_job_id}>
              {shortId(j.parent_job_id)}
            </a>
          </div>
        )}
        <div>
          <span>Budget</span>
          {j.budget != null ? <Amount value={j.budget} testid="job-budget" /> : <span class="muted">none</span>}
        </div>
        <div>
          <span>Budget used</span>
          <Amount value={j.budget_used ?? '0'} testid="job-budget-used" />
        </div>
        <div>
          <span>Children hold / spent</span>
          <span>
            <Amount value={totals.held} /> / <Amount value={totals.spent} />
          </span>
        </div>
      </div>
      {children.length === 0 ? (
        j.budget != null && <Empty testid="children-empty">No child bids yet.</Empty>
      ) : (
        <table class="grid dense" data-testid="children-table">
          <thead>
            <tr>
              <th>Child job</th>
              <th>Market</th>
              <th>Bid</th>
              <th class="r">GPUs</th>
              <th class="r">Limit</th>
              <th class="r">Max hours</th>
              <th class="r">Held</th>
              <th class="r">Spent</th>
            </tr>
          </thead>
          <tbody>
            {children.map((c) => (
              <tr key={c.job_id} data-testid={`child-row-${c.job_id}`}>
                <td class="mono">
                  <a href={href('jobs', c.job_id)}>{shortId(c.job_id)}</a>
                </td>
                <td>{c.class}</td>
                <td>
                  <StatusBadge status={c.status} />
                </td>
                <td class="r num">{c.gpus}</td>
                <td class="r">
                  <Amount value={c.price} />
                </td>
                <td class="r num">{c.max_hours ?? '—'}</td>
                <td class="r">
                  <Amount value={c.held} />
                </td>
                <td class="r">
                  <Amount value={c.spent} />
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}

/** Follows a job's log: reads new lines after the last sequence number seen. With several
 * attempts, a selector picks whose lines to show (default: the current attempt's, followed). */
function JobLogs(props: {
  id: string;
  active: boolean;
  current: number | null;
  attempts: number[];
  matches: (e: unknown, data: unknown) => boolean;
}) {
  const [picked, setPicked] = useState<number | null>(null);
  const attempt = picked ?? props.current;
  const following = props.active && (picked === null || picked === props.current);
  return (
    <>
      {props.attempts.length > 1 && (
        <label class="log-attempt">
          Attempt{' '}
          <select
            data-testid="job-log-attempt"
            value={picked === null ? '' : String(picked)}
            onChange={(e) => {
              const v = (e.currentTarget as HTMLSelectElement).value;
              setPicked(v === '' ? null : Number(v));
            }}
          >
            <option value="">current (#{props.current ?? '?'})</option>
            {props.attempts.map((n) => (
              <option key={n} value={String(n)}>
                #{n}
              </option>
            ))}
          </select>
        </label>
      )}
      <AttemptLogs
        key={`${props.id}:${attempt ?? ''}`}
        id={props.id}
        attempt={attempt}
        active={following}
        matches={props.matches}
      />
    </>
  );
}

function AttemptLogs(props: {
  id: string;
  attempt: number | null;
  active: boolean;
  matches: (e: unknown, data: unknown) => boolean;
}) {
  const [lines, setLines] = useState<LogLine[]>([]);
  const [error, setError] = useState<ApiError | null>(null);
  const after = useRef<number | null>(null);
  const inFlight = useRef(false);
  const box = useRef<HTMLPreElement>(null);
  /** Set when new lines arrive while the reader is at the bottom; the next render scrolls. */
  const pinned = useRef(false);

  const fetchMore = async () => {
    if (inFlight.current) return;
    inFlight.current = true;
    try {
      // Read until caught up, a bounded number of pages per tick.
      for (let page = 0; page < 10; page++) {
        const res = await api.jobLogs(props.id, after.current, props.attempt);
        if (res.items.length > 0) {
          // Follow the tail only if the reader is at the bottom now, not scrolled up.
          // (A scroll to the bottom still waiting for the next render counts as at the bottom.)
          const el = box.current;
          pinned.current = pinned.current || !el || el.scrollHeight - el.scrollTop - el.clientHeight < 30;
          setLines((old) => {
            const seen = old.length ? old[old.length - 1].seq : -Infinity;
            const added = res.items.filter((l) => l.seq > seen);
            const all = old.concat(added);
            return all.length > LOG_LINES_MAX ? all.slice(all.length - LOG_LINES_MAX) : all;
          });
        }
        const next = res.next_after ?? (res.items.length ? res.items[res.items.length - 1].seq : after.current);
        if (next === after.current || res.items.length === 0) break;
        after.current = next;
      }
      setError(null);
    } catch (err) {
      setError(asApiError(err));
    } finally {
      inFlight.current = false;
    }
  };

  useEffect(() => {
    setLines([]);
    after.current = null;
    void fetchMore();
  }, [props.id, props.attempt]);

  useEffect(() => {
    if (!props.active) {
      // One last read picks up the final lines after the job ended.
      void fetchMore();
      return undefined;
    }
    const t = setInterval(() => void fetchMore(), LOG_POLL_MS);
    return () => clearInterval(t);
  }, [props.id, props.active]);

  useLive(['job'], () => void fetchMore(), props.matches);

  // Keep the view at the bottom unless the user scrolled up.
  useLayoutEffect(() => {
    const el = box.current;
    if (el && pinned.current) el.scrollTop = el.scrollHeight;
    pinned.current = false;
  }, [lines]);


  if (error?.notAvailable) return <NotAvailable what="Logs" />;
  return (
    <>
      <ErrorBox error={error} />
      <pre class="logs" ref={box} data-testid="job-logs" data-attempt={props.attempt ?? ''}>
        {lines.length === 0 ? (
          <span class="muted">{props.active ? 'waiting for output…' : 'no output'}</span>
        ) : (
          lines.map((l) => (
            <div key={l.seq} class={`log-line ${l.stream}`} data-attempt={l.attempt ?? ''}>
              {l.text}
            </div>
          ))
        )}
      </pre>
    </>
  );
}
