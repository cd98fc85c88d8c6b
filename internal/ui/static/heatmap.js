// heatmap.js — hosts × hosts on a canvas (one pixel per cell in an offscreen
// image, scaled up without smoothing), so thousands of hosts cost one
// putImageData and one drawImage, not a DOM node or a fillRect per cell.
// Rows are sources, columns destinations, both grouped by rack.

import { pct, ms, esc } from './format.js';

// A light-to-dark single-hue ramp (ColorBrewer "Blues"-like): readable by
// luminance alone, so safe for colour-vision deficiencies and greyscale.
const RAMP = [[247, 251, 255], [222, 235, 247], [198, 219, 239], [158, 202, 225], [107, 174, 214], [66, 146, 198], [33, 113, 181], [8, 81, 156], [8, 48, 107], [3, 19, 43]];
const NONE = rgba(215, 215, 215), DIAG = rgba(255, 255, 255);

function rgba(r, g, b) { return (255 << 24) | (b << 16) | (g << 8) | r; } // little-endian ImageData
const LUT = new Uint32Array(256);
for (let i = 0; i < 256; i++) {
  const t = (i / 255) * (RAMP.length - 1), k = Math.min(Math.floor(t), RAMP.length - 2), f = t - k;
  const c = RAMP[k].map((v, j) => Math.round(v + (RAMP[k + 1][j] - v) * f));
  LUT[i] = rgba(c[0], c[1], c[2]) >>> 0;
}

export const METRICS = {
  loss: { label: 'loss', fmt: pct, scale: 'loss' },
  p50: { label: 'RTT p50', fmt: ms, scale: 'range' },
  p99: { label: 'RTT p99', fmt: ms, scale: 'range' },
  jitter: { label: 'jitter', fmt: ms, scale: 'range' },
};

// pairMatrix aggregates routes into an n×n matrix of one metric: loss is
// lost/samples over every route of the pair; p50 and jitter are
// sample-weighted means over routes, p99 the worst route's.
export function pairMatrix(hosts, routes, metric) {
  const n = hosts.length, idx = new Map(hosts.map((h, i) => [h, i]));
  const v = new Float32Array(n * n).fill(NaN), w = new Float32Array(n * n);
  for (const r of routes) {
    const i = idx.get(r.src), j = idx.get(r.dst), m = r.metrics;
    if (i === undefined || j === undefined || !m || !m.samples) continue;
    const c = i * n + j, s = m.samples;
    const cur = isNaN(v[c]) ? 0 : v[c];
    switch (metric) {
      case 'loss': v[c] = cur + (m.lost ?? m.loss * s); break;
      case 'p50': v[c] = cur + m.rttP50Seconds * s; break;
      case 'jitter': v[c] = cur + m.jitterRfc3550Seconds * s; break;
      case 'p99': v[c] = Math.max(cur, m.rttP99Seconds); break;
    }
    w[c] += s;
  }
  if (metric !== 'p99') for (let c = 0; c < v.length; c++) if (w[c] > 0) v[c] /= w[c];
  return v;
}

export class Heatmap {
  constructor(canvas, tip, { onSelect, onCursor }) {
    this.canvas = canvas;
    this.tip = tip;
    this.onSelect = onSelect;
    this.onCursor = onCursor;
    this.ctx = canvas.getContext('2d');
    this.off = document.createElement('canvas');
    this.hosts = [];
    this.racks = [];
    this.values = new Float32Array(0);
    this.cursor = null;
    this.metric = 'loss';
    const dpr = window.devicePixelRatio || 1;
    this.size = canvas.clientWidth || canvas.width;
    canvas.width = canvas.height = Math.round(this.size * dpr);
    canvas.addEventListener('mousemove', (e) => this.hover(e));
    canvas.addEventListener('mouseleave', () => { this.tip.hidden = true; });
    canvas.addEventListener('click', (e) => {
      const c = this.cellAt(e);
      if (c) { this.cursor = c; this.redraw(); this.select(); }
    });
    canvas.addEventListener('keydown', (e) => this.key(e));
  }

  // setData sets hosts (in rack order), their racks and the matrix.
  setData(hosts, racks, values, metric) {
    this.hosts = hosts;
    this.racks = racks;
    this.values = values;
    this.metric = metric;
    this.draw();
  }

  // colourIndex maps a value to the ramp.
  scaler() {
    const v = this.values;
    if (METRICS[this.metric].scale === 'loss') {
      // 0 → lightest, 10% or more → darkest, log-spaced so 0.1% shows.
      const k = 255 / Math.log1p(100);
      return { f: (x) => Math.min(255, Math.round(Math.log1p(x * 1000) * k)), lo: 0, hi: 0.1 };
    }
    let lo = Infinity, hi = -Infinity;
    for (let c = 0; c < v.length; c++) { const x = v[c]; if (x === x) { if (x < lo) lo = x; if (x > hi) hi = x; } }
    if (!(hi > lo)) { hi = lo + 1e-6; }
    const k = 255 / (hi - lo);
    return { f: (x) => Math.max(0, Math.min(255, Math.round((x - lo) * k))), lo, hi };
  }

  // draw recolours every cell and repaints; sync waits for the pixels
  // (benchmarks), as a read-back forces the canvas to finish drawing.
  draw(sync = false) {
    const t0 = performance.now();
    const n = this.hosts.length, v = this.values;
    if (this.off.width !== n || this.off.height !== n) { this.off.width = this.off.height = Math.max(n, 1); this.img = null; }
    if (n === 0) { this.ctx.clearRect(0, 0, this.canvas.width, this.canvas.height); return 0; }
    if (!this.img) this.img = this.off.getContext('2d').createImageData(n, n);
    const px = new Uint32Array(this.img.data.buffer);
    const { f, lo, hi } = this.scaler();
    for (let i = 0; i < n; i++) {
      const row = i * n;
      for (let j = 0; j < n; j++) {
        const x = v[row + j];
        px[row + j] = i === j ? DIAG : x === x ? LUT[f(x)] : NONE;
      }
    }
    this.off.getContext('2d').putImageData(this.img, 0, 0);
    this.scale = { lo, hi };
    this.redraw();
    if (sync) this.ctx.getImageData(0, 0, 1, 1);
    const took = performance.now() - t0;
    performance.measure('dnms-heatmap-draw', { start: t0, duration: took });
    return took;
  }

  // redraw scales the cell image onto the canvas and adds rack separators
  // and the cursor.
  redraw() {
    const ctx = this.ctx, n = this.hosts.length, W = this.canvas.width, cell = W / Math.max(n, 1);
    ctx.imageSmoothingEnabled = false;
    ctx.clearRect(0, 0, W, W);
    ctx.drawImage(this.off, 0, 0, n, n, 0, 0, W, W);
    ctx.strokeStyle = 'rgba(0,0,0,.55)';
    ctx.lineWidth = 1;
    ctx.beginPath();
    for (let i = 1; i < n; i++) {
      if (this.racks[i] !== this.racks[i - 1]) {
        const p = Math.round(i * cell) + 0.5;
        ctx.moveTo(p, 0); ctx.lineTo(p, W); ctx.moveTo(0, p); ctx.lineTo(W, p);
      }
    }
    ctx.stroke();
    if (this.cursor && this.cursor.i < n && this.cursor.j < n) {
      ctx.strokeStyle = '#000';
      ctx.lineWidth = Math.max(2, cell / 8);
      ctx.strokeRect(this.cursor.j * cell, this.cursor.i * cell, Math.max(cell, 3), Math.max(cell, 3));
    }
  }

  cellAt(e) {
    const b = this.canvas.getBoundingClientRect(), n = this.hosts.length;
    if (!n) return null;
    const j = Math.floor(((e.clientX - b.left) / b.width) * n), i = Math.floor(((e.clientY - b.top) / b.height) * n);
    return i >= 0 && j >= 0 && i < n && j < n ? { i, j } : null;
  }

  describe(c) {
    const x = this.values[c.i * this.hosts.length + c.j];
    const val = c.i === c.j ? 'same host' : x === x ? METRICS[this.metric].fmt(x) : 'no route measured';
    return `${this.hosts[c.i]} → ${this.hosts[c.j]}: ${METRICS[this.metric].label} ${val}`;
  }

  hover(e) {
    const c = this.cellAt(e);
    if (!c) { this.tip.hidden = true; return; }
    const b = this.canvas.getBoundingClientRect();
    this.tip.textContent = this.describe(c);
    this.tip.style.left = Math.min(e.clientX - b.left + 12, b.width - 200) + 'px';
    this.tip.style.top = e.clientY - b.top + 12 + 'px';
    this.tip.hidden = false;
  }

  key(e) {
    const n = this.hosts.length;
    if (!n) return;
    const c = this.cursor || { i: 0, j: Math.min(1, n - 1) };
    const moves = { ArrowUp: [-1, 0], ArrowDown: [1, 0], ArrowLeft: [0, -1], ArrowRight: [0, 1] };
    if (moves[e.key]) {
      e.preventDefault();
      this.cursor = { i: clamp(c.i + moves[e.key][0], n), j: clamp(c.j + moves[e.key][1], n) };
      this.redraw();
      this.onCursor(this.describe(this.cursor));
    } else if (e.key === 'Enter' || e.key === ' ') {
      e.preventDefault();
      this.cursor = c;
      this.redraw();
      this.select();
    }
  }

  select() {
    const { i, j } = this.cursor;
    this.onCursor(this.describe(this.cursor));
    if (i !== j) this.onSelect(this.hosts[i], this.hosts[j]);
  }

  // cell reports a pair's value and the colour drawn for it (tests).
  cell(src, dst) {
    const i = this.hosts.indexOf(src), j = this.hosts.indexOf(dst), n = this.hosts.length;
    if (i < 0 || j < 0) return null;
    const d = this.off.getContext('2d').getImageData(j, i, 1, 1).data;
    const x = this.values[i * n + j];
    return { value: x === x ? x : null, rgb: [d[0], d[1], d[2]] };
  }

  // scaleHTML is the legend for the current metric.
  scaleHTML() {
    const fmt = METRICS[this.metric].fmt;
    return `<div><b>${esc(METRICS[this.metric].label)}</b></div>
<canvas width="200" height="14" id="scale-bar"></canvas>
<div class="ticks"><span>${fmt(this.scale ? this.scale.lo : 0)}</span><span>${fmt(this.scale ? this.scale.hi : 0)}${METRICS[this.metric].scale === 'loss' ? '+' : ''}</span></div>
<div><span class="swatch" style="background:#d7d7d7"></span> no route measured</div>`;
  }

  paintScale(c) {
    const ctx = c.getContext('2d');
    for (let x = 0; x < c.width; x++) {
      const p = LUT[Math.round((x / (c.width - 1)) * 255)];
      ctx.fillStyle = `rgb(${p & 255},${(p >> 8) & 255},${(p >> 16) & 255})`;
      ctx.fillRect(x, 0, 1, c.height);
    }
  }

  // naiveDraw is the benchmark's baseline: one fillRect per cell.
  naiveDraw() {
    const t0 = performance.now();
    const n = this.hosts.length, v = this.values, ctx = this.ctx, cell = this.canvas.width / n;
    const { f } = this.scaler();
    for (let i = 0; i < n; i++) {
      for (let j = 0; j < n; j++) {
        const x = v[i * n + j], p = i === j ? DIAG : x === x ? LUT[f(x)] : NONE;
        ctx.fillStyle = `rgb(${p & 255},${(p >> 8) & 255},${(p >> 16) & 255})`;
        ctx.fillRect(j * cell, i * cell, cell, cell);
      }
    }
    ctx.getImageData(0, 0, 1, 1);
    return performance.now() - t0;
  }
}

function clamp(x, n) { return Math.max(0, Math.min(n - 1, x)); }
