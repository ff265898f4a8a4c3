// The live feed: Server-Sent Events at /api/v1/stream?token=<jwt>. Views do not patch
// themselves from event payloads; an event only tells a view to refetch what it shows,
// which stays correct even when events are missed. While the feed is down, views poll, and
// when it comes back every view refetches once.
import { useEffect, useRef } from 'preact/hooks';
import { API_BASE } from './api';
import { session } from './session';
import { createStore } from './store';

export const LIVE_EVENTS = ['book', 'trade', 'order', 'job', 'wallet', 'host'] as const;
export type LiveEvent = (typeof LIVE_EVENTS)[number];

/** "connecting" only before the first answer; afterwards "open" or "offline". */
export type LiveStatus = 'connecting' | 'open' | 'offline';
export const liveStatus = createStore<LiveStatus>('connecting');

/** Reconnect delays grow to this bound. */
const RECONNECT_DELAY_MS_MAX = 15_000;
const RECONNECT_DELAY_MS_MIN = 1_000;
/** Events closer together than this cause one refetch. */
const COALESCE_MS = 150;
/** How often views refetch while the feed is down. */
export const POLL_MS_OFFLINE = 5_000;

type Listener = (event: LiveEvent | 'resync', data: unknown) => void;
const listeners = new Set<Listener>();

let source: EventSource | null = null;
let reconnectTimer: ReturnType<typeof setTimeout> | undefined;
let reconnectDelayMs = RECONNECT_DELAY_MS_MIN;
let everOpened = false;

function emit(event: LiveEvent | 'resync', data: unknown): void {
  for (const l of [...listeners]) {
    try {
      l(event, data);
    } catch (err) {
      console.error('live listener failed', err);
    }
  }
}

function streamUrl(): string {
  const token = session.get()?.token;
  return token ? `${API_BASE}/stream?token=${encodeURIComponent(token)}` : `${API_BASE}/stream`;
}

function scheduleReconnect(): void {
  clearTimeout(reconnectTimer);
  reconnectTimer = setTimeout(connect, reconnectDelayMs);
  reconnectDelayMs = Math.min(reconnectDelayMs * 2, RECONNECT_DELAY_MS_MAX);
}

function connect(): void {
  clearTimeout(reconnectTimer);
  source?.close();
  const es = new EventSource(streamUrl());
  source = es;
  es.onopen = () => {
    if (source !== es) return;
    reconnectDelayMs = RECONNECT_DELAY_MS_MIN;
    const wasDown = everOpened && liveStatus.get() !== 'open';
    everOpened = true;
    liveStatus.set('open');
    // Whatever happened while the feed was down: refetch everything once.
    if (wasDown) emit('resync', null);
  };
  es.onerror = () => {
    if (source !== es) return;
    liveStatus.set('offline');
    // A closed source (HTTP error, wrong content type) is never retried by the browser;
    // one still connecting is. Take over both, with our own backoff.
    es.close();
    scheduleReconnect();
  };
  for (const name of LIVE_EVENTS) {
    es.addEventListener(name, (ev) => {
      let data: unknown = null;
      try {
        data = JSON.parse((ev as MessageEvent<string>).data);
      } catch {
        data = (ev as MessageEvent<string>).data;
      }
      emit(name, data);
    });
  }
}

/** Starts the feed and restarts it whenever the user logs in or out. */
export function startLiveFeed(): void {
  if (typeof EventSource === 'undefined') {
    liveStatus.set('offline');
    return;
  }
  let token = session.get()?.token;
  session.subscribe((s) => {
    if (s?.token !== token) {
      token = s?.token;
      connect();
    }
  });
  window.addEventListener('online', () => connect());
  connect();
}

/**
 * Calls `refetch` when any of `events` arrives (coalesced), after a reconnect, and every
 * POLL_MS_OFFLINE while the feed is down. `filter` can drop events about other things
 * (another market, another job).
 */
export function useLive(
  events: readonly LiveEvent[],
  refetch: () => void,
  filter?: (event: LiveEvent, data: unknown) => boolean,
): void {
  const latest = useRef({ refetch, filter });
  latest.current = { refetch, filter };
  const key = events.join(',');
  useEffect(() => {
    if (events.length === 0) return undefined;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const fire = () => {
      clearTimeout(timer);
      timer = setTimeout(() => latest.current.refetch(), COALESCE_MS);
    };
    const listener: Listener = (event, data) => {
      if (event === 'resync') return fire();
      if (!events.includes(event)) return;
      const f = latest.current.filter;
      if (f && !f(event, data)) return;
      fire();
    };
    listeners.add(listener);
    const poll = setInterval(() => {
      if (liveStatus.get() !== 'open') latest.current.refetch();
    }, POLL_MS_OFFLINE);
    return () => {
      listeners.delete(listener);
      clearTimeout(timer);
      clearInterval(poll);
    };
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [key]);
}
