// Charts. Time axes use TradingView's lightweight-charts (candles, telemetry); the depth
// chart, whose x axis is price, uses uPlot. Chart libraries plot numbers, so amounts are
// turned into numbers here for drawing only (money.ts toPlotNumber); every amount shown as
// text elsewhere is formatted exactly from its string.
import {
  CandlestickSeries,
  ColorType,
  HistogramSeries,
  LineSeries,
  LineType,
  createChart,
  type IChartApi,
  type ISeriesApi,
  type UTCTimestamp,
} from 'lightweight-charts';
import { useEffect, useRef } from 'preact/hooks';
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';
import { toPlotNumber } from '../money';
import { depthSeries, depthSteps, pricePrecision } from '../chartdata';
import type { Book, Candle } from '../types';

const TEXT = '#9aa4b2';
const GRID = '#1f2630';
const UP = '#26a69a';
const DOWN = '#ef5350';
export const SERIES_COLORS = ['#4ea1ff', '#f5b942', '#b07cff', '#26c6da', '#ff7a59', '#9ccc65', '#ec407a', '#8d6e63'];

function baseChart(el: HTMLElement, height: number): IChartApi {
  return createChart(el, {
    autoSize: true,
    height,
    layout: {
      background: { type: ColorType.Solid, color: 'transparent' },
      textColor: TEXT,
      fontSize: 11,
      attributionLogo: true,
    },
    grid: { vertLines: { color: GRID }, horzLines: { color: GRID } },
    rightPriceScale: { borderColor: GRID },
    timeScale: { borderColor: GRID, timeVisible: true, secondsVisible: false },
    crosshair: { mode: 1 },
  });
}

/** Price candles with volume underneath. */
export function CandleChart(props: { candles: Candle[]; height?: number }) {
  const el = useRef<HTMLDivElement>(null);
  const chart = useRef<undefined | { chart: IChartApi; candles: ISeriesApi<'Candlestick'>; volume: ISeriesApi<'Histogram'> }>(undefined);
  useEffect(() => {
    const c = baseChart(el.current!, props.height ?? 260);
    const candles = c.addSeries(CandlestickSeries, {
      upColor: UP,
      downColor: DOWN,
      borderVisible: false,
      wickUpColor: UP,
      wickDownColor: DOWN,
      priceFormat: { type: 'price', precision: 2, minMove: 0.000001 },
    });
    const volume = c.addSeries(HistogramSeries, { priceScaleId: 'volume', priceFormat: { type: 'volume' } });
    c.priceScale('volume').applyOptions({ scaleMargins: { top: 0.8, bottom: 0 } });
    candles.priceScale().applyOptions({ scaleMargins: { top: 0.05, bottom: 0.25 } });
    chart.current = { chart: c, candles, volume };
    return () => {
      c.remove();
      chart.current = undefined;
    };
  }, []);
  useEffect(() => {
    const c = chart.current;
    if (!c) return;
    const sorted = dedupeByTime([...props.candles].sort((a, b) => a.t - b.t), (x) => x.t);
    const precision = pricePrecision(sorted.flatMap((k) => [k.open, k.high, k.low, k.close]));
    c.candles.applyOptions({ priceFormat: { type: 'price', precision, minMove: 10 ** -precision } });
    c.candles.setData(
      sorted.map((k) => ({
        time: k.t as UTCTimestamp,
        open: toPlotNumber(k.open),
        high: toPlotNumber(k.high),
        low: toPlotNumber(k.low),
        close: toPlotNumber(k.close),
      })),
    );
    c.volume.setData(
      sorted.map((k) => ({
        time: k.t as UTCTimestamp,
        value: toPlotNumber(String(k.volume)),
        color: toPlotNumber(k.close) >= toPlotNumber(k.open) ? 'rgba(38,166,154,0.4)' : 'rgba(239,83,80,0.4)',
      })),
    );
    c.chart.timeScale().fitContent();
  }, [props.candles]);
  return <div class="chart" ref={el} data-testid="candle-chart" />;
}

function dedupeByTime<T>(items: T[], time: (x: T) => number): T[] {
  const out: T[] = [];
  for (const item of items) {
    if (out.length && time(out[out.length - 1]) === time(item)) out[out.length - 1] = item;
    else out.push(item);
  }
  return out;
}

export interface TimeSeries {
  /** Identifies the line across updates (a GPU UUID). */
  key: string;
  label: string;
  points: { at: string; value: number }[];
}

/** One line per series over time (GPU utilisation, power, temperature). */
export function TimeSeriesChart(props: {
  series: TimeSeries[];
  height?: number;
  unit?: string;
  testid?: string;
  /** Decimals on the value axis (default 0: percent, watts, degrees). */
  precision?: number;
  /** Step lines (a balance holds its value until the next movement). */
  stepped?: boolean;
}) {
  const el = useRef<HTMLDivElement>(null);
  const chart = useRef<IChartApi | undefined>(undefined);
  const lines = useRef<Map<string, ISeriesApi<'Line'>>>(new Map());
  useEffect(() => {
    chart.current = baseChart(el.current!, props.height ?? 160);
    return () => {
      chart.current?.remove();
      chart.current = undefined;
      lines.current.clear();
    };
  }, []);
  useEffect(() => {
    const c = chart.current;
    if (!c) return;
    const seen = new Set<string>();
    props.series.forEach((s, i) => {
      seen.add(s.key);
      let line = lines.current.get(s.key);
      if (!line) {
        line = c.addSeries(LineSeries, {
          color: SERIES_COLORS[i % SERIES_COLORS.length],
          lineWidth: 2,
          title: s.label,
          lineType: props.stepped ? LineType.WithSteps : LineType.Simple,
          priceFormat: { type: 'price', precision: props.precision ?? 0, minMove: 10 ** -(props.precision ?? 0) },
        });
        lines.current.set(s.key, line);
      }
      const points = dedupeByTime(
        s.points
          .map((p) => ({ time: Math.floor(Date.parse(p.at) / 1000), value: p.value }))
          .filter((p) => Number.isFinite(p.time) && Number.isFinite(p.value))
          .sort((a, b) => a.time - b.time),
        (p) => p.time,
      );
      line.setData(points.map((p) => ({ time: p.time as UTCTimestamp, value: p.value })));
    });
    for (const [key, line] of lines.current) {
      if (!seen.has(key)) {
        c.removeSeries(line);
        lines.current.delete(key);
      }
    }
    c.timeScale().fitContent();
  }, [props.series]);
  return (
    <div class="chart-wrap">
      {props.unit && <div class="chart-unit">{props.unit}</div>}
      <div class="chart" ref={el} data-testid={props.testid} />
    </div>
  );
}

export function DepthChart(props: { book: Book; height?: number }) {
  const el = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | undefined>(undefined);
  useEffect(() => {
    const node = el.current!;
    const opts: uPlot.Options = {
      width: Math.max(node.clientWidth, 200),
      height: props.height ?? 220,
      legend: { show: false },
      cursor: { drag: { x: false, y: false } },
      // Depth starts at zero GPUs, so each side's fill is an area down to the axis.
      scales: { x: { time: false }, y: { range: (_u, _min, max) => [0, Math.max(max, 1) * 1.1] } },
      axes: [
        { stroke: TEXT, grid: { stroke: GRID }, ticks: { stroke: GRID } },
        { stroke: TEXT, grid: { stroke: GRID }, ticks: { stroke: GRID }, label: 'GPUs', labelSize: 14 },
      ],
      series: [
        { label: 'price' },
        {
          label: 'bids',
          stroke: UP,
          fill: 'rgba(38,166,154,0.25)',
          paths: uPlot.paths.stepped!({ align: -1 }),
          points: { show: false },
          spanGaps: false,
        },
        {
          label: 'asks',
          stroke: DOWN,
          fill: 'rgba(239,83,80,0.25)',
          paths: uPlot.paths.stepped!({ align: 1 }),
          points: { show: false },
          spanGaps: false,
        },
      ],
    };
    const u = new uPlot(opts, [[], [], []], node);
    plot.current = u;
    const resize = new ResizeObserver(() => u.setSize({ width: Math.max(node.clientWidth, 200), height: u.height }));
    resize.observe(node);
    return () => {
      resize.disconnect();
      u.destroy();
      plot.current = undefined;
    };
  }, []);
  useEffect(() => {
    const d = depthSeries(props.book);
    plot.current?.setData([d.x, d.bids, d.asks] as uPlot.AlignedData);
  }, [props.book]);
  // The exact steps drawn, for people reading the DOM and for the browser tests.
  const steps = depthSteps(props.book);
  return (
    <div
      class="chart depth"
      ref={el}
      data-testid="depth-chart"
      data-bid-steps={steps.bids.map((s) => `${s.price}:${s.gpus}`).join(' ')}
      data-ask-steps={steps.asks.map((s) => `${s.price}:${s.gpus}`).join(' ')}
    />
  );
}
