// GPU verification levels on screen: the level badge, per-level counts, the blocked-host
// banner, and a host's evidence (challenges and attestations).
import { useMemo } from 'preact/hooks';
import { api } from '../api';
import type { LiveEvent } from '../live';
import { useResource } from '../resource';
import type { GpuVerification, HostVerification, LevelCounts } from '../types';
import { fmtMicros, fmtSpan, levelCountList, levelLabel, levelMeaning, levelTitle } from '../verification';
import { Empty, Loadable, fmtClock, fmtTime, shortId } from './ui';

/**
 * A GPU's (or an ask's) level, coloured by level; its title says what the level proves
 * and, given the GPU's verification, until when it holds.
 */
export function LevelBadge(props: {
  level: string | null | undefined;
  verification?: Pick<GpuVerification, 'challenged_until' | 'cc_attested_until' | 'cc_measurements_checked'> | null;
  testid?: string;
  prefix?: string;
}) {
  const level = props.level ?? 'unknown';
  const unchecked = level === 'cc_attested' && props.verification?.cc_measurements_checked === false;
  return (
    <span
      class={`badge level level-${level}`}
      title={levelTitle(level, props.verification)}
      data-testid={props.testid}
      data-level={level}
    >
      {props.prefix}
      {levelLabel(level)}
      {unchecked && <span class="level-note">*</span>}
    </span>
  );
}

/** Per-level counts as a row of badges, every level shown, zero ones dimmed. */
export function LevelCountsRow(props: { counts: LevelCounts | null | undefined; testid?: string; what: string }) {
  return (
    <span class="level-counts" data-testid={props.testid}>
      {levelCountList(props.counts).map(({ level, n }) => (
        <span
          key={level}
          class={`badge level level-${level} ${n === 0 ? 'zero' : ''}`}
          title={`${n} ${props.what} ${levelLabel(level)}. ${levelMeaning(level)}`}
          data-level={level}
          data-count={n}
        >
          {levelLabel(level)} <strong class="num">{n}</strong>
        </span>
      ))}
    </span>
  );
}

/** Shown while failed challenges block a host from placing asks. */
export function ChallengeBlockedBanner(props: { blockedAt: string | null | undefined; failures?: number }) {
  if (!props.blockedAt) return null;
  return (
    <div class="blocked-banner" role="alert" data-testid="challenge-blocked">
      <strong>Blocked</strong> after failed challenges
      {props.failures ? ` (${props.failures} in a row)` : ''} since {fmtTime(props.blockedAt)}: this host may not
      place asks until an operator clears it.
    </div>
  );
}

/** Only host events about this host (or about no host in particular) refetch. */
function sameHost(hostId: string) {
  return (_event: LiveEvent, data: unknown) => {
    const h = (data as { host_id?: unknown } | null)?.host_id;
    return typeof h !== 'string' || h === hostId;
  };
}

/** A host's verification: its GPUs' levels, the latest challenges and attestations, refusals. */
export function HostVerificationView(props: { hostId: string }) {
  const filter = useMemo(() => sameHost(props.hostId), [props.hostId]);
  const res = useResource(() => api.hostVerification(props.hostId), [props.hostId], {
    live: ['host'],
    liveFilter: filter,
  });
  return (
    <Loadable res={res} what="Verification">
      {(v) => <VerificationBody v={v} />}
    </Loadable>
  );
}

function VerificationBody(props: { v: HostVerification }) {
  const { v } = props;
  const refusals = Object.entries(v.refusals ?? {}).sort((a, b) => b[1] - a[1]);
  return (
    <div class="verification" data-testid="verification" data-backend={v.backend}>
      <ChallengeBlockedBanner blockedAt={v.challenge_blocked_at} failures={v.challenge_failures} />
      <div class="kv-row">
        <span>
          Backend: <strong data-testid="verification-backend">{v.backend}</strong>
        </span>
        <span>
          Failed challenges in a row: <strong class="num">{v.challenge_failures}</strong>
        </span>
        <span class={refusals.length ? 'bad' : 'muted'}>
          Refused answers:{' '}
          {refusals.length === 0
            ? 'none'
            : refusals.map(([code, n]) => (
                <span key={code} class="refused-code" data-code={code}>
                  <code>{code}</code> {n}{' '}
                </span>
              ))}
        </span>
      </div>
      {v.backend === 'simulated' && (
        <p class="muted small">
          Simulated GPUs are never challenged outside demo mode: they stay at the simulated level.
        </p>
      )}
      <h3>GPUs</h3>
      <table class="grid dense" data-testid="verification-gpus">
        <thead>
          <tr>
            <th>GPU</th>
            <th>Class</th>
            <th>Level</th>
            <th>Challenged until</th>
            <th>CC attested until</th>
            <th>Level since</th>
          </tr>
        </thead>
        <tbody>
          {v.gpus.map((g) => (
            <tr key={g.gpu_uuid} data-testid={`verification-gpu-${g.gpu_uuid}`}>
              <td class="mono">{g.gpu_uuid}</td>
              <td>{g.class}</td>
              <td>
                <LevelBadge level={g.level} verification={g} />
                {g.level === 'cc_attested' && g.cc_measurements_checked === false && (
                  <span class="muted small"> measurements not checked</span>
                )}
              </td>
              <td>{fmtTime(g.challenged_until)}</td>
              <td>{fmtTime(g.cc_attested_until)}</td>
              <td>{fmtTime(g.verified_at)}</td>
            </tr>
          ))}
        </tbody>
      </table>
      <h3>Recent challenges</h3>
      {v.challenges.length === 0 ? (
        <Empty testid="challenges-empty">No proof-of-compute challenges yet.</Empty>
      ) : (
        <table class="grid dense" data-testid="challenges">
          <thead>
            <tr>
              <th>Challenge</th>
              <th>GPU</th>
              <th>State</th>
              <th>Reason</th>
              <th class="r">n</th>
              <th class="r">k</th>
              <th>Issued</th>
              <th>Commit by</th>
              <th class="r">Committed after</th>
              <th>Decided</th>
              <th>Failure</th>
              <th class="r">Verify time</th>
            </tr>
          </thead>
          <tbody>
            {v.challenges.map((c) => (
              <tr key={c.challenge_id} data-testid={`challenge-${c.challenge_id}`} data-state={c.state}>
                <td class="mono">{shortId(c.challenge_id)}</td>
                <td class="mono" title={c.gpu_uuid}>
                  {shortId(c.gpu_uuid)}
                </td>
                <td>
                  <span class={`badge challenge-${c.state}`}>{c.state}</span>
                </td>
                <td>{c.reason}</td>
                <td class="r num">{c.n}</td>
                <td class="r num">{c.k}</td>
                <td>{fmtClock(c.issued_at)}</td>
                <td>{fmtClock(c.commit_by)}</td>
                <td class="r num">{fmtSpan(c.issued_at, c.committed_at)}</td>
                <td>{fmtClock(c.decided_at)}</td>
                <td title={c.failure_detail ?? undefined}>{c.failure_code ? <code>{c.failure_code}</code> : '—'}</td>
                <td class="r num">{fmtMicros(c.verify_us)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      <h3>Confidential-computing attestations</h3>
      {v.attestations.length === 0 ? (
        <Empty testid="attestations-empty">No attestation requests yet.</Empty>
      ) : (
        <table class="grid dense" data-testid="attestations">
          <thead>
            <tr>
              <th>Request</th>
              <th>GPU</th>
              <th>State</th>
              <th>Requested</th>
              <th>Decided</th>
              <th>Code</th>
              <th>Detail</th>
            </tr>
          </thead>
          <tbody>
            {v.attestations.map((a) => (
              <tr key={a.request_id} data-testid={`attestation-${a.request_id}`} data-state={a.state}>
                <td class="mono">{shortId(a.request_id)}</td>
                <td class="mono" title={a.gpu_uuid}>
                  {shortId(a.gpu_uuid)}
                </td>
                <td>
                  <span class={`badge attestation-${a.state}`}>{a.state}</span>
                </td>
                <td>{fmtClock(a.requested_at)}</td>
                <td>{fmtClock(a.decided_at)}</td>
                <td>{a.code ? <code>{a.code}</code> : '—'}</td>
                <td class="small">{a.detail ?? attestationSummary(a.verified)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </div>
  );
}

/** A verified attestation's record in a few words (measurements checked or not). */
function attestationSummary(verified: Record<string, unknown> | null): string {
  if (!verified) return '—';
  const checked = verified.measurements_checked;
  if (checked === false) return 'measurements not checked';
  if (checked === true) return 'measurements checked';
  return '—';
}
