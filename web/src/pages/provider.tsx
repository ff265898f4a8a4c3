import { useState } from 'preact/hooks';
import { api } from '../api';
import { OrderTable } from '../components/orders';
import { GpuTelemetry } from '../components/telemetry';
import { ChallengeBlockedBanner, HostVerificationView, LevelBadge } from '../components/verification';
import { Amount, Empty, Loadable, Panel, fmtAge, shortId } from '../components/ui';
import { formatMicro, sumMicro } from '../money';
import { useResource } from '../resource';
import { href } from '../router';
import type { Host } from '../types';

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
              <td>{g.busy ? <span class="badge badge-running">busy</span> : <span class="badge badge-open">free</span>}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </article>
  );
}
