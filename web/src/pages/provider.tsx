import { useState } from 'preact/hooks';
import { api } from '../api';
import { OrderTable } from '../components/orders';
import { GpuTelemetry } from '../components/telemetry';
import { ChallengeBlockedBanner, HostVerificationView, LevelBadge } from '../components/verification';
import { Amount, Empty, Loadable, Panel, fmtAge, shortId } from '../components/ui';
import { formatMicro, sumMicro } from '../money';
import { useResource } from '../resource';
import { href } from '../router';
import type { Host, HostGpu } from '../types';

export function ProviderPage() {
  const hosts = useResource(() => api.hosts(), [], { live: ['host', 'job', 'wallet'] });
  const orders = useResource(() => api.orders('open'), [], { live: ['order', 'trade'] });
  const [picked, setPicked] = useState<string | null>(null);
  const items = hosts.data?.items ?? [];
  const selected = items.find((h) => h.host_id === picked) ?? items[0];

  return (
    <div class="page" data-testid="provider-page">
      <Panel
        title="My hosts"
        testid="hosts-panel"
        actions={
          hosts.data && (
            <span class="muted">
              Earnings, all hosts:{' '}
              <strong class="num" data-testid="earnings-total">
                {formatMicro(sumMicro(items.map((h) => h.earnings)))}
              </strong>{' '}
              credits
            </span>
          )
        }
      >
        <Loadable res={hosts} what="Hosts">
          {(page) =>
            page.items.length === 0 ? (
              <Empty testid="hosts-empty">
                No hosts yet. Run <code>capex-agent init</code> and <code>capex-agent register</code> on a GPU
                machine.
              </Empty>
            ) : (
              <div class="hosts">
                {page.items.map((h) => (
                  <HostCard
                    key={h.host_id}
                    host={h}
                    selected={selected?.host_id === h.host_id}
                    onSelect={() => setPicked(h.host_id)}
                  />
                ))}
              </div>
            )
          }
        </Loadable>
      </Panel>
      {selected && (
        <Panel title={`Verification — ${selected.name}`} testid="provider-verification-panel">
          <HostVerificationView key={selected.host_id} hostId={selected.host_id} />
        </Panel>
      )}
      {selected && (
        <Panel title={`GPU telemetry — ${selected.name}`} testid="provider-telemetry-panel">
          <GpuTelemetry hostId={selected.host_id} testid="provider-telemetry" />
        </Panel>
      )}
      <Panel title="My asks" testid="my-asks-panel">
        <Loadable res={orders} what="Orders">
          {(page) => {
            const asks = page.items.filter((o) => o.side === 'ask');
            return asks.length === 0 ? (
              <Empty testid="my-asks-empty">No open asks. Offer GPUs from a market page.</Empty>
            ) : (
              <OrderTable orders={asks} onChanged={orders.reload} showClass />
            );
          }}
        </Loadable>
      </Panel>
    </div>
  );
}

/** What each probe means for the host's GPUs. */
const BACKEND_TITLES: Record<string, string> = {
  nvml: "NVML: the GPUs are read from the driver; reported until the exchange's challenge or CC attestation checks them",
  simulated: "The agent's simulated backend: no real GPU; its GPUs stay at the simulated level",
};

function HostCard(props: { host: Host; selected: boolean; onSelect: () => void }) {
  const h = props.host;
  const refused = Object.entries(h.reports_refused ?? {}).sort((a, b) => b[1] - a[1]);
  const refusedTotal = refused.reduce((n, [, c]) => n + c, 0);
  const gpus = h.gpus ?? [];
  const classes = [...new Set(gpus.map((g) => g.class))];
  return (
    <article class={`host-card ${props.selected ? 'selected' : ''}`} data-testid={`host-${h.host_id}`}>
      <header>
        <span class={`dot ${h.live ? 'live' : 'dead'}`} aria-hidden="true" />
        <strong>{h.name}</strong>
        <span class={`badge ${h.live ? 'badge-open' : 'badge-cancelled'}`} data-testid="host-live">
          {h.live ? 'live' : 'offline'}
        </span>
        <span class="mono muted">{shortId(h.host_id)}</span>
        <span class="spacer" />
        <button
          type="button"
          class="small"
          onClick={props.onSelect}
          aria-pressed={props.selected}
          data-testid="host-details"
        >
          Verification &amp; telemetry
        </button>
      </header>
      <ChallengeBlockedBanner blockedAt={h.challenge_blocked_at} />
      <div class="kv-row">
        <span>
          Backend:{' '}
          <strong data-testid="host-backend" title={BACKEND_TITLES[h.backend ?? ''] ?? undefined}>
            {h.backend ?? '—'}
          </strong>
        </span>
        <span>
          Last report: <strong>{fmtAge(h.last_report_at)}</strong> (every {h.report_interval_s}s)
        </span>
        <span>
          Earnings: <Amount value={h.earnings} testid="host-earnings" />
        </span>
        <span>
          Markets:{' '}
          {classes.map((c) => (
            <a key={c} class="chip" href={href('markets', c)}>
              {c}
            </a>
          ))}
        </span>
      </div>
      <div class="report-health" data-testid="report-health">
        <span class="ok">
          accepted <strong class="num">{h.reports_accepted}</strong>
        </span>
        <span class={refusedTotal ? 'bad' : 'muted'}>
          refused <strong class="num">{refusedTotal}</strong>
        </span>
        {refused.map(([code, n]) => (
          <span key={code} class="refused-code" data-code={code}>
            <code>{code}</code> {n}
          </span>
        ))}
      </div>
      <table class="grid dense">
        <thead>
          <tr>
            <th>GPU</th>
            <th>Model</th>
            <th>Class</th>
            <th class="r">Memory (MiB)</th>
            <th>Verification</th>
            <th>Reporting</th>
            <th>State</th>
          </tr>
        </thead>
        <tbody>
          {gpus.map((g) => (
            <tr key={g.uuid} data-testid={`host-gpu-${g.uuid}`}>
              <td class="mono">{g.uuid}</td>
              <td>{g.name}</td>
              <td>{g.class}</td>
              <td class="r num">{g.memory_total_mib.toLocaleString('en-US')}</td>
              <td>
                <LevelBadge level={g.verification?.level} verification={g.verification} testid="gpu-level" />
              </td>
              <td>{g.reporting ? 'yes' : <span class="muted">no</span>}</td>
              <td>
                <GpuStateCell gpu={g} />
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </article>
  );
}

/** What each GPU state means, for the badge's title. */
const GPU_STATE_TITLES: Record<string, string> = {
  idle: 'In the latest report, nothing runs on it and nothing holds it: an ask can offer it',
  offered: 'Bound to your open ask: for sale, running nothing yet; no other ask can offer it',
  leased: "A buyer's job has it: billed from each report while the lease runs",
  interruptible:
    'An interruptible job runs on it at the interruptible price; it is still offered on demand and an on-demand buyer preempts it',
  preempting: "An on-demand buyer took it: the interruptible job got SIGTERM and is killed at its deadline; the new job starts then",
  under_challenge: 'A proof-of-compute challenge runs on it until it is decided; it cannot be offered meanwhile',
  foreign_process: 'The latest report shows a process that belongs to no lease: it cannot be sold',
  offline: 'The host is not live or its latest report does not list this GPU',
};

/** One GPU's state, with the order, lease or challenge that holds it. */
function GpuStateCell(props: { gpu: HostGpu }) {
  const g = props.gpu;
  // Older servers have only `busy`; a state this client does not know shows as it is.
  const state = g.state ?? (g.busy ? 'busy' : 'idle');
  return (
    <span class="gpu-state" data-testid="gpu-state" data-state={state}>
      <span class={`badge gpu-state-${state}`} title={GPU_STATE_TITLES[state] ?? undefined}>
        {state.replace(/_/g, ' ')}
      </span>
      {state === 'offered' && g.order_id && (
        <a class="mono small" href={href('orders')} title={`ask ${g.order_id}`} data-testid="gpu-order">
          ask {shortId(g.order_id)}
        </a>
      )}
      {(state === 'leased' || state === 'interruptible' || state === 'preempting') && g.lease_id && (
        <a class="mono small" href={href('jobs', g.lease_id)} title={`lease ${g.lease_id}`} data-testid="gpu-lease">
          lease {shortId(g.lease_id)}
        </a>
      )}
      {state === 'under_challenge' && g.challenge_id && (
        <span class="mono small muted" title={`challenge ${g.challenge_id}`} data-testid="gpu-challenge">
          challenge {shortId(g.challenge_id)}
        </span>
      )}
    </span>
  );
}
