import { useEffect } from 'preact/hooks';
import { api } from './api';
import { liveStatus } from './live';
import { JobsPage } from './pages/jobs';
import { LoginPage, RegisterPage } from './pages/auth';
import { MarketPage } from './pages/market';
import { MarketsPage } from './pages/markets';
import { OperatorPage } from './pages/operator';
import { OrdersPage } from './pages/orders';
import { ProviderPage } from './pages/provider';
import { WalletPage } from './pages/wallet';
import { href, navigate, useRoute, type Route } from './router';
import { hasRole, session, signOut, updateUser, type Session } from './session';
import { useStore } from './store';

const NEEDS_LOGIN = new Set(['orders', 'wallet', 'jobs', 'provider', 'operator']);

export function App() {
  const route = useRoute();
  const s = useStore(session);
  const live = useStore(liveStatus);
  const page = route.parts[0] ?? 'markets';

  // Refresh who we are once per login (roles may have changed since the token was issued).
  const token = s?.token;
  useEffect(() => {
    if (token) api.me().then(updateUser, () => undefined);
  }, [token]);

  useEffect(() => {
    if (!s && NEEDS_LOGIN.has(page)) navigate(`#/login?next=${encodeURIComponent(window.location.hash)}`);
  }, [s, page]);

  return (
    <div class="shell" data-live={live}>
      <Nav page={page} s={s} />
      {live === 'offline' && (
        <div class="offline-banner" role="status" data-testid="offline-banner">
          Live feed disconnected — reconnecting… Views refresh every few seconds until it is back.
        </div>
      )}
      <main class="main">
        <Page page={page} route={route} s={s} />
      </main>
      <footer class="footer">
        <span>Capex — GPU capacity exchange</span>
        <span data-testid="chart-attribution">
          Price charts by{' '}
          <a href="https://www.tradingview.com/" target="_blank" rel="noopener noreferrer">
            TradingView
          </a>{' '}
          Lightweight Charts™ (Apache-2.0); depth chart by{' '}
          <a href="https://github.com/leeoniya/uPlot" target="_blank" rel="noopener noreferrer">
            uPlot
          </a>{' '}
          (MIT).
        </span>
      </footer>
    </div>
  );
}

function Nav(props: { page: string; s: Session | null }) {
  const { page, s } = props;
  const link = (to: string, label: string) => (
    <a href={href(to)} class={page === to ? 'active' : ''} data-testid={`nav-${to}`}>
      {label}
    </a>
  );
  return (
    <nav class="nav" aria-label="Main">
      <a class="brand" href={href('markets')}>
        capex
      </a>
      {link('markets', 'Markets')}
      {s && link('orders', 'My orders')}
      {s && link('wallet', 'Wallet')}
      {s && link('jobs', 'Jobs')}
      {hasRole(s, 'provider') && link('provider', 'Provider')}
      {hasRole(s, 'operator') && link('operator', 'Operator')}
      <span class="spacer" />
      {s ? (
        <>
          <span class="who" data-testid="current-user">
            {s.user.email} <span class="roles">{s.user.roles.join(', ')}</span>
          </span>
          <button
            type="button"
            class="link"
            data-testid="logout"
            onClick={() => {
              signOut();
              navigate('#/login');
            }}
          >
            Log out
          </button>
        </>
      ) : (
        <>
          {link('login', 'Log in')}
          {link('register', 'Register')}
        </>
      )}
    </nav>
  );
}

function Page(props: { page: string; route: Route; s: Session | null }) {
  const { page, route, s } = props;
  if (page === 'login') return <LoginPage next={route.query.get('next')} />;
  if (page === 'register') return <RegisterPage />;
  if (page === 'markets' && route.parts[1]) return <MarketPage cls={route.parts[1]} />;
  if (page === 'markets') return <MarketsPage />;
  if (!s) return null; // redirecting to the login page
  switch (page) {
    case 'orders':
      return <OrdersPage />;
    case 'wallet':
      return <WalletPage />;
    case 'jobs':
      return <JobsPage selected={route.parts[1]} />;
    case 'provider':
      return <ProviderPage />;
    case 'operator':
      return <OperatorPage />;
    default:
      return (
        <div class="empty" data-testid="not-found">
          No such page. <a href={href('markets')}>Go to the markets</a>.
        </div>
      );
  }
}
