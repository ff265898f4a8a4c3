// Loading one API resource into a view: keeps the last good data while refetching (no
// flicker on live updates), ignores answers that arrive after a newer request, and tells
// "this endpoint does not exist yet" apart from real errors.
import { useCallback, useEffect, useRef, useState } from 'preact/hooks';
import { type ApiError, asApiError } from './api';
import { type LiveEvent, useLive } from './live';

export interface Resource<T> {
  data: T | undefined;
  error: ApiError | undefined;
  loading: boolean;
  notAvailable: boolean;
  reload: () => void;
}

export interface ResourceOptions {
  /** Live events that make this resource refetch. */
  live?: readonly LiveEvent[];
  liveFilter?: (event: LiveEvent, data: unknown) => boolean;
}

export function useResource<T>(
  fetcher: () => Promise<T>,
  deps: readonly unknown[],
  opts: ResourceOptions = {},
): Resource<T> {
  const [state, setState] = useState<{ data?: T; error?: ApiError; loading: boolean }>({ loading: true });
  const seq = useRef(0);
  const fetcherRef = useRef(fetcher);
  fetcherRef.current = fetcher;

  const reload = useCallback(() => {
    const mine = ++seq.current;
    setState((s) => ({ ...s, loading: true }));
    fetcherRef.current().then(
      (data) => {
        if (mine === seq.current) setState({ data, loading: false });
      },
      (err: unknown) => {
        if (mine !== seq.current) return;
        const error = asApiError(err);
        // A failed refetch keeps showing the last good data, with the error beside it.
        setState((s) => ({ data: error.notAvailable ? undefined : s.data, error, loading: false }));
      },
    );
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, deps);

  useEffect(() => {
    setState({ loading: true });
    reload();
  }, [reload]);

  useLive(opts.live ?? [], reload, opts.liveFilter);

  return {
    data: state.data,
    error: state.error,
    loading: state.loading,
    notAvailable: !!state.error?.notAvailable,
    reload,
  };
}

export interface PagedList<T> {
  items: T[];
  nextCursor: string | null;
  error: ApiError | undefined;
  loading: boolean;
  loadingMore: boolean;
  notAvailable: boolean;
  loaded: boolean;
  loadMore: () => void;
  reload: () => void;
}

/**
 * A newest-first list with cursor pagination ("Load more"). A refetch (live event) reads the
 * first page again and puts it in front of what is already loaded, dropping duplicates by
 * `key`, so pages loaded further down stay where they are and nothing falls into a gap.
 */
export function usePagedList<T>(
  fetchPage: (cursor: string | null) => Promise<{ items: T[]; next_cursor?: string | null }>,
  key: (item: T) => string,
  deps: readonly unknown[],
  opts: ResourceOptions = {},
): PagedList<T> {
  const [state, setState] = useState<{
    items: T[];
    nextCursor: string | null;
    error?: ApiError;
    loading: boolean;
    loadingMore: boolean;
    loaded: boolean;
    pages: number;
  }>({ items: [], nextCursor: null, loading: true, loadingMore: false, loaded: false, pages: 0 });
  const stateRef = useRef(state);
  stateRef.current = state;
  const seq = useRef(0);
  const fetchRef = useRef(fetchPage);
  fetchRef.current = fetchPage;
  const keyRef = useRef(key);
  keyRef.current = key;

  const reload = useCallback(() => {
    const mine = ++seq.current;
    setState((s) => ({ ...s, loading: true }));
    fetchRef.current(null).then(
      (page) => {
        if (mine !== seq.current) return;
        setState((s) => {
          const fresh = new Set(page.items.map((i) => keyRef.current(i)));
          if (s.pages <= 1) {
            return { items: page.items, nextCursor: page.next_cursor ?? null, loading: false, loadingMore: false, loaded: true, pages: 1 };
          }
          const rest = s.items.filter((i) => !fresh.has(keyRef.current(i)));
          return { ...s, items: [...page.items, ...rest], error: undefined, loading: false, loadingMore: false, loaded: true };
        });
      },
      (err: unknown) => {
        if (mine !== seq.current) return;
        setState((s) => ({ ...s, error: asApiError(err), loading: false, loadingMore: false, loaded: true }));
      },
    );
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, deps);

  const loadMore = useCallback(() => {
    const s = stateRef.current;
    if (!s.nextCursor || s.loadingMore) return;
    const mine = seq.current;
    setState((t) => ({ ...t, loadingMore: true }));
    fetchRef.current(s.nextCursor).then(
      (page) => {
        if (mine !== seq.current) return;
        setState((t) => {
          const have = new Set(t.items.map((i) => keyRef.current(i)));
          const added = page.items.filter((i) => !have.has(keyRef.current(i)));
          return {
            ...t,
            items: [...t.items, ...added],
            nextCursor: page.next_cursor ?? null,
            loadingMore: false,
            pages: t.pages + 1,
            error: undefined,
          };
        });
      },
      (err: unknown) => {
        if (mine !== seq.current) return;
        setState((t) => ({ ...t, error: asApiError(err), loadingMore: false }));
      },
    );
  }, []);

  useEffect(() => {
    setState({ items: [], nextCursor: null, loading: true, loadingMore: false, loaded: false, pages: 0 });
    reload();
  }, [reload]);

  useLive(opts.live ?? [], reload, opts.liveFilter);

  return {
    items: state.items,
    nextCursor: state.nextCursor,
    error: state.error,
    loading: state.loading,
    loadingMore: state.loadingMore,
    notAvailable: !!state.error?.notAvailable,
    loaded: state.loaded,
    loadMore,
    reload,
  };
}
