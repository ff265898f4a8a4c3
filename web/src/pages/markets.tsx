import { useState } from 'preact/hooks';
import { api } from '../api';
import { Amount, Empty, Loadable, NotAvailable, Panel } from '../components/ui';
import { LevelCountsRow } from '../components/verification';
import { useResource } from '../resource';
import { href, navigate } from '../router';
import type { Capacity } from '../types';

/** GPU classes of the design, offered as shortcuts when the server lists no markets yet. */
const KNOWN_CLASSES = ['H100-80GB', 'A100-40GB', 'RTX4090-24GB'];

export function MarketsPage() {
  const markets = useResource(() => api.markets(), [], { live: ['book', 'trade', 'host'] });
  const capacity = useResource(() => api.capacity(), [], { live: ['host', 'book'] });
  const byClass = new Map<string, Capacity>((capacity.data?.items ?? []).map((c) => [c.class, c]));

  return (
    <div class="page" data-testid="markets-page">
      <Panel title="Markets" testid="markets-panel" actions={<GoToMarket />}>
        {markets.notAvailable ? (
          <>
            <NotAvailable what="Market list" />
            <p class="muted">
              Open a market directly:{' '}
              {KNOWN_CLASSES.map((c) => (
                <a key={c} href={href('markets', c)} class="chip">
                  {c}
                </a>
              ))}
            </p>
          </>
        ) : (
          <Loadable res={markets} what="Markets">
            {(data) =>
              data.items.length === 0 ? (
                <Empty testid="markets-empty">No markets yet: they open when a provider registers GPUs.</Empty>
              ) : (
                <table class="grid" data-testid="markets-table">
                  <thead>
                    <tr>
                      <th>Class</th>
                      <th class="r">Best bid</th>
                      <th class="r">Best ask</th>
                      <th class="r" title="The cheapest interruptible price: idle GPUs sold cheaper, preempted by on-demand buyers">
                        Interruptible ask
                      </th>
                      <th class="r" title="GPUs interruptible jobs use now">Interruptible GPUs</th>
                      <th class="r">Last</th>
                      <th class="r">24h volume (GPU-h)</th>
                      <th class="r">Free GPUs</th>
                      <th class="r">Busy GPUs</th>
                      <th class="r">Live hosts</th>
                      <th title="GPUs open asks offer now, and free GPUs no ask offers, per verification level">
                        GPUs by verification level
                      </th>
                    </tr>
                  </thead>
                  <tbody>
                    {data.items.map((m) => {
                      const cap = byClass.get(m.class);
                      return (
                        <tr
                          key={m.class}
                          class="clickable"
                          data-testid={`market-row-${m.class}`}
                          onClick={() => navigate(href('markets', m.class))}
                        >
                          <td class="nowrap">
                            <a href={href('markets', m.class)} data-testid={`market-link-${m.class}`}>
                              {m.class}
                            </a>
                          </td>
                          <td class="r bid">
                            <Amount value={m.best_bid} />
                          </td>
                          <td class="r ask">
                            <Amount value={m.best_ask} />
                          </td>
                          <td class="r ask" data-testid={`market-interruptible-ask-${m.class}`}>
                            <Amount value={m.best_interruptible_ask ?? null} />
                          </td>
                          <td class="r num" data-testid={`market-interruptible-gpus-${m.class}`}>
                            {m.interruptible_gpus ?? '—'}
                          </td>
                          <td class="r">
                            <Amount value={m.last_price} />
                          </td>
                          <td class="r num">{m.volume_24h_gpu_hours ?? '—'}</td>
                          <td class="r num">{m.free_gpus ?? cap?.free_gpus ?? '—'}</td>
                          <td class="r num">{cap?.busy_gpus ?? '—'}</td>
                          <td class="r num">{cap?.live_hosts ?? '—'}</td>
                          <td class="by-level">
                            <div>
                              <span class="muted small">offered</span>
                              <LevelCountsRow
                                counts={m.offered_gpus_by_level}
                                what="GPUs offered by open asks are"
                                testid={`market-offered-${m.class}`}
                              />
                            </div>
                            <div>
                              <span class="muted small">free</span>
                              <LevelCountsRow
                                counts={m.free_gpus_by_level}
                                what="free GPUs (not offered, not leased) are"
                                testid={`market-free-${m.class}`}
                              />
                            </div>
                          </td>
                        </tr>
                      );
                    })}
                  </tbody>
                </table>
              )
            }
          </Loadable>
        )}
        <p class="muted small">
          Prices are credits per GPU-hour. Verification, weakest to strongest: simulated (no real GPU), reported (the
          host's word), challenged (passed the exchange's proof-of-compute), CC attested (NVIDIA confidential-computing
          evidence verified). Hover a level for what it proves.
        </p>
      </Panel>
    </div>
  );
}

function GoToMarket() {
  const [cls, setCls] = useState('');
  return (
    <form
      class="inline"
      onSubmit={(e) => {
        e.preventDefault();
        if (cls.trim()) navigate(href('markets', cls.trim()));
      }}
    >
      <label for="goto-market" class="sr-only">
        Market class
      </label>
      <input
        id="goto-market"
        placeholder="class, e.g. H100-80GB"
        value={cls}
        onInput={(e) => setCls((e.currentTarget as HTMLInputElement).value)}
        data-testid="goto-market-input"
      />
      <button type="submit" data-testid="goto-market-submit">
        Open
      </button>
    </form>
  );
}
