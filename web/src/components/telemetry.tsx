import { useMemo } from 'preact/hooks';
import { api } from '../api';
import { useResource } from '../resource';
import type { Telemetry, TelemetrySample } from '../types';
import { TimeSeriesChart, type TimeSeries } from './charts';
import { Empty, Loadable } from './ui';

/** How far back the charts look when no start is given. */
const TELEMETRY_WINDOW_MS = 60 * 60 * 1000;

const METRICS: { key: keyof TelemetrySample; title: string; unit: string }[] = [
  { key: 'utilization_pct', title: 'Utilisation', unit: '%' },
  { key: 'power_w', title: 'Power', unit: 'W' },
  { key: 'temperature_c', title: 'Temperature', unit: '°C' },
  { key: 'memory_used_mib', title: 'Memory used', unit: 'MiB' },
];

export function telemetrySeries(t: Telemetry, key: keyof TelemetrySample, uuids?: readonly string[]): TimeSeries[] {
  return t.gpus
    .filter((g) => !uuids || uuids.includes(g.uuid))
    .map((g) => ({
      key: g.uuid,
      label: g.uuid.replace(/^GPU-/, '').slice(0, 8),
      points: (g.samples ?? []).map((s) => ({ at: s.at, value: Number(s[key]) })),
    }));
}

/**
 * Per-GPU charts of attested reports: utilisation, power, temperature, memory. With
 * `jobId`, the job's GPUs while its lease lasted, read through the job (its buyer may read
 * them; the host's own telemetry is its owner's only); otherwise the host's, from `since`.
 */
export function GpuTelemetry(props: {
  hostId: string;
  jobId?: string;
  uuids?: readonly string[];
  since?: string | null;
  testid?: string;
}) {
  const since = useMemo(
    () => props.since ?? (props.jobId ? undefined : new Date(Date.now() - TELEMETRY_WINDOW_MS).toISOString()),
    [props.hostId, props.jobId, props.since],
  );
  const filter = (_e: unknown, data: unknown) => {
    const d = data as { host_id?: unknown; job_id?: unknown } | null;
    if (props.jobId && typeof d?.job_id === 'string') return d.job_id === props.jobId;
    return typeof d?.host_id !== 'string' || d.host_id === props.hostId;
  };
  const telemetry = useResource(
    () => (props.jobId ? api.jobTelemetry(props.jobId, since) : api.telemetry(props.hostId, since)),
    [props.hostId, props.jobId, since],
    { live: ['host', 'job'], liveFilter: filter },
  );
  const uuidKey = props.uuids?.join(',');
  const series = useMemo(
    () => (telemetry.data ? METRICS.map((m) => telemetrySeries(telemetry.data!, m.key, props.uuids)) : []),
    [telemetry.data, uuidKey],
  );
  return (
    <div class="telemetry" data-testid={props.testid ?? 'gpu-telemetry'}>
      <Loadable res={telemetry} what="GPU telemetry">
        {(t) =>
          t.gpus.every((g) => (g.samples ?? []).length === 0) ? (
            <Empty>No telemetry samples yet.</Empty>
          ) : (
            <div class="chart-grid">
              {METRICS.map((m, i) => (
                <div key={m.key} class="chart-cell">
                  <h3>
                    {m.title} <span class="muted">({m.unit})</span>
                  </h3>
                  <TimeSeriesChart series={series[i] ?? []} testid={`telemetry-${m.key}`} />
                </div>
              ))}
            </div>
          )
        }
      </Loadable>
    </div>
  );
}
