/**
 * faultstack's web view: one page over the HTTP API (docs/api.md), no framework, bundled
 * by esbuild at build time into dist/web/app.js. It polls /api/stats (with rows) and
 * /api/routes every second, keeps two minutes of counter counterHistory for rates and
 * sparklines, follows the event log over server-sent events, and draws a traced
 * connection's time-sequence and cwnd/RTT graphs in SVG. Everything that came from the
 * stack goes into the page as text (textContent), never as markup.
 */

export {};

type Obj = Record<string, any>;

const POLL_MS = 1000;
const HISTORY = 120;
const SVG = 'http://www.w3.org/2000/svg';

// ------------------------------------------------------------------ the API

const token = new URLSearchParams(location.search).get('token') ?? sessionStorage.getItem('faultstack-token');
if (token) sessionStorage.setItem('faultstack-token', token);

async function api(method: string, path: string, body?: unknown): Promise<any> {
  const headers: Record<string, string> = {};
  if (token) headers.authorization = `Bearer ${token}`;
  if (body !== undefined) headers['content-type'] = 'application/json';
  const r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), cache: 'no-store' });
  const text = await r.text();
  let j: any = null;
  try {
    j = JSON.parse(text);
  } catch {
    /* not JSON */
  }
  if (!r.ok) throw new Error(j?.error?.message ?? `${r.status} ${r.statusText}`);
  return j;
}

// ------------------------------------------------------------------ DOM helpers

const $ = <T extends HTMLElement = HTMLElement>(id: string) => document.getElementById(id) as T;

function el<K extends keyof HTMLElementTagNameMap>(tag: K, attrs: Record<string, string> = {}, ...kids: (Node | string)[]): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  for (const k of kids) e.append(k);
  return e;
}

function svgEl(tag: string, attrs: Record<string, string | number> = {}): SVGElement {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  return e;
}

function td(text: unknown, cls = ''): HTMLTableCellElement {
  return el('td', cls ? { class: cls } : {}, text === undefined || text === null ? '' : String(text));
}

function fmtMs(ms: number): string {
  if (!Number.isFinite(ms)) return '-';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)} s`;
  return `${Math.floor(ms / 60_000)} min ${Math.round((ms % 60_000) / 1000)} s`;
}

function bar(value: number, limit: number): HTMLElement {
  const b = el('div', { class: 'bar', title: `${value} of ${limit}` });
  const fill = el('div', value >= limit ? { class: 'full' } : {});
  fill.style.width = `${Math.min(100, limit > 0 ? (100 * value) / limit : 0)}%`;
  b.append(fill);
  return b;
}

/** An object as key: value lines, its arrays of objects as tables. */
function renderGeneric(v: unknown): HTMLElement {
  const box = el('div');
  if (Array.isArray(v)) {
    box.append(tableOf(v));
    return box;
  }
  if (typeof v !== 'object' || v === null) {
    box.append(String(v));
    return box;
  }
  const lines = el('p', { class: 'mono' });
  for (const [k, x] of Object.entries(v)) {
    if (Array.isArray(x) && x.every((r) => typeof r === 'object' && r !== null)) {
      box.append(el('h3', {}, `${k} (${x.length})`), x.length ? tableOf(x) : el('p', { class: 'muted' }, 'none'));
    } else if (typeof x === 'object' && x !== null) {
      lines.append(`${k}: ${JSON.stringify(x)}`, el('br'));
    } else lines.append(`${k}: ${String(x)}`, el('br'));
  }
  box.prepend(lines);
  return box;
}

function tableOf(rows: Obj[]): HTMLTableElement {
  const cols = [...new Set(rows.flatMap((r) => Object.keys(r)))].filter((c) => !Array.isArray(rows[0]?.[c]));
  const t = el('table');
  t.append(el('thead', {}, el('tr', {}, ...cols.map((c) => el('th', {}, c)))));
  const tb = el('tbody');
  for (const r of rows) tb.append(el('tr', {}, ...cols.map((c) => td(typeof r[c] === 'object' && r[c] !== null ? JSON.stringify(r[c]) : r[c]))));
  t.append(tb);
  return t;
}

// ------------------------------------------------------------------ tabs

function showTab(): void {
  const name = (location.hash || '#overview').slice(1);
  for (const s of document.querySelectorAll<HTMLElement>('section.tab')) s.hidden = s.id !== `tab-${name}`;
  for (const a of document.querySelectorAll<HTMLElement>('#tabs a')) a.classList.toggle('active', a.dataset.tab === name);
  if (name === 'trace') void refreshTrace();
}
window.addEventListener('hashchange', showTab);

// ------------------------------------------------------------------ live state

let stats: Obj | null = null;
let commands: string[] = [];
const counterHistory = new Map<string, number[]>();
const historyAt: number[] = [];

function setStatus(ok: boolean, text: string): void {
  const s = $('status');
  s.textContent = text;
  s.className = `status ${ok ? 'ok' : 'down'}`;
}

async function poll(): Promise<void> {
  try {
    const [s, routes] = await Promise.all([api('GET', '/api/stats?limit=500'), api('GET', '/api/routes').catch(() => null)]);
    stats = s;
    setStatus(true, 'live');
    $('last-update').textContent = `updated ${new Date().toLocaleTimeString()}`;
    $('last-update').dataset.at = String(Date.now());
    $('stack-id').textContent = `${s.addr} on ${s.tun}, up ${fmtMs(s.uptimeMs)}`;
    renderLock(s.lock);
    renderStates(s.states ?? {});
    renderListeners(s.listeners ?? []);
    renderConnections();
    recordCounters(s.counters ?? {});
    renderCounters();
    if (routes) renderRoutes(routes);
    await pollFeatures();
  } catch (e) {
    setStatus(false, `API unreachable: ${(e as Error).message}`);
  }
}

function renderLock(lock: Obj | undefined): void {
  if (!lock) return;
  const held = lock.held === true;
  const st = $('lock-state');
  st.textContent = held ? 'HELD' : 'free';
  st.className = held ? 'held' : 'free';
  $('lock-holder').textContent = lock.holder ?? '-';
  $('lock-since').textContent = lock.since ? new Date(lock.since).toLocaleTimeString() : '-';
  $('lock-held-for').textContent = held ? fmtMs(lock.heldForMs ?? NaN) : '-';
  $('lock-blocked').textContent = String(lock.blockedPackets ?? 0);
  ($('unlock') as HTMLButtonElement).disabled = !held;
  const banner = $('hung-banner');
  banner.hidden = !held;
  banner.textContent = held
    ? `The stack is hung: the connection-table lock is held by the ${lock.holder ?? '?'}. This page is served by the host-side control plane and keeps working; Unlock releases it.`
    : '';
}

function renderStates(states: Obj): void {
  const box = $('states');
  box.replaceChildren();
  const wrap = el('div', { class: 'states' });
  const entries = Object.entries(states);
  if (!entries.length) wrap.append(el('span', { class: 'muted' }, 'no connections'));
  for (const [k, n] of entries) wrap.append(el('span', { class: 'pill', 'data-state': k }, `${k} ${n}`));
  box.append(wrap);
}

function renderListeners(ls: Obj[]): void {
  const tb = $('listeners').querySelector('tbody')!;
  tb.replaceChildren();
  for (const l of ls) {
    const synLimit = l.synQueueLimit ?? 0;
    tb.append(
      el(
        'tr',
        { 'data-port': String(l.port) },
        td(l.port, 'num'),
        td(synLimit ? `${l.synQueue} / ${synLimit}` : String(l.synQueue), 'num'),
        el('td', {}, bar(l.synQueue, synLimit || Math.max(1, l.synQueue))),
        td(`${l.acceptQueue} / ${l.backlog}`, 'num'),
        el('td', {}, bar(l.acceptQueue, l.backlog)),
        td(l.refusedSyns, 'num'),
        td(l.droppedSyns, 'num'),
        td(l.droppedAcks, 'num'),
        td(l.resetAfterHandshake, 'num'),
      ),
    );
  }
}

function renderConnections(): void {
  if (!stats) return;
  const rows: Obj[] = stats.connections ?? [];
  const f = ($('conn-filter') as HTMLInputElement).value.trim().toLowerCase();
  const st = ($('conn-state') as HTMLSelectElement).value;
  const shown = rows.filter((r) => (!st || r.state === st) && (!f || `${r.state} ${r.local}-${r.peer}`.toLowerCase().includes(f)));
  const tb = $('conn-table').querySelector('tbody')!;
  tb.replaceChildren(
    ...shown.map((r) => {
      const tr = el(
        'tr',
        { class: 'conn-row', 'data-conn': `${r.local}-${r.peer}` },
        td(r.state),
        td(r.local, 'mono'),
        td(r.peer, 'mono'),
        td(r.recvQ, 'num'),
        td(r.sendQ, 'num'),
        td(r.cwnd ?? '', 'num'),
        td(r.rtt ?? '', 'num'),
        td(r.retrans ?? '', 'num'),
      );
      const b = el('button', { type: 'button', class: 'trace-btn' }, 'trace');
      b.addEventListener('click', () => {
        void startTrace(`${r.local}-${r.peer}`);
      });
      tr.append(el('td', {}, b));
      return tr;
    }),
  );
  const matched = stats.rows?.matched ?? rows.length;
  $('conn-count').textContent = `${shown.length} shown of ${matched}${matched > rows.length ? ` (the first ${rows.length} fetched)` : ''}`;
  // The trace tab's choice of connections.
  const sel = $('trace-conn') as HTMLSelectElement;
  const want = rows.filter((r) => r.state !== 'SYN-RECEIVED').map((r) => `${r.local}-${r.peer}`);
  const have = [...sel.options].map((o) => o.value);
  const keep = sel.value;
  if (want.join() !== have.filter((v) => !traced.has(v) || want.includes(v)).join() || have.length === 0) {
    const all = [...new Set([...want, ...traced])];
    sel.replaceChildren(...all.map((v) => el('option', { value: v }, `${v}${traced.has(v) ? ' (traced)' : ''}`)));
    if (all.includes(keep)) sel.value = keep;
  }
}

function recordCounters(c: Obj): void {
  historyAt.push(Date.now());
  if (historyAt.length > HISTORY) historyAt.shift();
  for (const [k, v] of Object.entries(c)) {
    if (typeof v !== 'number') continue;
    let h = counterHistory.get(k);
    if (!h) {
      h = [];
      counterHistory.set(k, h);
    }
    h.push(v);
    if (h.length > HISTORY) h.shift();
  }
}

function sparkline(values: number[]): SVGElement {
  const s = svgEl('svg', { class: 'spark', viewBox: '0 0 160 22', preserveAspectRatio: 'none' });
  // Rates between samples: what moved, not the ever-growing total.
  const rates = values.slice(1).map((v, i) => v - values[i]!);
  if (rates.length < 2) return s;
  const max = Math.max(1, ...rates);
  const pts = rates.map((r, i) => `${(i * 160) / (HISTORY - 2)},${21 - (20 * r) / max}`).join(' ');
  s.append(svgEl('polyline', { points: pts }));
  return s;
}

function renderCounters(): void {
  if (!stats || document.getElementById('tab-counters')!.hidden) return;
  const f = ($('counter-filter') as HTMLInputElement).value.trim().toLowerCase();
  const nonzero = ($('counter-nonzero') as HTMLInputElement).checked;
  const tb = $('counters').querySelector('tbody')!;
  const rows: HTMLElement[] = [];
  const n = historyAt.length;
  for (const [k, h] of counterHistory) {
    const v = h[h.length - 1]!;
    if (nonzero && v === 0) continue;
    if (f && !k.toLowerCase().includes(f)) continue;
    const dt = n >= 2 ? (historyAt[n - 1]! - historyAt[n - 2]!) / 1000 : 0;
    const rate = h.length >= 2 && dt > 0 ? (v - h[h.length - 2]!) / dt : 0;
    rows.push(el('tr', { 'data-counter': k }, td(k, 'mono'), td(v, 'num'), td(rate ? rate.toFixed(1) : '0', 'num'), el('td', {}, sparkline(h))));
  }
  tb.replaceChildren(...rows);
}

function renderRoutes(r: Obj): void {
  const counted = r.hostRouteCount ?? 0,
    real = r.hostRoutesReal ?? 0,
    max = r.maxIcmpHostRoutes ?? 0;
  $('routes-counted').textContent = String(counted);
  $('routes-real').textContent = String(real);
  $('routes-max').textContent = String(max);
  const b = $('routes-bar');
  b.style.width = `${Math.min(100, max ? (100 * counted) / max : 0)}%`;
  b.className = counted >= max && max > 0 ? 'full' : '';
  $('routes-real-bar').style.width = `${Math.min(100, max ? (100 * real) / max : 0)}%`;
  $('routes-note').textContent = r.atLimit
    ? 'at the limit: ICMP fragmentation-needed messages are ignored now'
    : r.countRule
      ? `count rule: ${r.countRule}`
      : '';
}

async function pollFeatures(): Promise<void> {
  const tasks: Promise<void>[] = [];
  if (commands.includes('nlb.display')) tasks.push(api('GET', '/api/nlb').then(renderNlb, () => {}));
  if (commands.includes('ipsec'))
    tasks.push(
      api('GET', '/api/ipsec').then(
        (v) => {
          $('ipsec-card').hidden = false;
          $('ipsec').replaceChildren(renderGeneric(v));
        },
        () => {},
      ),
    );
  if (commands.includes('fw'))
    tasks.push(
      api('GET', '/api/fw?what=bindings').then(
        (v) => {
          $('fw-card').hidden = false;
          $('fw').replaceChildren(renderGeneric(v));
        },
        () => {},
      ),
    );
  await Promise.all(tasks);
}

function renderNlb(v: Obj): void {
  $('nlb-card').hidden = false;
  const box = $('nlb');
  box.replaceChildren();
  const { rules, ...rest } = v;
  for (const rule of (rules ?? []) as Obj[]) {
    box.append(el('h3', {}, `rule ${rule.rule}: ${rule.spec ?? ''} (this host owns ${rule.ownedCount ?? 0})`));
    if (Array.isArray(rule.map)) {
      const grid = el('div', { class: 'buckets' });
      const t = el('table', { class: 'bucket-map' });
      const tr = el('tr');
      (rule.map as number[]).forEach((owner, b) => {
        const c = td(owner, 'num');
        c.title = `bucket ${b}: host ${owner}`;
        c.style.background = `hsl(${(owner * 67) % 360} 70% 85%)`;
        tr.append(c);
      });
      t.append(tr);
      grid.append(t);
      box.append(grid);
    }
  }
  box.append(renderGeneric(rest));
}

// ------------------------------------------------------------------ lock, connect

$('unlock').addEventListener('click', async () => {
  try {
    const r = await api('POST', '/api/unlock');
    $('unlock-result').textContent = r.released ? `released after ${fmtMs(r.heldMs)}` : 'was not held';
  } catch (e) {
    $('unlock-result').textContent = (e as Error).message;
  }
  void poll();
});

$('connect-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const host = ($('connect-host') as HTMLInputElement).value.trim();
  const port = Number(($('connect-port') as HTMLInputElement).value);
  const out = $('connect-result');
  out.textContent = `connecting to ${host}:${port}...`;
  try {
    const r = await api('POST', '/api/connect', { host, port });
    out.textContent = `connected in ${r.ms} ms`;
  } catch (e) {
    out.textContent = (e as Error).message;
  }
});

// ------------------------------------------------------------------ events (SSE)

function startEvents(): void {
  const es = new EventSource(`/api/events/stream?limit=200${token ? `&token=${encodeURIComponent(token)}` : ''}`);
  const log = $('events-log');
  es.onopen = () => {
    $('events-state').textContent = 'following';
  };
  es.onerror = () => {
    $('events-state').textContent = 'reconnecting...';
  };
  es.onmessage = (m) => {
    let e: Obj;
    try {
      e = JSON.parse(m.data);
    } catch {
      return;
    }
    const li = el('li', { 'data-kind': String(e.kind ?? '') });
    const when = e.ts ? new Date(e.ts).toLocaleTimeString() : (e.time ?? '');
    li.append(`${when} `);
    if (e.fault) li.append(el('span', { class: 'fault' }, `${e.fault} `));
    li.append(el('b', {}, `${e.kind ?? ''} `), String(e.message ?? ''));
    log.prepend(li);
    while (log.children.length > 500) log.lastElementChild!.remove();
    if (e.kind === 'fault-mode-changed' || e.kind === 'param-changed') void loadFaults();
  };
}

// ------------------------------------------------------------------ faults

async function loadFaults(): Promise<void> {
  let f: Obj;
  try {
    f = await api('GET', '/api/faults');
  } catch {
    return;
  }
  $('profile').textContent = f.profile;
  const params = new Map<string, Obj>((f.params as Obj[]).map((p) => [p.name, p]));
  const box = $('faults');
  box.replaceChildren(
    ...(f.faults as Obj[]).map((fault) => {
      const card = el('div', { class: 'card fault-card', id: `fault-${fault.id}` });
      const sw = el('span', { class: 'switch' });
      for (const mode of fault.modes as string[]) {
        const b = el('button', { type: 'button', 'data-fault': fault.id, 'data-mode': mode, class: mode === fault.mode ? 'on' : '' }, mode);
        b.addEventListener('click', async () => {
          try {
            await api('PUT', `/api/faults/${fault.id}`, { mode });
          } catch (e) {
            alertIn(card, (e as Error).message);
          }
          await loadFaults();
        });
        sw.append(b);
      }
      card.append(el('h2', {}, `${fault.article} `, el('small', {}, `${fault.id} · ${fault.alias}`)), el('p', {}, fault.title), sw);
      card.append(paramInputs((fault.params as string[]).map((n) => params.get(n)!).filter(Boolean)));
      return card;
    }),
  );
  $('general-params').replaceChildren(paramInputs((f.params as Obj[]).filter((p) => p.general)));
}

function alertIn(card: HTMLElement, message: string): void {
  card.querySelector('.err')?.remove();
  card.append(el('p', { class: 'err' }, message));
}

function paramInputs(ps: Obj[]): HTMLElement {
  const box = el('div', { class: 'params' });
  for (const p of ps) {
    const input = el('input', { value: String(p.value), 'data-param': p.name, title: `${p.range}; default ${p.default}` });
    input.addEventListener('change', async () => {
      const raw = input.value.trim();
      const value = p.type === 'int' && /^-?\d+$/.test(raw) ? Number(raw) : raw;
      try {
        await api('PUT', `/api/params/${p.name}`, { value });
        input.classList.remove('err');
        input.title = `${p.range}; default ${p.default}`;
      } catch (e) {
        input.classList.add('err');
        input.title = (e as Error).message;
      }
    });
    box.append(el('label', {}, el('span', { class: 'mono' }, p.name), input));
  }
  return box;
}

// ------------------------------------------------------------------ traces

const traced = new Set<string>();
let traceTimer: number | undefined;

async function startTrace(conn: string): Promise<void> {
  try {
    const r = await api('POST', '/api/traces', { conn });
    traced.add(r.conn);
    ($('trace-conn') as HTMLSelectElement).value = r.conn;
    location.hash = '#trace';
    renderConnections();
    ($('trace-conn') as HTMLSelectElement).value = r.conn;
    await refreshTrace();
  } catch (e) {
    $('trace-status').textContent = (e as Error).message;
  }
}

$('trace-start').addEventListener('click', () => {
  const v = ($('trace-conn') as HTMLSelectElement).value;
  if (v) void startTrace(v);
});
$('trace-conn').addEventListener('change', () => {
  void refreshTrace();
});

async function refreshTrace(): Promise<void> {
  window.clearTimeout(traceTimer);
  const conn = ($('trace-conn') as HTMLSelectElement).value;
  if ($('tab-trace').hidden) return;
  if (conn && traced.has(conn)) {
    try {
      const t = await api('GET', `/api/traces/${encodeURIComponent(conn)}`);
      $('trace-status').textContent =
        `${t.state}${t.active ? ', tracing' : ', stopped'}: ${t.samples.length} samples, ${t.segments.length} segments, ${t.retransmissions} retransmitted`;
      drawSeq(t);
      drawCwnd(t);
    } catch (e) {
      $('trace-status').textContent = (e as Error).message;
    }
  } else $('trace-status').textContent = conn ? 'not traced yet: press the button' : 'no connection to trace';
  traceTimer = window.setTimeout(() => {
    void refreshTrace();
  }, POLL_MS);
}

interface Scale {
  x(v: number): number;
  y(v: number): number;
}

function axes(svg: SVGElement, w: number, h: number, xmax: number, ymax: number, ylabel: string): Scale {
  const L = 60,
    B = 24,
    T = 8,
    R = 10;
  const sx = (v: number) => L + ((w - L - R) * v) / Math.max(1e-9, xmax);
  const sy = (v: number) => h - B - ((h - B - T) * v) / Math.max(1e-9, ymax);
  svg.append(svgEl('line', { class: 'axis', x1: L, y1: h - B, x2: w - R, y2: h - B }), svgEl('line', { class: 'axis', x1: L, y1: T, x2: L, y2: h - B }));
  const label = (x: number, y: number, text: string, anchor = 'middle') => {
    const t = svgEl('text', { x, y, 'text-anchor': anchor });
    t.textContent = text;
    svg.append(t);
  };
  for (let i = 0; i <= 4; i++) {
    label(sx((xmax * i) / 4), h - 6, `${((xmax * i) / 4 / 1000).toFixed(2)} s`);
    label(L - 4, sy((ymax * i) / 4) + 4, fmtBig((ymax * i) / 4), 'end');
  }
  label(L + 4, T + 10, ylabel, 'start');
  return { x: sx, y: sy };
}

function fmtBig(v: number): string {
  if (v >= 1e6) return `${(v / 1e6).toFixed(1)}M`;
  if (v >= 1e3) return `${(v / 1e3).toFixed(0)}k`;
  return v.toFixed(0);
}

function drawSeq(t: Obj): void {
  const svg = $('trace-seq') as unknown as SVGElement;
  svg.replaceChildren();
  const segs = t.segments as Obj[],
    samples = t.samples as Obj[];
  const tmax = Math.max(1, ...segs.map((s) => s.t), ...samples.map((s) => s.t));
  const smax = Math.max(1, ...segs.map((s) => s.seq + s.len), ...samples.map((s) => s.nxt));
  const sc = axes(svg, 900, 320, tmax, smax, 'relative sequence number');
  // SND.UNA first (a step: it holds until an ACK moves it), the segments over it.
  svg.append(svgEl('path', { class: 'una', d: steps(samples, 'una', sc.x, sc.y) }));
  for (const s of segs) {
    svg.append(svgEl('line', { class: s.retrans ? 'retrans' : 'seg', x1: sc.x(s.t), x2: sc.x(s.t), y1: sc.y(s.seq), y2: sc.y(s.seq + s.len) }));
    // A retransmission is one segment among thousands: a mark makes it findable.
    if (s.retrans) svg.append(svgEl('circle', { class: 'retrans-mark', cx: sc.x(s.t), cy: sc.y(s.seq), r: 3 }));
  }
}

/** A step path through the samples' `key` (a value holds until the next sample changes it). */
function steps(samples: Obj[], key: string, x: (v: number) => number, y: (v: number) => number): string {
  let d = '';
  for (const s of samples) {
    const v = s[key];
    if (!Number.isFinite(v)) continue;
    d += d ? `H${x(s.t).toFixed(1)}V${y(v).toFixed(1)}` : `M${x(s.t).toFixed(1)},${y(v).toFixed(1)}`;
  }
  return d;
}

function drawCwnd(t: Obj): void {
  const svg = $('trace-cwnd') as unknown as SVGElement;
  svg.replaceChildren();
  const samples = t.samples as Obj[];
  if (!samples.length) return;
  const tmax = Math.max(1, ...samples.map((s) => s.t));
  const cmax = Math.max(1, ...samples.map((s) => Math.max(s.cwnd, s.inflight)));
  const sc = axes(svg, 900, 260, tmax, cmax * 1.1, 'bytes: cwnd (blue), ssthresh (dashed), flight (purple); srtt (red, right scale)');
  const path = (key: string, cls: string, scaleY: (v: number) => number) => {
    const d = steps(samples, key, sc.x, scaleY);
    if (d) svg.append(svgEl('path', { class: cls, d }));
  };
  path('cwnd', 'cwnd', sc.y);
  path('inflight', 'inflight', sc.y);
  // ssthresh starts "infinite": drawn once it means something.
  const ss = samples.filter((s) => s.ssthresh < cmax * 1.1);
  if (ss.length) svg.append(svgEl('path', { class: 'ssthresh', d: steps(ss, 'ssthresh', sc.x, sc.y) }));
  const rmax = Math.max(1, ...samples.map((s) => s.srtt));
  const ry = (v: number) => 260 - 24 - ((260 - 24 - 8) * v) / (rmax * 1.1);
  path('srtt', 'srtt', ry);
  const lab = svgEl('text', { x: 890, y: 20, 'text-anchor': 'end' });
  lab.textContent = `srtt max ${rmax.toFixed(1)} ms`;
  svg.append(lab);
}

// ------------------------------------------------------------------ start

for (const id of ['conn-filter', 'conn-state']) $(id).addEventListener('input', renderConnections);
for (const id of ['counter-filter', 'counter-nonzero']) $(id).addEventListener('input', renderCounters);

async function main(): Promise<void> {
  showTab();
  try {
    const index = await api('GET', '/api');
    commands = index.commands ?? [];
  } catch (e) {
    setStatus(false, (e as Error).message);
  }
  try {
    for (const t of (await api('GET', '/api/traces')).traces as Obj[]) traced.add(t.conn);
  } catch {
    /* none */
  }
  await loadFaults();
  startEvents();
  await poll();
  // A fixed pace, whatever the stack does: a poll that fails (or a hung stack) never stops the next one.
  window.setInterval(() => {
    void poll();
  }, POLL_MS);
}

void main();
