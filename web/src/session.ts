// The logged-in user and their JWT. Kept in sessionStorage: it survives a reload but not
// the closing of the tab, and each browser tab can be a different user.
import { createStore } from './store';
import type { LoginResponse, Role, User } from './types';

export interface Session {
  token: string;
  expiresAt: string;
  user: User;
}

const KEY = 'capex.session';

function load(): Session | null {
  try {
    const raw = sessionStorage.getItem(KEY);
    if (!raw) return null;
    const s = JSON.parse(raw) as Session;
    if (!s.token || Date.parse(s.expiresAt) <= Date.now()) return null;
    return s;
  } catch {
    return null;
  }
}

export const session = createStore<Session | null>(typeof sessionStorage === 'undefined' ? null : load());

// Log out when the token expires, rather than failing request after request.
let expiryTimer: ReturnType<typeof setTimeout> | undefined;
const TIMER_MS_MAX = 2 ** 31 - 1;
function watchExpiry(s: Session | null): void {
  clearTimeout(expiryTimer);
  if (!s) return;
  const ms = Date.parse(s.expiresAt) - Date.now();
  if (Number.isFinite(ms)) expiryTimer = setTimeout(signOut, Math.min(Math.max(ms, 0), TIMER_MS_MAX));
}
session.subscribe(watchExpiry);
watchExpiry(session.get());

export function signIn(login: LoginResponse): void {
  const s: Session = { token: login.token, expiresAt: login.expires_at, user: login.user };
  sessionStorage.setItem(KEY, JSON.stringify(s));
  session.set(s);
}

export function updateUser(user: User): void {
  const s = session.get();
  if (!s) return;
  const next = { ...s, user };
  sessionStorage.setItem(KEY, JSON.stringify(next));
  session.set(next);
}

export function signOut(): void {
  sessionStorage.removeItem(KEY);
  session.set(null);
}

export function hasRole(s: Session | null, role: Role): boolean {
  return !!s && s.user.roles.includes(role);
}
