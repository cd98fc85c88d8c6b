// sse.js — a server-sent events reader on fetch, because EventSource cannot
// send an Authorization header. It follows the WHATWG event-stream format,
// resumes with Last-Event-ID (an opaque string: whatever the last id: line
// said), honours retry:, and reconnects when the stream ends, errs or goes
// silent for longer than three heartbeats.

import { authHeaders, refused } from './api.js';

const SILENCE_MS = 50_000; // server heartbeats every 15 s

export class EventStream {
  // onEvent(type, data, id) gets every dispatched event with parsed JSON data
  // (or the raw string if it is not JSON); onState(state, detail) gets
  // 'connecting', 'live' or 'down'.
  constructor(url, { onEvent, onState }) {
    this.url = url;
    this.onEvent = onEvent;
    this.onState = onState;
    this.lastId = '';
    this.retry = 2000;
    this.stopped = false;
    this.lastByte = 0;
  }

  start() {
    this.watchdog = setInterval(() => {
      if (this.ctl && this.lastByte && Date.now() - this.lastByte > SILENCE_MS) this.ctl.abort();
    }, 5000);
    this.loop();
  }

  stop() {
    this.stopped = true;
    clearInterval(this.watchdog);
    if (this.ctl) this.ctl.abort();
  }

  async loop() {
    let failures = 0;
    while (!this.stopped) {
      this.onState('connecting', failures ? `reconnecting (attempt ${failures + 1})` : '');
      try {
        const h = authHeaders({ Accept: 'text/event-stream' });
        if (this.lastId) h['Last-Event-ID'] = this.lastId;
        this.ctl = new AbortController();
        const r = await fetch(this.url, { headers: h, cache: 'no-store', signal: this.ctl.signal });
        if (r.status === 401) {
          this.onState('down', 'token refused');
          await refused();
          continue;
        }
        if (!r.ok) throw new Error(`HTTP ${r.status}`);
        failures = 0;
        this.lastByte = Date.now();
        this.onState('live', '');
        await this.read(r.body);
        this.onState('down', 'stream ended');
      } catch (e) {
        if (this.stopped) return;
        this.onState('down', e.name === 'AbortError' ? 'stream silent, reconnecting' : String(e.message || e));
      }
      failures++;
      await new Promise((res) => setTimeout(res, Math.min(this.retry * Math.min(failures, 5), 15000)));
    }
  }

  async read(body) {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = '';
    let ev = { type: '', data: [], id: null };
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      this.lastByte = Date.now();
      buf += value;
      let nl;
      while ((nl = buf.indexOf('\n')) >= 0) {
        let line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        if (line.endsWith('\r')) line = line.slice(0, -1);
        if (line === '') {
          this.dispatch(ev);
          ev = { type: '', data: [], id: null };
          continue;
        }
        if (line.startsWith(':')) continue; // comment (heartbeat)
        const c = line.indexOf(':');
        const field = c < 0 ? line : line.slice(0, c);
        let val = c < 0 ? '' : line.slice(c + 1);
        if (val.startsWith(' ')) val = val.slice(1);
        switch (field) {
          case 'event': ev.type = val; break;
          case 'data': ev.data.push(val); break;
          case 'id': if (!val.includes('\0')) ev.id = val; break;
          case 'retry': if (/^\d+$/.test(val)) this.retry = Number(val); break;
        }
      }
    }
  }

  dispatch(ev) {
    if (ev.id !== null) this.lastId = ev.id;
    if (ev.data.length === 0) return;
    const raw = ev.data.join('\n');
    let data = raw;
    try { data = JSON.parse(raw); } catch { /* keep the string */ }
    this.onEvent(ev.type || 'message', data, this.lastId);
  }
}
