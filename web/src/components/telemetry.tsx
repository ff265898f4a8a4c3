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

/** Per-GPU charts of a host's attested reports: utilisation, power, temperature, memory. */
export function GpuTelemetry(props: { hostId: string; uuids?: readonly string[]; since?: string | null; testid?: string }) {
  const since = useMemo(
    () => props.since ?? new Date(Date.now() - TELEMETRY_WINDOW_MS).toISOString(),
    [props.hostId, props.since],
  );
  const filter = (_e: unknown, data: unknown) => {
    const id = (data as { host_id?: unknown } | null)?.host_id;
    return typeof id !== 'string' || id === props.hostId;
  };
  const telemetry = useResource(() => api.telemetry(props.hostId, since), [props.hostId, since], {
    live: ['host', 'job'],
    liveFilter: filter,
  });
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
