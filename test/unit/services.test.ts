/**
 * echo / discard / chargen / http over kernelNet on 127.0.0.1 (ephemeral
 * ports), driven by real clients: Node's net/dgram/http clients and curl.
 */
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest';
import * as net from 'node:net';
import * as dgram from 'node:dgram';
import * as http from 'node:http';
import * as crypto from 'node:crypto';
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { kernelNet } from '../../stack/api/kernel-net';
import { startEcho } from '../../stack/services/echo';
import { startDiscard } from '../../stack/services/discard';
import { startChargen, chargenLine, CHARGEN_PERIOD_BYTES } from '../../stack/services/chargen';
import { startHttp, setStatusProvider, bytesPatternAt, MAX_BYTES } from '../../stack/services/http';
import { startServices, SERVICE_NAMES, isServiceName } from '../../stack/services/index';

const HOST = '127.0.0.1';

function connect(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ port, host: HOST });
    s.once('connect', () => resolve(s));
    s.once('error', reject);
  });
}

/** Reads until the peer ends (or `limit` bytes, then destroys). */
function readAll(s: net.Socket, limit = Infinity): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    let n = 0;
    s.on('data', (c: Buffer) => {
      parts.push(c);
      n += c.length;
      if (n >= limit) {
        s.destroy();
        resolve(Buffer.concat(parts));
      }
    });
    s.once('end', () => resolve(Buffer.concat(parts)));
    s.once('error', reject);
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function waitFor(cond: () => boolean, ms = 3000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await sleep(10);
  }
}

/** true when no kind of handle is more numerous than in `base`. */
function noMoreThan(base: Record<string, number>): boolean {
  const now = handleCounts();
  return Object.entries(now).every(([k, v]) => v <= (base[k] ?? 0));
}

/** Open kernel handles by kind (servers, sockets, UDP), for leak checks. */
function handleCounts(): Record<string, number> {
  const out: Record<string, number> = {};
  for (const r of process.getActiveResourcesInfo()) {
    if (r === 'TCPServerWrap' || r === 'TCPSocketWrap' || r === 'UDPWrap') out[r] = (out[r] ?? 0) + 1;
  }
  return out;
}

describe('echo', () => {
  const echo = startEcho(kernelNet, { port: 0, host: HOST });
  beforeAll(() => echo.ready);
  afterAll(() => echo.close());

  test('TCP echoes 4 MB unchanged and half-closes after the client does', async () => {
    const s = await connect(echo.port());
    const data = crypto.randomBytes(4 * 1024 * 1024);
    const got = readAll(s);
    s.end(data);
    const back = await got;
    expect(back.length).toBe(data.length);
    expect(back.equals(data)).toBe(true);
    expect(echo.stats().tcpBytes).toBeGreaterThanOrEqual(data.length);
  });

  test('TCP echo applies backpressure to a client that does not read', async () => {
    const s = await connect(echo.port());
    s.pause();
    const chunk = Buffer.alloc(256 * 1024, 0x41);
    // Write until our own side reports backpressure: the server stopped reading.
    let written = 0;
    for (let i = 0; i < 2000 && s.write(chunk); i++) written += chunk.length;
    // Backpressure came before 500 MB were queued: the socket said stop.
    expect(written).toBeLessThan(2000 * chunk.length);
    await sleep(300);
    const before = echo.stats().tcpBytes;
    await sleep(300);
    expect(echo.stats().tcpBytes).toBe(before); // server paused, not buffering without bound
    s.destroy();
  });

  test('UDP echoes datagrams back to the sender', async () => {
    const c = dgram.createSocket('udp4');
    try {
      const msg = Buffer.from('faultstack udp echo ' + crypto.randomBytes(8).toString('hex'));
      const reply = new Promise<Buffer>((resolve) => c.once('message', (m: Buffer) => resolve(m)));
      c.send(msg, echo.udpPort(), HOST);
      expect((await reply).equals(msg)).toBe(true);
      expect(echo.udpPort()).toBe(echo.port());
      expect(echo.stats().udpDatagrams).toBeGreaterThanOrEqual(1);
    } finally {
      c.close();
    }
  });
});

describe('discard', () => {
  const discard = startDiscard(kernelNet, { port: 0, host: HOST });
  beforeAll(() => discard.ready);
  afterAll(() => discard.close());

  test('swallows 8 MB, sends nothing, ends when the client ends', async () => {
    const s = await connect(discard.port());
    const got = readAll(s);
    const data = Buffer.alloc(8 * 1024 * 1024, 7);
    s.end(data);
    const back = await got; // resolves on the server's FIN
    expect(back.length).toBe(0);
    await waitFor(() => discard.stats().bytes === data.length);
    expect(discard.stats().bytes).toBe(data.length);
  });
});

describe('chargen', () => {
  const chargen = startChargen(kernelNet, { port: 0, host: HOST });
  beforeAll(() => chargen.ready);
  afterAll(() => chargen.close());

  test('sends the RFC 864 pattern: 72-char lines, CR LF, rotating by one', async () => {
    const s = await connect(chargen.port());
    const n = 3 * CHARGEN_PERIOD_BYTES + 500;
    const buf = await readAll(s, n);
    const text = buf.subarray(0, 3 * CHARGEN_PERIOD_BYTES).toString('latin1');
    const lines = text.split('\r\n');
    expect(lines.pop()).toBe(''); // ends with CR LF
    expect(lines.length).toBe(3 * 95);
    // The RFC's sample's first two lines.
    expect(lines[0]).toBe('!"#$%&\'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefgh');
    expect(lines[1]).toBe('"#$%&\'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefghi');
    lines.forEach((l, i) => {
      expect(l.length).toBe(72);
      expect(l).toBe(chargenLine(i));
      // each line starts one printable character after the previous one (ring of 95)
      if (i > 0) expect((l.charCodeAt(0) - 32 + 95 - (lines[i - 1]!.charCodeAt(0) - 32)) % 95).toBe(1);
    });
    expect(new Set(lines.slice(0, 95)).size).toBe(95);
    expect(lines[95]).toBe(lines[0]);
  });

  test('stops producing while the client does not read (backpressure), stops on close', async () => {
    const s = await connect(chargen.port());
    s.pause();
    await sleep(400);
    const a = chargen.stats().bytes;
    await sleep(400);
    const b = chargen.stats().bytes;
    expect(b - a).toBe(0);
    expect(a).toBeLessThan(64 * 1024 * 1024);
    s.destroy();
    await waitFor(() => chargen.connections() === 0);
    const c = chargen.stats().bytes;
    await sleep(100);
    expect(chargen.stats().bytes).toBe(c);
  });
});

interface HttpReply {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

function request(port: number, path: string, opts: { method?: string; headers?: Record<string, string> } = {}) {
  return new Promise<HttpReply>((resolve, reject) => {
    const req = http.request({ host: HOST, port, path, method: opts.method ?? 'GET', headers: opts.headers, agent: false }, (res) => {
      const parts: Buffer[] = [];
      res.on('data', (c: Buffer) => parts.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(parts) }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

function curl(args: string[]): Promise<{ code: number; stdout: Buffer; stderr: string }> {
  return new Promise((resolve, reject) => {
    execFile('curl', args, { encoding: 'buffer', maxBuffer: 64 * 1024 * 1024 }, (err, stdout, stderr) => {
      if (err && (err as NodeJS.ErrnoException).code === 'ENOENT') {
        reject(new Error('curl is not installed (make deps / scripts/deps.sh installs it)'));
        return;
      }
      const code = err ? Number((err as { code?: number }).code ?? 1) : 0;
      resolve({ code, stdout, stderr: stderr.toString() });
    });
  });
}

function expectedPattern(n: number): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = bytesPatternAt(i);
  return b;
}

describe('http', () => {
  const h = startHttp(kernelNet, { port: 0, host: HOST });
  beforeAll(() => h.ready);
  afterAll(async () => {
    setStatusProvider(null);
    await h.close();
  });
  afterEach(() => setStatusProvider(null));

  test('/healthz', async () => {
    const r = await request(h.port(), '/healthz');
    expect(r.status).toBe(200);
    expect(r.body.toString()).toBe('ok\n');
  });

  test('status page: HTML by default, JSON with ?json or Accept, stack counters from the provider', async () => {
    setStatusProvider(() => ({ counters: { ipInReceives: 42 }, tun: 'fs0' }));
    const html = await request(h.port(), '/');
    expect(html.status).toBe(200);
    expect(html.headers['content-type']).toMatch(/text\/html/);
    expect(html.body.toString()).toContain('<h1>faultstack</h1>');
    expect(html.body.toString()).toContain('ipInReceives');

    const j1 = await request(h.port(), '/?json');
    expect(j1.headers['content-type']).toMatch(/application\/json/);
    const doc = JSON.parse(j1.body.toString());
    expect(doc.stack).toEqual({ counters: { ipInReceives: 42 }, tun: 'fs0' });
    expect(doc.requests).toBeGreaterThanOrEqual(2);

    const j2 = await request(h.port(), '/', { headers: { Accept: 'application/json' } });
    expect(JSON.parse(j2.body.toString()).stack.tun).toBe('fs0');

    // A per-service provider wins over the global one; a throwing one is reported, not fatal.
    h.setStatusProvider(() => {
      throw new Error('boom');
    });
    const j3 = JSON.parse((await request(h.port(), '/?json')).body.toString());
    expect(j3.stack.error).toMatch(/boom/);
    h.setStatusProvider(null);
  });

  test('/bytes/N returns exactly N bytes of the pattern with Content-Length (curl)', async () => {
    const n = 3_000_001;
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fs-http-'));
    try {
      const body = path.join(dir, 'body');
      const hdrs = path.join(dir, 'headers');
      const r = await curl(['-sS', '--fail', '-D', hdrs, '-o', body, `http://${HOST}:${h.port()}/bytes/${n}`]);
      expect(r.stderr).toBe('');
      expect(r.code).toBe(0);
      expect(fs.readFileSync(hdrs, 'latin1')).toMatch(new RegExp(`content-length: ${n}\\r?\\n`, 'i'));
      const got = fs.readFileSync(body);
      expect(got.length).toBe(n);
      expect(got.equals(expectedPattern(n))).toBe(true);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test('/bytes/0 and HEAD /bytes/1GiB', async () => {
    const z = await request(h.port(), '/bytes/0');
    expect(z.status).toBe(200);
    expect(z.headers['content-length']).toBe('0');
    expect(z.body.length).toBe(0);
    const head = await request(h.port(), `/bytes/${MAX_BYTES}`, { method: 'HEAD' });
    expect(head.status).toBe(200);
    expect(head.headers['content-length']).toBe(String(1024 * 1024 * 1024));
    expect(head.body.length).toBe(0);
  });

  test('bad N is a 400 with a clear message', async () => {
    for (const bad of ['abc', '-5', '1.5', '', String(MAX_BYTES + 1), '99999999999999999999']) {
      const r = await request(h.port(), `/bytes/${bad}`);
      expect(r.status, bad).toBe(400);
      expect(r.body.toString()).toMatch(/bad byte count .*expected a decimal integer from 0 to 1073741824/);
    }
    const c = await curl(['-s', '-o', '/dev/null', '-w', '%{http_code}', `http://${HOST}:${h.port()}/bytes/lots`]);
    expect(c.stdout.toString()).toBe('400');
  });

  test('unknown path 404, POST 405', async () => {
    expect((await request(h.port(), '/nope')).status).toBe(404);
    const p = await request(h.port(), '/', { method: 'POST' });
    expect(p.status).toBe(405);
    expect(p.headers.allow).toBe('GET, HEAD');
  });

  test('keep-alive: several requests on one connection', async () => {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    try {
      const ports = new Set<number>();
      for (let i = 0; i < 3; i++) {
        await new Promise<void>((resolve, reject) => {
          http
            .get({ host: HOST, port: h.port(), path: '/bytes/1000', agent }, (res) => {
              ports.add(res.socket.localPort ?? 0);
              res.resume();
              res.on('end', () => resolve());
            })
            .on('error', reject);
        });
      }
      expect(ports.size).toBe(1);
    } finally {
      agent.destroy();
    }
  });

  test('1 GiB download is streamed with backpressure and stops when the client goes away', async () => {
    const before = h.stats().bodyBytesSent;
    const req = http.get({ host: HOST, port: h.port(), path: `/bytes/${MAX_BYTES}`, agent: false });
    const res = await new Promise<http.IncomingMessage>((resolve) => req.once('response', resolve));
    expect(res.headers['content-length']).toBe(String(MAX_BYTES));
    // Read 8 MB, check it, then stop reading.
    const first = await new Promise<Buffer>((resolve) => {
      const parts: Buffer[] = [];
      let n = 0;
      const onData = (c: Buffer) => {
        parts.push(c);
        n += c.length;
        if (n >= 8 * 1024 * 1024) {
          res.pause();
          res.removeListener('data', onData);
          resolve(Buffer.concat(parts));
        }
      };
      res.on('data', onData);
    });
    expect(first.equals(expectedPattern(first.length))).toBe(true);
    await sleep(400);
    const a = h.stats().bodyBytesSent - before;
    await sleep(400);
    const b = h.stats().bodyBytesSent - before;
    expect(b).toBe(a); // producer blocked on 'drain'
    expect(a).toBeLessThan(128 * 1024 * 1024); // nowhere near 1 GiB buffered
    req.destroy();
    await waitFor(() => h.connections() === 0);
    const c = h.stats().bodyBytesSent;
    await sleep(100);
    expect(h.stats().bodyBytesSent).toBe(c);
  });
});

describe('startServices', () => {
  test('validates names', async () => {
    expect(SERVICE_NAMES).toEqual(['echo', 'discard', 'chargen', 'http', 'iperf3']);
    expect(isServiceName('http')).toBe(true);
    expect(isServiceName('telnet')).toBe(false);
    await expect(startServices(kernelNet, ['echo', 'telnet'])).rejects.toThrow(/unknown service.*telnet/);
  });

  test('starts all five on ephemeral ports, they answer, close() releases every handle', async () => {
    const baseline = handleCounts();
    const handles = await startServices(kernelNet, [...SERVICE_NAMES], {
      host: HOST,
      ports: { echo: 0, discard: 0, chargen: 0, http: 0, iperf3: 0 },
      statusProvider: () => ({ from: 'startServices' }),
    });
    try {
      expect(handles.map((x) => x.name)).toEqual([...SERVICE_NAMES]);
      for (const x of handles) expect(x.port()).toBeGreaterThan(0);
      const byName = Object.fromEntries(handles.map((x) => [x.name, x]));
      const s = await connect(byName.echo!.port());
      const got = readAll(s);
      s.end('ping');
      expect((await got).toString()).toBe('ping');
      const st = JSON.parse((await request(byName.http!.port(), '/?json')).body.toString());
      expect(st.stack).toEqual({ from: 'startServices' });
      // iperf3 answers a cookie with PARAM_EXCHANGE (9)
      const c = await connect(byName.iperf3!.port());
      const first = new Promise<Buffer>((resolve) => c.once('data', resolve));
      c.write(Buffer.concat([Buffer.from('a'.repeat(36)), Buffer.from([0])]));
      expect((await first)[0]).toBe(9);
      c.destroy();
    } finally {
      await Promise.all(handles.map((x) => x.close()));
    }
    await waitFor(() => noMoreThan(baseline));
  });

  test('a port in use fails the start and closes the services already started', async () => {
    const blocker = net.createServer();
    await new Promise<void>((r) => blocker.listen(0, HOST, r));
    const taken = (blocker.address() as net.AddressInfo).port;
    const baseline = handleCounts();
    try {
      await expect(startServices(kernelNet, ['echo', 'http'], { host: HOST, ports: { echo: 0, http: taken } })).rejects.toThrow(/http: .*EADDRINUSE/);
      await waitFor(() => noMoreThan(baseline));
    } finally {
      blocker.close();
    }
  });
});
