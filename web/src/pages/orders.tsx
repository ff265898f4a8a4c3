import { useState } from 'preact/hooks';
import { api } from '../api';
import { PagedView } from '../components/paged';
import { Panel } from '../components/ui';
import { usePagedList } from '../resource';
import { OrderTable } from '../components/orders';

export function OrdersPage() {
  const [status, setStatus] = useState<'open' | 'all'>('open');
  const orders = usePagedList(
    (cursor) => api.orders(status, cursor),
    (o) => o.order_id,
    [status],
    { live: ['order', 'trade'] },
  );
  return (
    <div class="page" data-testid="orders-page">
      <Panel
        title="My orders"
        testid="orders-panel"
        actions={
          <div class="seg" role="group" aria-label="Which orders">
            {(['open', 'all'] as const).map((s) => (
              <button
                key={s}
                type="button"
                class={status === s ? 'on' : ''}
                aria-pressed={status === s}
                onClick={() => setStatus(s)}
                data-testid={`orders-filter-${s}`}
              >
                {s === 'open' ? 'Open' : 'All'}
              </button>
            ))}
          </div>
        }
      >
        <PagedView
          list={orders}
          what="Orders"
          testid="orders"
          empty={status === 'open' ? 'No open orders.' : 'No orders yet.'}
        >
          {(items) => <OrderTable orders={items} onChanged={orders.reload} showReasons showClass />}
        </PagedView>
      </Panel>
    </div>
  );
}
