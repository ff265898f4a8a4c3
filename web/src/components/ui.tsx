// Small building blocks every page uses: panels, load states, form fields with their
// server-side errors, amounts and times.
import type { ComponentChildren } from 'preact';
import { useRef, useState } from 'preact/hooks';
import { ApiError } from '../api';
import { errorsFromProblem, type FormErrors } from '../forms';
import { formatCredits, type FormatOptions } from '../money';
import type { Resource } from '../resource';

export function Panel(props: {
  title: ComponentChildren;
  actions?: ComponentChildren;
  children: ComponentChildren;
  testid?: string;
  class?: string;
}) {
  return (
    <section class={`panel ${props.class ?? ''}`} data-testid={props.testid}>
      <header class="panel-head">
        <h2>{props.title}</h2>
        {props.actions && <div class="panel-actions">{props.actions}</div>}
      </header>
      <div class="panel-body">{props.children}</div>
    </section>
  );
}

export function NotAvailable(props: { what?: string }) {
  return (
    <div class="empty not-available" data-testid="not-available">
      {props.what ? `${props.what}: not` : 'Not'} available yet — this part of the exchange has not landed on the
      server.
    </div>
  );
}

export function Empty(props: { children: ComponentChildren; testid?: string }) {
  return (
    <div class="empty" data-testid={props.testid}>
      {props.children}
    </div>
  );
}

export function ErrorBox(props: { error: unknown; testid?: string }) {
  if (!props.error) return null;
  const text =
    props.error instanceof ApiError
      ? props.error.message
      : props.error instanceof Error
        ? props.error.message
        : String(props.error);
  return (
    <div class="error-box" role="alert" data-testid={props.testid ?? 'error'}>
      {text}
    </div>
  );
}

/**
 * Renders a resource: a spinner on first load, "not available yet" for endpoints the
 * server does not have yet, an error, or `children(data)`. A failed refetch keeps the
 * last data on screen with the error above it.
 */
export function Loadable<T>(props: {
  res: Resource<T>;
  what?: string;
  children: (data: T) => ComponentChildren;
}) {
  const { res } = props;
  if (res.notAvailable) return <NotAvailable what={props.what} />;
  if (res.data === undefined) {
    if (res.error) return <ErrorBox error={res.error} />;
    return <div class="loading">Loading…</div>;
  }
  return (
    <>
      {res.error && <ErrorBox error={res.error} />}
      {props.children(res.data)}
    </>
  );
}

/** An amount from the API, formatted exactly (see money.ts). */
export function Amount(props: { value: string | null | undefined; opts?: FormatOptions; testid?: string; unit?: string }) {
  return (
    <span class="num" data-testid={props.testid}>
      {formatCredits(props.value, props.opts)}
      {props.unit && <span class="unit"> {props.unit}</span>}
    </span>
  );
}

export function fmtTime(iso: string | null | undefined): string {
  if (!iso) return '—';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  return d.toLocaleString(undefined, { hour12: false });
}

export function fmtClock(iso: string | null | undefined): string {
  if (!iso) return '—';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  return d.toLocaleTimeString(undefined, { hour12: false });
}

export function fmtAge(iso: string | null | undefined, now = Date.now()): string {
  if (!iso) return 'never';
  const s = Math.round((now - Date.parse(iso)) / 1000);
  if (!Number.isFinite(s)) return '—';
  if (s < 60) return `${Math.max(s, 0)}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)}m ago`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ago`;
  return `${Math.floor(s / 86400)}d ago`;
}

/** Whole seconds as "1h 2m 3s"; takes a number or a decimal string as the API sends it ("2.662"). */
export function fmtDuration(seconds: number | string | null | undefined): string {
  const n = typeof seconds === 'string' && seconds.trim() !== '' ? Number(seconds) : seconds;
  if (typeof n !== 'number' || !Number.isFinite(n)) return '—';
  const s = Math.max(0, Math.floor(n));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const r = s % 60;
  return h > 0 ? `${h}h ${m}m ${r}s` : m > 0 ? `${m}m ${r}s` : `${r}s`;
}

/** The last 8 hex digits of an id: ids are UUIDv7, whose leading digits are a timestamp
 * (ids made within a minute share them) and whose tail is random. */
export function shortId(id: string | null | undefined): string {
  return id ? id.slice(-8) : '—';
}

export function StatusBadge(props: { status: string; testid?: string }) {
  return (
    <span class={`badge badge-${props.status}`} data-testid={props.testid}>
      {props.status.replace(/_/g, ' ')}
    </span>
  );
}

// ---- forms ----

export interface FormState {
  errors: FormErrors;
  busy: boolean;
  /** Runs a submission: clears old errors, maps a failure onto the fields. */
  submit(action: () => Promise<void>): Promise<boolean>;
  setFieldError(name: string, message: string): void;
  clear(): void;
}

export function useForm(fieldNames: readonly string[]): FormState {
  const [errors, setErrors] = useState<FormErrors>({ fields: {} });
  const [busy, setBusy] = useState(false);
  const busyRef = useRef(false);
  return {
    errors,
    busy,
    async submit(action) {
      if (busyRef.current) return false;
      busyRef.current = true;
      setBusy(true);
      setErrors({ fields: {} });
      try {
        await action();
        return true;
      } catch (err) {
        setErrors(errorsFromProblem(err, fieldNames));
        return false;
      } finally {
        busyRef.current = false;
        setBusy(false);
      }
    },
    setFieldError(name, message) {
      setErrors({ fields: { [name]: message } });
    },
    clear() {
      setErrors({ fields: {} });
    },
  };
}

/** The error slot at the top of a form, for errors that name no field of it. */
export function FormError(props: { form: FormState; testid: string }) {
  const top = props.form.errors.top;
  return top ? (
    <div class="form-error" role="alert" data-testid={props.testid}>
      {top}
    </div>
  ) : null;
}

/** What a Field passes to its input so screen readers tie the error to it. */
export interface FieldAria {
  'aria-invalid'?: 'true';
  'aria-describedby'?: string;
}

/**
 * A labelled form field. `name` is the API field name: an error whose `field` is `name`
 * shows right under the input, in an element with data-testid="error-<name>".
 */
export function Field(props: {
  form: FormState;
  name: string;
  label: ComponentChildren;
  id: string;
  hint?: ComponentChildren;
  children: (aria: FieldAria) => ComponentChildren;
}) {
  const error = props.form.errors.fields[props.name];
  const errorId = `${props.id}-error`;
  const hintId = `${props.id}-hint`;
  const describedBy = [error ? errorId : '', props.hint ? hintId : ''].filter(Boolean).join(' ') || undefined;
  return (
    <div class={`field ${error ? 'has-error' : ''}`}>
      <label for={props.id}>{props.label}</label>
      {props.children({ 'aria-invalid': error ? 'true' : undefined, 'aria-describedby': describedBy })}
      {props.hint && (
        <div class="hint" id={hintId}>
          {props.hint}
        </div>
      )}
      {error && (
        <div class="field-error" id={errorId} role="alert" data-testid={`error-${props.name}`}>
          {error}
        </div>
      )}
    </div>
  );
}

/** Value of an input event, typed. */
export function inputValue(e: Event): string {
  return (e.currentTarget as HTMLInputElement).value;
}
