// The one place the UI talks HTTP to capex-server. Every error becomes an ApiError that
// carries the server's problem+json document (RFC 9457), so forms can put `detail` next to
// the field it names.
import { session, signOut } from './session';
import type {
  AskRequest,
  BalancePoint,
  BidRequest,
  Book,
  Candle,
  Capacity,
  Fees,
  Host,
  HostVerification,
  Invariants,
  Job,
  LedgerLine,
  LogPage,
  LoginResponse,
  Market,
  MovementGroup,
  Order,
  Page,
  Problem,
  Role,
  Telemetry,
  TopOfBook,
  Trade,
  User,
  UserOverview,
  Wallet,
} from './types';

export const API_BASE = '/api/v1';

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly problem: Problem,
  ) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.name = 'ApiError';
  }

  /** The endpoint is not there yet (the server lands features in stages). */
  get notAvailable(): boolean {
    return this.status === 501 || (this.status === 404 && this.problem.code === 'no_such_route');
  }

  get field(): string | undefined {
    return this.problem.field;
  }
}

/** A fetch that failed before any response (server down, network gone). */
export function networkProblem(err: unknown): ApiError {
  return new ApiError(0, {
    type: 'about:blank',
    title: 'Network error',
    status: 0,
    detail: `cannot reach the exchange (${err instanceof Error ? err.message : String(err)})`,
    code: 'network',
  });
}

/** Any thrown value as an ApiError, so views handle one error type. */
export function asApiError(err: unknown): ApiError {
  if (err instanceof ApiError) return err;
  return new ApiError(0, {
    type: 'about:blank',
    title: 'Error',
    status: 0,
    detail: err instanceof Error ? err.message : String(err),
    code: 'client',
  });
}

type Query = Record<string, string | number | null | undefined>;

interface RequestOptions {
  query?: Query;
  body?: unknown;
  idempotencyKey?: string;
  signal?: AbortSignal;
}

function url(path: string, query?: Query): string {
  const params = new URLSearchParams();
  for (const [k, v] of Object.entries(query ?? {})) {
    if (v !== null && v !== undefined && v !== '') params.set(k, String(v));
  }
  const qs = params.toString();
  return `${API_BASE}${path}${qs ? `?${qs}` : ''}`;
}

async function toProblem(res: Response): Promise<Problem> {
  const text = await res.text().catch(() => '');
  try {
    const doc = JSON.parse(text) as Partial<Problem>;
    if (doc && typeof doc === 'object') {
      return {
        type: doc.type ?? 'about:blank',
        title: doc.title ?? res.statusText,
        status: doc.status ?? res.status,
        detail: doc.detail ?? doc.title ?? `HTTP ${res.status}`,
        code: doc.code ?? (res.status === 404 ? 'no_such_route' : `http_${res.status}`),
        field: doc.field ?? undefined,
      };
    }
  } catch {
    // not JSON: fall through
  }
  return {
    type: 'about:blank',
    title: res.statusText || `HTTP ${res.status}`,
    status: res.status,
    detail: text.trim().slice(0, 200) || res.statusText || `HTTP ${res.status}`,
    // A 404 without a problem document comes from something that is not the API yet.
    code: res.status === 404 ? 'no_such_route' : `http_${res.status}`,
  };
}

export async function request<T>(method: string, path: string, opts: RequestOptions = {}): Promise<T> {
  const headers: Record<string, string> = { Accept: 'application/json, application/problem+json' };
  const token = session.get()?.token;
  if (token) headers.Authorization = `Bearer ${token}`;
  if (opts.body !== undefined) headers['Content-Type'] = 'application/json';
  if (opts.idempotencyKey) headers['Idempotency-Key'] = opts.idempotencyKey;
  let res: Response;
  try {
    res = await fetch(url(path, opts.query), {
      method,
      headers,
      body: opts.body === undefined ? undefined : JSON.stringify(opts.body),
      signal: opts.signal,
    });
  } catch (err) {
    if (err instanceof DOMException && err.name === 'AbortError') throw err;
    throw networkProblem(err);
  }
  if (!res.ok) {
    const problem = await toProblem(res);
    // A token the server no longer accepts: back to the login page.
    if (res.status === 401 && token) signOut();
    throw new ApiError(res.status, problem);
  }
  if (res.status === 204) return undefined as T;
  const text = await res.text();
  return (text ? JSON.parse(text) : undefined) as T;
}

/** A random UUID v4, also outside secure contexts (plain-HTTP demos) where randomUUID is missing. */
export function newUuid(): string {
  if (typeof crypto.randomUUID === 'function') return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = [...b].map((x) => x.toString(16).padStart(2, '0')).join('');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/**
 * Idempotency keys per form: submitting the same body again (a retry after a lost
 * response) reuses the key so money never moves twice; a changed body gets a fresh key.
 */
export class IdempotencyKeys {
  private last: { body: string; key: string } | null = null;

  keyFor(body: unknown): string {
    const text = JSON.stringify(body);
    if (this.last?.body !== text) this.last = { body: text, key: newUuid() };
    return this.last.key;
  }

  /** After a success the next submission is a new request even with the same body. */
  done(): void {
    this.last = null;
  }
}

const enc = encodeURIComponent;

export const api = {
  register: (email: string, password: string, roles: Role[]) =>
    request<User>('POST', '/auth/register', { body: { email, password, roles } }),
  login: (email: string, password: string) =>
    request<LoginResponse>('POST', '/auth/login', { body: { email, password } }),
  me: () => request<User>('GET', '/me'),

  wallet: () => request<Wallet>('GET', '/wallet'),
  ledger: (cursor?: string | null, limit = 50) =>
    request<Page<LedgerLine>>('GET', '/wallet/ledger', { query: { cursor, limit } }),
  movements: (cursor?: string | null, limit = 25) =>
    request<Page<MovementGroup>>('GET', '/wallet/movements', { query: { cursor, limit } }),
  balanceHistory: (points = 200) =>
    request<{ points: BalancePoint[] }>('GET', '/wallet/balance-history', { query: { points } }),
  transfer: (body: { to_user: string; amount: string; memo: string }, key: string) =>
    request<unknown>('POST', '/transfers', { body, idempotencyKey: key }),

  mint: (body: { user_id: string; amount: string; memo: string }, key: string) =>
    request<unknown>('POST', '/operator/mint', { body, idempotencyKey: key }),
  invariants: () => request<Invariants>('GET', '/operator/invariants'),
  users: () => request<Page<UserOverview>>('GET', '/operator/users'),
  fees: () => request<Fees>('GET', '/operator/fees'),

  markets: () => request<Page<Market>>('GET', '/markets'),
  book: (cls: string) => request<Book>('GET', `/markets/${enc(cls)}/book`),
  top: (cls: string) => request<TopOfBook>('GET', `/markets/${enc(cls)}/top`),
  trades: (cls: string, cursor?: string | null) =>
    request<Page<Trade>>('GET', `/markets/${enc(cls)}/trades`, { query: { cursor } }),
  candles: (cls: string, interval: '1m' | '1h') =>
    request<Page<Candle>>('GET', `/markets/${enc(cls)}/candles`, { query: { interval } }),
  placeOrder: (cls: string, body: BidRequest | AskRequest, key: string) =>
    request<Order>('POST', `/markets/${enc(cls)}/orders`, { body, idempotencyKey: key }),

  orders: (status: 'open' | 'all', cursor?: string | null) =>
    request<Page<Order>>('GET', '/orders', { query: { status, cursor } }),
  /** One order; for an open bid with the matcher's reasons it has not traded (the list leaves them out). */
  order: (id: string) => request<Order>('GET', `/orders/${enc(id)}`),
  cancelOrder: (id: string) => request<Order | undefined>('DELETE', `/orders/${enc(id)}`),

  hosts: () => request<Page<Host>>('GET', '/hosts'),
  /** What the exchange checked about a host's GPUs, with the evidence (public). */
  hostVerification: (hostId: string) => request<HostVerification>('GET', `/hosts/${enc(hostId)}/verification`),
  telemetry: (hostId: string, since?: string) =>
    request<Telemetry>('GET', `/hosts/${enc(hostId)}/telemetry`, { query: { since } }),
  capacity: () => request<Page<Capacity>>('GET', '/capacity'),

  jobs: () => request<Page<Job>>('GET', '/jobs'),
  job: (id: string) => request<Job>('GET', `/jobs/${enc(id)}`),
  /** The attested telemetry of the job's GPUs while its lease lasted (buyer or provider). */
  jobTelemetry: (id: string, since?: string) =>
    request<Telemetry>('GET', `/jobs/${enc(id)}/telemetry`, { query: { since } }),
  /** A job's log lines after `after`; `attempt` picks one attempt's (default: the latest). */
  jobLogs: (id: string, after?: number | null, attempt?: number | null) =>
    request<LogPage>('GET', `/jobs/${enc(id)}/logs`, { query: { after, attempt } }),
  cancelJob: (id: string) =>
    request<Job | undefined>('POST', `/jobs/${enc(id)}/cancel`, { idempotencyKey: newUuid() }),
};
