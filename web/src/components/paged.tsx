import type { ComponentChildren } from 'preact';
import type { PagedList } from '../resource';
import { ErrorBox, NotAvailable } from './ui';

/** A paged list's states around `children(items)`, with the "Load more" button. */
export function PagedView<T>(props: {
  list: PagedList<T>;
  what: string;
  empty: ComponentChildren;
  testid: string;
  children: (items: T[]) => ComponentChildren;
}) {
  const { list } = props;
  if (list.notAvailable) return <NotAvailable what={props.what} />;
  if (!list.loaded) return <div class="loading">Loading…</div>;
  return (
    <>
      <ErrorBox error={list.error} />
      {list.items.length === 0 ? (
        <div class="empty" data-testid={`${props.testid}-empty`}>
          {props.empty}
        </div>
      ) : (
        props.children(list.items)
      )}
      {list.nextCursor && (
        <button
          type="button"
          class="load-more"
          onClick={list.loadMore}
          disabled={list.loadingMore}
          data-testid={`${props.testid}-load-more`}
        >
          {list.loadingMore ? 'Loading…' : 'Load more'}
        </button>
      )}
    </>
  );
}
