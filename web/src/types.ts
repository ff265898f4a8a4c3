// Shapes of the Capex REST API (/api/v1). Amounts are decimal strings, ids UUID strings,
// times RFC 3339 strings. The server's /api/v1/openapi.json is the source of truth.

export type Role = 'buyer' | 'provider' | 'operator';

export interface User {
  user_id: string;
  email: string;
  roles: Role[];
  created_at: string;
}

export interface LoginResponse {
  token: string;
  token_type: 'Bearer';
  expires_at: string;
  user: User;
}

export interface Wallet {
  available: string;
  held: string;
  total: string;
}

export interface LedgerLine {
  entry_id: number;
  transfer_id: string;
  at: string;
  account: 'wallet' | 'escrow' | string;
  direction: 'credit' | 'debit';
  amount: string;
  kind: string;
  memo: string;
}

export interface Page<T> {
  items: T[];
  next_cursor?: string | null;
}

export interface Invariants {
  ok: boolean;
  total: string;
  accounts_checked: number;
  violations: { account_id: string; kind: string; balance: string; journal?: string | null }[];
  checked_at?: string;
}

export interface UserOverview extends User {
  available: string;
  held: string;
}

export interface Fees {
  fees_earned: string;
  minted?: string;
}

export interface Market {
  class: string;
  best_bid: string | null;
  best_ask: string | null;
  last_price: string | null;
  volume_24h_gpu_hours: string | number | null;
  free_gpus: number | null;
}

export interface BookLevel {
  price: string;
  gpus: number;
  orders: number;
}

export interface Book {
  class: string;
  bids: BookLevel[];
  asks: BookLevel[];
}

export interface Trade {
  trade_id: string;
  price: string;
  gpus: number;
  max_hours: number | string;
  at: string;
  /** Present on some feeds; the tape colours by it when known. */
  side?: 'bid' | 'ask';
}

export interface Candle {
  t: number;
  open: string;
  high: string;
  low: string;
  close: string;
  volume: string | number;
}

export type OrderSide = 'bid' | 'ask';
export type OrderStatus = 'open' | 'filled' | 'cancelled' | 'expired';

export interface Fill {
  trade_id: string;
  lease_id: string;
  price: string;
  gpus: number;
  at: string;
}

export interface UnfilledReason {
  code: string;
  message: string;
}

export interface Order {
  order_id: string;
  class: string;
  side: OrderSide;
  status: OrderStatus;
  gpus: number;
  gpus_remaining: number;
  price: string;
  max_hours?: number | string | null;
  available_until?: string | null;
  tif: 'gtc' | 'ioc';
  escrow?: string | null;
  created_at: string;
  fills: Fill[];
  unfilled_reasons?: UnfilledReason[];
  host_id?: string | null;
}

export interface BidRequest {
  side: 'bid';
  gpus: number;
  max_hours: number;
  price: string;
  tif: 'gtc' | 'ioc';
  job: { command: string[]; env: Record<string, string> };
}

export interface AskRequest {
  side: 'ask';
  host_id: string;
  gpus: number;
  available_until: string;
  price: string;
  tif: 'gtc' | 'ioc';
}

export interface HostGpu {
  uuid: string;
  name: string;
  class: string;
  memory_total_mib: number;
  busy: boolean;
}

export interface Host {
  host_id: string;
  name: string;
  live: boolean;
  last_report_at: string | null;
  report_interval_s: number;
  gpus: HostGpu[];
  reports_accepted: number;
  reports_refused: Record<string, number>;
  earnings: string;
}

export interface TelemetrySample {
  at: string;
  utilization_pct: number;
  power_w: number;
  temperature_c: number;
  memory_used_mib: number;
}

export interface Telemetry {
  gpus: { uuid: string; samples: TelemetrySample[] }[];
}

export interface Capacity {
  class: string;
  live_hosts: number;
  free_gpus: number;
  busy_gpus: number;
}

export type JobState = 'pending' | 'running' | 'exited' | 'cancelled' | 'released' | 'host_lost' | 'max_duration';

export interface Job {
  job_id: string;
  state: JobState;
  class: string;
  host_id: string | null;
  gpu_uuids: string[];
  gpus: number;
  price: string;
  /** Attested seconds billed, as the API's decimal string (e.g. "2.662"). */
  billed_seconds: string;
  cost_so_far: string;
  escrow_left: string;
  exit_code: number | null;
  started_at: string | null;
  ended_at: string | null;
  command: string[];
}

export interface LogLine {
  seq: number;
  stream: 'stdout' | 'stderr' | string;
  text: string;
  at: string;
}

export interface LogPage {
  items: LogLine[];
  next_after: number | null;
}

/** RFC 9457 problem document, as every API error is. */
export interface Problem {
  type: string;
  title: string;
  status: number;
  detail: string;
  code: string;
  field?: string;
}
