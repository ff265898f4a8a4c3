import { useEffect, useState } from 'preact/hooks';
import { api } from '../api';
import { Field, FormError, Panel, inputValue, useForm } from '../components/ui';
import { href, navigate } from '../router';
import { session, signIn } from '../session';
import { useStore } from '../store';
import type { Role } from '../types';

/** Only same-app hash routes are followed after login (no open redirects). */
export function safeNext(next: string | null | undefined): string {
  return next && next.startsWith('#/') && !next.startsWith('#/login') && !next.startsWith('#/register')
    ? next
    : '#/markets';
}

export function LoginPage(props: { next?: string | null }) {
  const s = useStore(session);
  // Someone already logged in who opens a login link (a bookmark, a "log in to trade"
  // link in another tab) goes where the link points, not to a form they do not need.
  useEffect(() => {
    if (s) navigate(safeNext(props.next));
  }, [s, props.next]);
  const form = useForm(['email', 'password']);
  const [email, setEmail] = useState('');
  const [password, setPassword] = useState('');

  const onSubmit = (e: Event) => {
    e.preventDefault();
    void form.submit(async () => {
      signIn(await api.login(email.trim(), password));
      navigate(safeNext(props.next));
    });
  };

  return (
    <div class="narrow">
      <Panel title="Log in" testid="login-panel">
        <form onSubmit={onSubmit} data-testid="login-form" noValidate>
          <FormError form={form} testid="login-error" />
          <Field form={form} name="email" id="login-email" label="Email">
            {(aria) => (
              <input
                id="login-email"
                name="email"
                type="email"
                autoComplete="username"
                required
                value={email}
                onInput={(e) => setEmail(inputValue(e))}
                data-testid="login-email"
                {...aria}
              />
            )}
          </Field>
          <Field form={form} name="password" id="login-password" label="Password">
            {(aria) => (
              <input
                id="login-password"
                name="password"
                type="password"
                autoComplete="current-password"
                required
                value={password}
                onInput={(e) => setPassword(inputValue(e))}
                data-testid="login-password"
                {...aria}
              />
            )}
          </Field>
          <button type="submit" class="primary" disabled={form.busy} data-testid="login-submit">
            {form.busy ? 'Logging in…' : 'Log in'}
          </button>
        </form>
        <p class="muted">
          No account? <a href={href('register')}>Register</a>.
        </p>
      </Panel>
    </div>
  );
}

export function RegisterPage() {
  const form = useForm(['email', 'password', 'roles']);
  const [email, setEmail] = useState('');
  const [password, setPassword] = useState('');
  const [roles, setRoles] = useState<Role[]>(['buyer']);

  const toggle = (role: Role) =>
    setRoles((rs) => (rs.includes(role) ? rs.filter((r) => r !== role) : [...rs, role]));

  const onSubmit = (e: Event) => {
    e.preventDefault();
    void form.submit(async () => {
      await api.register(email.trim(), password, roles);
      // Log straight in: the user just typed the password.
      signIn(await api.login(email.trim(), password));
      navigate('#/markets');
    });
  };

  return (
    <div class="narrow">
      <Panel title="Create an account" testid="register-panel">
        <form onSubmit={onSubmit} data-testid="register-form" noValidate>
          <FormError form={form} testid="register-error" />
          <Field form={form} name="email" id="register-email" label="Email">
            {(aria) => (
              <input
                id="register-email"
                name="email"
                type="email"
                autoComplete="username"
                required
                value={email}
                onInput={(e) => setEmail(inputValue(e))}
                data-testid="register-email"
                {...aria}
              />
            )}
          </Field>
          <Field form={form} name="password" id="register-password" label="Password" hint="At least 8 characters.">
            {(aria) => (
              <input
                id="register-password"
                name="password"
                type="password"
                autoComplete="new-password"
                required
                minLength={8}
                value={password}
                onInput={(e) => setPassword(inputValue(e))}
                data-testid="register-password"
                {...aria}
              />
            )}
          </Field>
          <Field form={form} name="roles" id="register-role-buyer" label="I want to">
            {(aria) => (
              <div class="checks" role="group" {...aria}>
                <label>
                  <input
                    id="register-role-buyer"
                    type="checkbox"
                    checked={roles.includes('buyer')}
                    onChange={() => toggle('buyer')}
                    data-testid="register-role-buyer"
                  />{' '}
                  buy GPU time (buyer)
                </label>
                <label>
                  <input
                    id="register-role-provider"
                    type="checkbox"
                    checked={roles.includes('provider')}
                    onChange={() => toggle('provider')}
                    data-testid="register-role-provider"
                  />{' '}
                  sell GPU time (provider)
                </label>
              </div>
            )}
          </Field>
          <button type="submit" class="primary" disabled={form.busy} data-testid="register-submit">
            {form.busy ? 'Creating…' : 'Create account'}
          </button>
        </form>
        <p class="muted">
          Have an account? <a href={href('login')}>Log in</a>.
        </p>
      </Panel>
    </div>
  );
}
