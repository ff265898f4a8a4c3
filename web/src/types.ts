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
  /** Settlements paid into this wallet by the user's hosts' leases, all time. */
  earned?: string;
}

/** The entries of one kind within a movement group. */
export interface MovementKind {
  kind: string;
  entries: number;
  /** Signed change of available credits (e.g. "-0.25"). */
  wallet_delta: string;
  /** Signed change of held credits. */
  held_delta: string;
  first_at: string;
  last_at: string;
}

/** Every ledger movement of one lease, one order, or one other transfer. */
export interface MovementGroup {
  group: 'lease' | 'order' | 'transfer' | string;
  ref_id: string;
  order_id: string | null;
  class: string | null;
  host_id: string | null;
  entries: number;
  wallet_delta: string;
  held_delta: string;
  first_at: string;
  last_at: string;
  kinds: MovementKind[];
}

export interface BalancePoint {
  at: string;
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
  /** `free_gpus` by verification level (every level present). */
  free_gpus_by_level?: LevelCounts;
  /** GPUs open asks offer now, by their verification level. */
  offered_gpus_by_level?: LevelCounts;
  /** The interruptible side: best bid and ask, and GPUs interruptible jobs use now. */
  best_interruptible_bid?: string | null;
  best_interruptible_ask?: string | null;
  interruptible_gpus?: number;
}

/** What the exchange checked about a GPU, weakest first (see verification.ts). */
export type VerificationLevel = 'simulated' | 'reported' | 'challenged' | 'cc_attested';

export type LevelCounts = Partial<Record<VerificationLevel, number>>;

export interface GpuVerification {
  gpu_uuid: string;
  class: string;
  level: VerificationLevel;
  /** While ahead, a passed challenge holds the GPU at challenged (or above). */
  challenged_until: string | null;
  /** While ahead, verified CC evidence holds the GPU at cc_attested. */
  cc_attested_until: string | null;
  /** For cc_attested: false means "measurements not checked". */
  cc_measurements_checked: boolean | null;
  verified_at: string | null;
}

export interface Challenge {
  challenge_id: string;
  gpu_uuid: string;
  class: string;
  /** registration, scheduled or operator. */
  reason: string;
  n: number;
  k: number;
  issued_at: string;
  commit_by: string;
  committed_at: string | null;
  decided_at: string | null;
  /** issued, committed, passed or failed. */
  state: string;
  failure_code: string | null;
  failure_detail: string | null;
  seed: string | null;
  root: string | null;
  rows_asked: number[] | null;
  /** Server time spent checking the answer. */
  verify_us: number | null;
}

export interface Attestation {
  request_id: string;
  gpu_uuid: string;
  requested_at: string;
  /** requested, verified, refused, unavailable, expired. */
  state: string;
  decided_at: string | null;
  code: string | null;
  detail: string | null;
  verified: Record<string, unknown> | null;
}

export interface HostVerification {
  host_id: string;
  backend: string;
  challenge_failures: number;
  challenge_blocked_at: string | null;
  gpus: GpuVerification[];
  refusals: Record<string, number>;
  challenges: Challenge[];
  attestations: Attestation[];
}

export interface BookLevel {
  price: string;
  gpus: number;
  orders: number;
}

export interface Book {
  class: string;
  /** On-demand bids. */
  bids: BookLevel[];
  /** Asks at their on-demand price (every unsold GPU, those in interruptible use included). */
  asks: BookLevel[];
  /** Interruptible bids, and asks' idle GPUs at their interruptible prices. */
  interruptible_bids?: BookLevel[];
  interruptible_asks?: BookLevel[];
  /** GPUs of resting asks that interruptible jobs use now. */
  interruptible_gpus_in_use?: number;
}

/** One order near the top of the book (GET /markets/{class}/top). */
export interface TopOrder {
  order_id: string;
  side: 'bid' | 'ask';
  price: string;
  gpus: number;
  host_id: string | null;
  host_name: string | null;
  verification: VerificationLevel | null;
  host_uptime_7d: string | null;
  available_until: string | null;
  max_hours: string | null;
  min_verification: VerificationLevel | null;
  min_uptime_7d: string | null;
}

export interface CrossingPair {
  bid_order_id: string;
  ask_order_id: string;
  bid_price: string;
  ask_price: string;
  reasons: { code: string; message: string }[];
}

export interface TopOfBook {
  class: string;
  bids: TopOrder[];
  asks: TopOrder[];
  crossed: boolean;
  crossing: CrossingPair[];
  summary: string;
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
  /** Bids: the weakest level the bid accepts (null: any). */
  min_verification?: VerificationLevel | null;
  /** Asks: the weakest level of the ask's GPUs. */
  verification?: VerificationLevel | null;
  /** Bids: on_demand or interruptible. */
  priority?: BidPriority | null;
  /** Asks: the price of interruptible use of their idle GPUs (null: not sold so). */
  interruptible_price?: string | null;
  /** Asks: GPUs of gpus_remaining that interruptible jobs use now (still offered on demand). */
  gpus_interruptible?: number | null;
}

export type BidPriority = 'on_demand' | 'interruptible';

export interface BidRequest {
  side: 'bid';
  gpus: number;
  max_hours: number;
  price: string;
  tif: 'gtc' | 'ioc';
  job: { command: string[]; env: Record<string, string> };
  /** Only asks whose GPUs all meet it; absent: any level. */
  min_verification?: Exclude<VerificationLevel, 'simulated'>;
  /** Absent: on_demand. */
  priority?: BidPriority;
}

export interface AskRequest {
  side: 'ask';
  host_id: string;
  gpus: number;
  available_until: string;
  price: string;
  tif: 'gtc' | 'ioc';
  /** Also sell idle GPUs for interruptible use at this price (below price). */
  interruptible_price?: string;
}

/** What a GPU is doing; the server may add states, shown as they come. */
export type GpuState =
  | 'idle'
  | 'offered'
  | 'leased'
  | 'interruptible'
  | 'preempting'
  | 'under_challenge'
  | 'foreign_process'
  | 'offline'
  | string;

export interface HostGpu {
  uuid: string;
  name: string;
  class: string;
  memory_total_mib: number;
  busy: boolean;
  state?: GpuState;
  /** The open ask the GPU is bound to. */
  order_id?: string | null;
  /** The lease that has it. */
  lease_id?: string | null;
  /** The open proof-of-compute challenge on it. */
  challenge_id?: string | null;
  /** In the latest report of a live host. */
  reporting?: boolean;
  verification?: GpuVerification;
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
  /** The probe the host registered with: nvml or simulated. */
  backend?: string;
  /** Set while the host may not place asks after failed challenges, until an operator clears it. */
  challenge_blocked_at?: string | null;
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

export type JobState =
  | 'pending'
  | 'running'
  | 'preempting'
  | 'exited'
  | 'cancelled'
  | 'released'
  | 'host_lost'
  | 'max_duration'
  | 'preempted';

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
  /** The job's stable id is `job_id`; this is the lease of the attempt the other fields describe. */
  lease_id?: string;
  /** That attempt's number: 1, then one more per restart. */
  attempt?: number;
  /** The job as a whole: running, restarting, gave_up or ended. */
  job_state?: JobLifecycle;
  /** Why the job gave up or ended (attempts_exhausted, deadline, ..., or the last attempt's end). */
  end_reason?: string | null;
  /** on_demand or interruptible (the bid's priority). */
  priority?: BidPriority;
  /** A preempted attempt: when an on-demand buyer took its GPUs, and when its job is killed. */
  preempted_at?: string | null;
  preempt_deadline?: string | null;
  /** The exchange-placed bid of the next attempt while it waits. */
  next_bid_id?: string | null;
  restart?: RestartPolicy | null;
  /** Every attempt, in order (filled by GET /jobs/{id}; empty in lists). */
  attempts?: Attempt[];
  /** SLA credits paid to the buyer over the attempts shown. */
  sla_credits?: string;
  max_hours?: string;
  role?: 'buyer' | 'provider' | string;
  parent_job_id?: string | null;
  budget?: string | null;
  budget_used?: string;
  children?: ChildJob[];
}

export type JobLifecycle = 'running' | 'preempting' | 'restarting' | 'gave_up' | 'ended' | string;

/** A managed job's restart policy, as the bid set it. */
export interface RestartPolicy {
  on: string[];
  max_attempts?: number | null;
  max_price?: string | null;
}

/** One attempt (lease) of a job: services/server/src/jobs/attempts.rs AttemptView. */
export interface Attempt {
  attempt: number;
  lease_id: string;
  host_id: string;
  state: string;
  started_at: string | null;
  ended_at: string | null;
  /** The attempt's final state (`failed` for a non-zero exit), or null while it runs. */
  end_reason: string | null;
  exit_code: number | null;
  /** Seconds billed, decimal string. */
  billed: string;
  /** Credits billed, gross. */
  cost: string;
  /** Credits paid back to the buyer because the host was lost. */
  sla_credit: string;
}

/** A child bid a job placed with its job token: services/server/src/jobs/children.rs ChildView. */
export interface ChildJob {
  job_id: string;
  class: string;
  status: string;
  gpus: number;
  price: string;
  max_hours: string | null;
  held: string;
  spent: string;
  created_at: string;
}

export interface LogLine {
  /** The attempt that printed the line. */
  attempt?: number;
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
