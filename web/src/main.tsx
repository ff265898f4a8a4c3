import { render } from 'preact';
import { App } from './app';
import { startLiveFeed } from './live';
import './style.css';

startLiveFeed();
render(<App />, document.getElementById('app')!);
