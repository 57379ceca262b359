import { ChildProcess, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { resolveControlPath } from '../../bin/cli/control-target';
import { renderStats } from '../../bin/cli/commands/stats';
import { main } from '../../bin/cli/main';
import { ControlClient, ControlError } from '../../stack/control/client';
import { encodeLine, LineSplitter, MAX_LINE, MAX_REQUEST_LINE, statsQuery } from '../../stack/control/protocol';
import { ControlContext, ControlServer } from '../../stack/control/server';
import { CodedError, UsageError } from '../../stack/util/errors';

let tmp = '';
const servers: ControlServer[] = [];
const children: ChildProcess[] = [];

beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fs-ctl-'));
});

afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => s.close()));
  for (const c of children.splice(0)) c.kill('SIGKILL');
});

afterAll(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

let n = 0;
function sockPath(): string {
  return path.join(tmp, `s${n++}.sock`);
}

async function serve(handlers: Parameters<typeof ControlServer.start>[1], p = sockPath()): Promise<ControlServer> {
  const s = await ControlServer.start(p, handlers);
  servers.push(s);
  return s;
}

/** Raw conversation: send lines, collect reply lines until `count` arrived. */
function raw(p: string, payload: string, count: number, opts: { end?: boolean } = {}): Promise<{ lines: unknown[]; ended: Promise<void> }> {
  return new Promise((resolve, reject) => {
    const s = net.createConnection(p);
    const split = new LineSplitter();
    const lines: unknown[] = [];
    const ended = new Promise<void>((r) => s.on('close', () => r()));
    s.on('error', reject);
    s.on('data', (d) => {
      for (const l of split.push(d)) lines.push(JSON.parse(l));
      if (lines.length >= count) {
        resolve({ lines, ended });
        if (!opts.end) s.destroy();
      }
    });
    s.write(payload);
    if (opts.end) s.end();
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('control server and client', () => {
  it('answers a call with the handler result, and ping out of the box', async () => {
    const s = await serve({ stats: (args) => ({ got: args, n: 42 }) });
    expect(await ControlClient.call(s.path, 'stats', { a: 1 })).toEqual({ got: { a: 1 }, n: 42 });
    const ping = await ControlClient.call<{ pong: boolean; pid: number; commands: string[] }>(s.path, 'ping');
    expect(ping.pong).toBe(true);
    expect(ping.pid).toBe(process.pid);
    expect(ping.commands).toEqual(['ping', 'stats']);
  });

  it('serves concurrent requests on one connection, matched by id', async () => {
    const s = await serve({
      slow: async () => {
        await sleep(80);
        return 'slow';
      },
      fast: () => 'fast',
      undef: () => undefined,
      big: () => 2n ** 70n,
    });
    const c = await ControlClient.connect(s.path);
    try {
      const order: string[] = [];
      const a = c.call('slow').then((v) => {
        order.push(String(v));
        return v;
      });
      const b = c.call('fast').then((v) => {
        order.push(String(v));
        return v;
      });
      expect(await Promise.all([a, b])).toEqual(['slow', 'fast']);
      expect(order).toEqual(['fast', 'slow']);
      expect(await c.call('undef')).toBeNull();
      expect(await c.call('big')).toBe('1180591620717411303424');
    } finally {
      c.close();
    }
  });

  it('turns unknown commands and throwing handlers into error replies, and keeps serving', async () => {
    const s = await serve({
      boom: () => {
        throw new Error('it broke');
      },
      coded: () => {
        throw new CodedError('EINVAL', 'mode must be off, buggy or hotfixed');
      },
      reject: async () => {
        throw new CodedError('ETIMEDOUT', 'no SYN-ACK after 3 tries');
      },
      str: () => {
        throw 'a string';
      },
      cyclic: () => {
        const o: Record<string, unknown> = {};
        o.self = o;
        return o;
      },
      ok: () => 'still here',
    });
    const err = async (cmd: string) => {
      try {
        await ControlClient.call(s.path, cmd);
      } catch (e) {
        return e as ControlError;
      }
      throw new Error('expected an error');
    };
    const unknown = await err('nope');
    expect(unknown).toBeInstanceOf(ControlError);
    expect(unknown.code).toBe('EUNKNOWNCMD');
    expect(unknown.message).toBe('unknown command "nope"; this stack answers: boom, coded, cyclic, ok, ping, reject, str');
    expect(await err('boom')).toMatchObject({ code: 'EHANDLER', message: 'it broke', cmd: 'boom' });
    expect(await err('coded')).toMatchObject({ code: 'EINVAL', message: 'mode must be off, buggy or hotfixed' });
    expect(await err('reject')).toMatchObject({ code: 'ETIMEDOUT', message: 'no SYN-ACK after 3 tries' });
    expect(await err('str')).toMatchObject({ code: 'EHANDLER', message: 'a string' });
    expect((await err('cyclic')).code).toBe('EENCODE');
    expect(await ControlClient.call(s.path, 'ok')).toBe('still here');
  });

  it('answers malformed requests with errors instead of crashing', async () => {
    const s = await serve({ echo: (a) => a });
    const { lines } = await raw(
      s.path,
      ['not json', '[1,2]', '{"id":7}', '{"id":8,"cmd":"echo","args":[1]}', '{"id":"x","cmd":"echo","args":{"k":"v"}}', '', '{"id":9,"cmd":"echo"}\r'].join(
        '\n',
      ) + '\n',
      6,
    );
    expect(lines).toEqual([
      { id: null, ok: false, error: { code: 'EBADJSON', message: expect.stringContaining('request is not valid JSON') } },
      { id: null, ok: false, error: { code: 'EBADREQUEST', message: expect.stringContaining('JSON object') } },
      { id: 7, ok: false, error: { code: 'EBADREQUEST', message: 'request needs a "cmd" string' } },
      { id: 8, ok: false, error: { code: 'EBADREQUEST', message: '"args" must be a JSON object' } },
      { id: 'x', ok: true, result: { k: 'v' } },
      { id: 9, ok: true, result: {} },
    ]);
    expect(await ControlClient.call(s.path, 'echo', { after: true })).toEqual({ after: true });
  });

  it('drops a connection that sends an endless line, and keeps serving others', async () => {
    const s = await serve({ echo: (a) => a });
    const { lines, ended } = await raw(s.path, 'x'.repeat(MAX_LINE + 10), 1);
    expect(lines[0]).toMatchObject({ ok: false, error: { code: 'ETOOLONG' } });
    await ended;
    expect(await ControlClient.call(s.path, 'echo', { a: 1 })).toEqual({ a: 1 });
  });

  it('replies to a client that half-closes after its request, then ends the connection', async () => {
    const s = await serve({
      later: async () => {
        await sleep(50);
        return 'done';
      },
    });
    const { lines, ended } = await raw(s.path, encodeLine({ id: 1, cmd: 'later', args: {} }), 1, { end: true });
    expect(lines).toEqual([{ id: 1, ok: true, result: 'done' }]);
    await ended;
  });

  it('streams events before the final reply', async () => {
    const s = await serve({
      events: async (args, ctx) => {
        for (let i = 0; i < 3; i++) {
          ctx.stream({ type: 'tick', i, follow: args.follow });
          await sleep(5);
        }
        return { total: 3 };
      },
    });
    const got: unknown[] = [];
    const st = await ControlClient.stream(s.path, 'events', { follow: true }, (ev) => got.push(ev));
    expect(await st.done).toEqual({ total: 3 });
    expect(got).toEqual([0, 1, 2].map((i) => ({ type: 'tick', i, follow: true })));
  });

  it('keeps a stream open until the client closes it, and tells the handler', async () => {
    let closedSeen = false;
    let ctxRef: ControlContext | null = null;
    const s = await serve({
      events: (_args, ctx) => {
        ctxRef = ctx;
        const t = setInterval(() => ctx.stream({ type: 'tick' }), 10);
        ctx.onClose(() => {
          clearInterval(t);
          closedSeen = true;
        });
        return ctx.untilClosed();
      },
    });
    let count = 0;
    const st = await ControlClient.stream(s.path, 'events', {}, () => {
      count++;
    });
    while (count < 3) await sleep(10);
    st.close();
    expect(await st.done).toBeUndefined();
    await vi.waitFor(() => expect(closedSeen).toBe(true));
    expect(ctxRef!.closed).toBe(true);
    expect(ctxRef!.stream({ late: true })).toBe(false);
    expect(s.connectionCount).toBe(0);
  });

  it('rejects a stream whose server goes away, and an error reply to a stream', async () => {
    const s = await serve({ events: (_a, ctx) => ctx.untilClosed() });
    const st = await ControlClient.stream(s.path, 'events', {}, () => {});
    await sleep(20);
    await s.close();
    await expect(st.done).rejects.toMatchObject({ code: 'ECONNRESET' });
    const s2 = await serve({});
    const st2 = await ControlClient.stream(s2.path, 'events', {}, () => {});
    await expect(st2.done).rejects.toMatchObject({ code: 'EUNKNOWNCMD' });
  });

  it('does not let one hung handler block other requests', async () => {
    const s = await serve({ hang: () => new Promise(() => {}), stats: () => 'fine' });
    const c = await ControlClient.connect(s.path);
    try {
      const hung = c.call('hang', {}, { timeoutMs: 150 });
      expect(await c.call('stats')).toBe('fine');
      expect(await ControlClient.call(s.path, 'stats')).toBe('fine');
      await expect(hung).rejects.toMatchObject({ code: 'ETIMEDOUT', message: `no reply to "hang" from ${s.path} within 0.15 s` });
    } finally {
      c.close();
    }
  });

  it('creates the parent directory 0700 and removes the socket file on close', async () => {
    const dir = path.join(tmp, 'deep', 'run');
    const p = path.join(dir, 'fs0.sock');
    const s = await serve({}, p);
    expect(fs.statSync(dir).mode & 0o777).toBe(0o700);
    expect(fs.lstatSync(p).isSocket()).toBe(true);
    await s.close();
    await s.close();
    expect(fs.existsSync(p)).toBe(false);
    await expect(ControlClient.call(p, 'ping')).rejects.toMatchObject({
      code: 'ENOENT',
      message: `no control socket at ${p} (is faultstack running? start one with \`faultstack run ...\`)`,
    });
  });

  it('replaces a stale socket file left by a dead server', async () => {
    const p = sockPath();
    const child = spawn(process.execPath, ['-e', `require('net').createServer().listen(process.argv[1], () => console.log('up'))`, p], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    children.push(child);
    await new Promise<void>((r) => child.stdout!.once('data', () => r()));
    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));
    expect(fs.lstatSync(p).isSocket()).toBe(true);
    await expect(ControlClient.call(p, 'ping')).rejects.toMatchObject({
      code: 'ECONNREFUSED',
      message: `nothing answers on ${p} (a stale socket left by a faultstack that exited?)`,
    });
    const s = await serve({ stats: () => 1 }, p);
    expect(await ControlClient.call(s.path, 'stats')).toBe(1);
  });

  it('refuses to start over a live server or over a file that is not a socket', async () => {
    const first = await serve({ stats: () => 'first' });
    await expect(ControlServer.start(first.path, {})).rejects.toMatchObject({
      code: 'EADDRINUSE',
      message: `another server is already answering on ${first.path} (is another faultstack running? stop it or use another --control path)`,
    });
    expect(await ControlClient.call(first.path, 'stats')).toBe('first');

    const file = sockPath();
    fs.writeFileSync(file, 'precious');
    await expect(ControlServer.start(file, {})).rejects.toMatchObject({
      code: 'EEXIST',
      message: `${file} exists and is not a socket; refusing to replace it`,
    });
    expect(fs.readFileSync(file, 'utf8')).toBe('precious');
  });

  it('never removes a socket file that another server has since taken over', async () => {
    const p = sockPath();
    const a = await serve({ who: () => 'a' }, p);
    fs.rmSync(p); // someone removed ours and started their own
    const b = await serve({ who: () => 'b' }, p);
    await a.close();
    expect(fs.existsSync(p)).toBe(true);
    expect(await ControlClient.call(p, 'who')).toBe('b');
    await vi.waitFor(() => expect(b.connectionCount).toBe(0));
  });

  it('times out connecting and calling with clear messages', async () => {
    const p = sockPath();
    // Accepts but never answers: a server that is not a faultstack.
    const mute = net.createServer((s) => s.resume());
    await new Promise<void>((r) => mute.listen(p, r));
    try {
      await expect(ControlClient.call(p, 'stats', {}, { timeoutMs: 100 })).rejects.toMatchObject({
        code: 'ETIMEDOUT',
        message: `no reply to "stats" from ${p} within 0.1 s`,
      });
    } finally {
      await new Promise((r) => mute.close(r));
    }
  });

  it('rejects a reply that is not JSON', async () => {
    const p = sockPath();
    const liar = net.createServer((s) => s.on('data', () => s.write('HTTP/1.1 400 Bad Request\r\n\r\n')));
    await new Promise<void>((r) => liar.listen(p, r));
    try {
      await expect(ControlClient.call(p, 'stats')).rejects.toMatchObject({
        code: 'EPROTO',
        message: `${p} sent something that is not JSON (is it a faultstack control socket?)`,
      });
    } finally {
      await new Promise((r) => liar.close(r));
    }
  });
});

describe('control protocol limits (issue 8 item 13)', () => {
  it('splits lines across chunks, multibyte characters included, and refuses a line past the limit in bytes', () => {
    const sp = new LineSplitter(16);
    const euro = Buffer.from('{"a":"€"}\n', 'utf8');
    expect(sp.push(euro.subarray(0, 7))).toEqual([]); // the € is cut in the middle
    expect(sp.pending).toBe(7);
    expect(sp.push(euro.subarray(7))).toEqual(['{"a":"€"}']);
    expect(sp.push(Buffer.from('x\r\n\n  \ny'))).toEqual(['x']);
    expect(sp.end()).toBe('y');
    expect(sp.end()).toBeNull();
    expect(() => sp.push(Buffer.from('0123456789'))).not.toThrow();
    expect(() => sp.push(Buffer.from('0123456789'))).toThrow(RangeError); // 20 bytes without a newline
    // A reply splitter has no limit.
    const big = new LineSplitter(Infinity);
    expect(big.push(Buffer.from('z'.repeat(3 << 20) + '\n'))[0]!.length).toBe(3 << 20);
  });

  it('a request without its final newline, followed by EOF, still gets its reply', async () => {
    const s = await serve({ echo: (a) => a });
    const { lines, ended } = await raw(s.path, JSON.stringify({ id: 5, cmd: 'echo', args: { last: true } }), 1, { end: true });
    expect(lines).toEqual([{ id: 5, ok: true, result: { last: true } }]);
    await ended;
  });

  it('serves a bounded number of clients: one more is told EBUSY and closed; an unfinished line is bounded too', async () => {
    const s = await ControlServer.start(sockPath(), { echo: (a) => a }, { maxClients: 3 });
    servers.push(s);
    const idle: net.Socket[] = [];
    try {
      for (let i = 0; i < 3; i++) {
        const c = net.createConnection(s.path);
        await new Promise((r) => c.once('connect', r));
        c.write('x'.repeat(1000)); // an unfinished line, held by the server
        idle.push(c);
      }
      await vi.waitFor(() => expect(s.connectionCount).toBe(3));
      const { lines, ended } = await raw(s.path, encodeLine({ id: 1, cmd: 'echo', args: {} }), 1);
      expect(lines).toEqual([
        { id: null, ok: false, error: { code: 'EBUSY', message: 'too many control clients (3 at once); try again when one has finished' } },
      ]);
      await ended;
      expect(s.refused).toBe(1);
      idle.pop()!.destroy();
      await vi.waitFor(() => expect(s.connectionCount).toBe(2));
      expect(await ControlClient.call(s.path, 'echo', { back: 1 })).toEqual({ back: 1 });
    } finally {
      for (const c of idle) c.destroy();
    }
    // The default request limit: 64 KiB, whatever a line is made of.
    expect(MAX_REQUEST_LINE).toBe(65536);
  });

  it('a usage error thrown by a handler is an EUSAGE reply, which the CLI exits 2 on', async () => {
    const s = await serve({
      bad: () => {
        throw new UsageError("fault kb903927 (synprotect-leak) has no mode 'bogus': valid modes are buggy, hotfixed");
      },
    });
    await expect(ControlClient.call(s.path, 'bad')).rejects.toMatchObject({
      code: 'EUSAGE',
      message: "fault kb903927 (synprotect-leak) has no mode 'bogus': valid modes are buggy, hotfixed",
    });
  });

  it('a timeout beyond what Node can arm is clamped, not a warning and an instant failure', async () => {
    const s = await serve({
      later: async () => {
        await sleep(30);
        return 'late but fine';
      },
    });
    const warnings: string[] = [];
    const onWarn = (w: Error) => warnings.push(w.name);
    process.on('warning', onWarn);
    try {
      expect(await ControlClient.call(s.path, 'later', {}, { timeoutMs: 1e12 })).toBe('late but fine');
    } finally {
      process.off('warning', onWarn);
    }
    expect(warnings).not.toContain('TimeoutOverflowWarning');
  });

  it('stats arguments are checked: types, states, filters; a filter alone asks for up to 100 rows', () => {
    expect(statsQuery({})).toEqual({ gc: false, limit: 0, state: null, port: null, peer: null });
    expect(statsQuery({ all: true, gc: true }).limit).toBe(Infinity);
    expect(statsQuery({ state: 'syn-recv' })).toMatchObject({ state: 'SYN-RECEIVED', limit: 100 });
    expect(statsQuery({ peer: '198.18.100.0/24', limit: 5 }).peer).toEqual({ addr: 0xc6126400, prefix: 24, port: null });
    expect(statsQuery({ peer: '198.18.0.1:80' }).peer).toEqual({ addr: 0xc6120001, prefix: 32, port: 80 });
    expect(() => statsQuery({ gc: 'yes' })).toThrow('"gc" must be true or false, not string "yes"');
    expect(() => statsQuery({ limit: -1 })).toThrow(/"limit" must be an integer from 0 to/);
    expect(() => statsQuery({ state: 'sleepy' })).toThrow(/"state" must be one of established, estab, syn-sent/);
    expect(() => statsQuery({ port: 70000 })).toThrow('"port" must be an integer from 1 to 65535, not number 70000');
    expect(() => statsQuery({ peer: '10.0.0.300' })).toThrow(/"peer" must be an IPv4 address/);
    expect(() => statsQuery({ state: { a: 1 } })).toThrow('"state" must be a string (a TCP state such as established, syn-recv or time-wait), not an object');
  });
});

describe('choosing the control socket', () => {
  it('uses --control when given', async () => {
    expect(await resolveControlPath('/x/y.sock', path.join(tmp, 'none'))).toBe('/x/y.sock');
  });

  it('fails clearly when there is none', async () => {
    const dir = path.join(tmp, 'empty');
    await expect(resolveControlPath(undefined, dir)).rejects.toThrow(
      `no running faultstack found in ${dir} (start one with \`faultstack run ...\` or pass --control PATH)`,
    );
    fs.mkdirSync(dir);
    fs.writeFileSync(path.join(dir, 'notes.txt'), '');
    await expect(resolveControlPath(undefined, dir)).rejects.toThrow(`no running faultstack found in ${dir}`);
  });

  it('takes the only socket, or the only live one, and lists several live ones', async () => {
    const dir = path.join(tmp, 'several');
    const a = await serve({}, path.join(dir, 'a.sock'));
    expect(await resolveControlPath(undefined, dir)).toBe(a.path);
    fs.writeFileSync(path.join(dir, 'dead.sock'), ''); // not answering
    expect(await resolveControlPath(undefined, dir)).toBe(a.path);
    const b = await serve({}, path.join(dir, 'b.sock'));
    await expect(resolveControlPath(undefined, dir)).rejects.toThrow(`several faultstacks are running (${a.path}, ${b.path}); pick one with --control PATH`);
  });
});

describe('stats rendering', () => {
  it('renders counters (zeros hidden), connections like ss, the lock and fault modes', () => {
    const now = Date.UTC(2024, 0, 1, 12, 0, 30);
    const text = renderStats(
      {
        tun: 'fs0',
        addr: '198.18.0.2/24',
        uptimeMs: 65_000,
        counters: { ip: { rxPackets: 120, txPackets: 118, badChecksum: 0 }, 'tcp.resets': 3, 'tcp.big': '12345678901234567890' },
        connections: [
          { state: 'LISTEN', recvQ: 0, sendQ: 0, local: '198.18.0.2:80', peer: '0.0.0.0:*' },
          { state: 'ESTABLISHED', recvQ: 10, sendQ: 2048, localAddress: '198.18.0.2', localPort: 7, remoteAddress: '198.18.0.1', remotePort: 40000 },
          { state: 'SynReceived' },
        ],
        lock: { held: true, holder: 'active open to 198.18.0.99:80', since: now - 30_000, waiters: 4 },
        faults: { '297040': { alias: 'conntable-hang', mode: 'buggy' }, '903927': 'off' },
        params: { SynAttackProtect: 2 },
      },
      { now },
    );
    expect(text).toContain('faultstack on fs0, 198.18.0.2/24, up 1 min 5 s\n');
    expect(text).toContain('Counters (1 zero counters hidden; --all shows them):\n');
    expect(text).toMatch(/ {2}ip\.rxPackets +120\n {2}ip\.txPackets +118\n {2}tcp\.resets +3\n {2}tcp\.big +12345678901234567890\n/);
    expect(text).not.toContain('badChecksum');
    expect(text).toContain('Connections (3):\n');
    expect(text).toMatch(/State\s+Recv-Q\s+Send-Q\s+Local Address:Port\s+Peer Address:Port\n/);
    expect(text).toMatch(/LISTEN\s+0\s+0\s+198\.18\.0\.2:80\s+0\.0\.0\.0:\*\n/);
    expect(text).toMatch(/ESTAB\s+10\s+2048\s+198\.18\.0\.2:7\s+198\.18\.0\.1:40000\n/);
    expect(text).toMatch(/SYN-RECV\s+0\s+0\s+\*:\*\s+\*:\*\n/);
    expect(text).toMatch(/connection-table lock: HELD by active open to 198\.18\.0\.99:80 since \d\d:\d\d:\d\d\.000 \(30\.0 s\), 4 waiting\n/);
    expect(text).toMatch(/ {2}297040 +conntable-hang +buggy\n {2}903927 +off\n/);
    expect(text).toMatch(/Parameters:\n {2}SynAttackProtect +2\n/);
    expect(renderStats({ counters: { a: 0 } }, { all: true })).toMatch(/Counters:\n {2}a +0\n/);
    expect(renderStats({ lock: { held: false } })).toBe('\nconnection-table lock: free\n');
    // The runtime's shapes: ISO since, heldForMs, counters of the lock, extra connection fields, listeners, leak.
    const rt = renderStats(
      {
        lock: {
          name: 'tcp-connection-table',
          held: true,
          holder: 'connect 198.18.0.99:80',
          heldForMs: 4200,
          since: new Date(now - 4200).toISOString(),
          blockedPackets: 17,
          acquisitions: 3,
        },
        connections: [{ state: 'SYN_SENT', recvQ: 0, sendQ: 0, local: '198.18.0.2:49152', peer: '198.18.0.99:80', rtt: 0.2, cwnd: 10, retrans: 2 }],
        listeners: [{ port: 80, backlog: 5, synQueue: 0, acceptQueue: 1 }],
        leak: { leakedConnections: 12, leakedBytes: 49152 },
      },
      { now },
    );
    expect(rt).toMatch(
      /tcp-connection-table: HELD by connect 198\.18\.0\.99:80 since \d\d:\d\d:\d\d\.\d{3} \(4\.2 s\) \(3 acquisitions, 17 packets blocked\)\n/,
    );
    expect(rt).toMatch(/SYN-SENT +0 +0 +198\.18\.0\.2:49152 +198\.18\.0\.99:80 +rtt=0\.2 cwnd=10 retrans=2\n/);
    expect(rt).toMatch(/Listeners \(1\):\nPORT +BACKLOG +SYNQUEUE +ACCEPTQUEUE\n +80 +5 +0 +1\n/);
    expect(rt).toMatch(/Leak \(KB 903927 reset path\):\n {2}leakedConnections +12\n {2}leakedBytes +49152\n/);
    expect(renderStats({})).toContain('empty stats reply');
  });
});

describe('control commands against a live server', () => {
  /** Runs one CLI command in-process (commands are imported directly: vitest cannot require() .ts). */
  async function cli(mod: { run(argv: string[]): Promise<number> }, argv: string[]): Promise<{ code: number; out: string; err: string }> {
    let out = '';
    let err = '';
    const o = vi.spyOn(process.stdout, 'write').mockImplementation((c: string | Uint8Array) => {
      out += String(c);
      return true;
    });
    const e = vi.spyOn(process.stderr, 'write').mockImplementation((c: string | Uint8Array) => {
      err += String(c);
      return true;
    });
    let code: number;
    try {
      code = await mod.run(argv);
    } catch (x) {
      // What main() would print.
      const { report } = await import('../../bin/cli/main');
      code = report(x);
    } finally {
      o.mockRestore();
      e.mockRestore();
    }
    return { code, out, err };
  }

  const calls: { cmd: string; args: Record<string, unknown> }[] = [];
  let server: ControlServer;
  const record = (cmd: string, fn: (a: Record<string, unknown>, ctx: ControlContext) => unknown) => (a: Record<string, unknown>, ctx: ControlContext) => {
    calls.push({ cmd, args: a });
    return fn(a, ctx);
  };

  beforeAll(async () => {
    server = await ControlServer.start(path.join(tmp, 'cmds.sock'), {
      stats: record('stats', () => ({ counters: { rx: 5, zero: 0 }, connections: [{ state: 'LISTEN', local: '198.18.0.2:7', peer: '0.0.0.0:*' }] })),
      'fault.set': record('fault.set', (a) => {
        if (!['off', 'buggy', 'hotfixed'].includes(String(a.mode))) throw new CodedError('EINVAL', `mode must be off, buggy or hotfixed, got "${a.mode}"`);
        if (a.id !== '297040') throw new CodedError('ENOFAULT', `no fault "${a.id}"; faults: 297040, 319381, 898060, 903927, 972183`);
        return { id: '297040', alias: 'conntable-hang', mode: a.mode, previous: 'off' };
      }),
      'param.set': record('param.set', (a) => ({ name: a.name, value: Number(a.value), previous: 0 })),
      events: record('events', async (a, ctx) => {
        const evs = [
          { ts: Date.UTC(2024, 0, 1), type: 'lock.taken', holder: 'connect 198.18.0.99:80' },
          { ts: Date.UTC(2024, 0, 1), type: 'note', text: 'two words' },
          {
            ts: '2024-01-01T00:00:00.000Z',
            type: 'fault-mode-changed',
            seq: 1,
            message: 'kb297040 (conntable-hang) mode hotfixed -> buggy',
            data: { to: 'buggy' },
          },
        ];
        if (!a.follow) return evs;
        for (const ev of evs) ctx.stream(ev);
        return null;
      }),
      connect: record('connect', (a) => {
        if (a.host === '198.18.0.99') throw new CodedError('ETIMEDOUT', 'no SYN-ACK from 198.18.0.99:80 after 3 SYNs (21 s)');
        return { connected: true, ms: 3, localPort: 49152 };
      }),
      unlock: record('unlock', () => ({ released: true, holder: 'connect 198.18.0.99:80', heldMs: 12_500 })),
      routes: record('routes', () => ({
        count: 2,
        limit: 1000,
        routes: [
          { dest: '198.18.0.0/24', mtu: 1500 },
          { dest: '198.18.5.7/32', mtu: 576, kind: 'pmtu' },
        ],
      })),
    });
  });

  afterAll(async () => {
    await server.close();
  });

  const C = () => ['--control', server.path];

  it('stats: human and --json', async () => {
    const stats = await import('../../bin/cli/commands/stats');
    const h = await cli(stats, C());
    expect(h.code).toBe(0);
    expect(h.out).toMatch(/Counters \(1 zero counters hidden; --all shows them\):\n {2}rx +5\n/);
    expect(h.out).toMatch(/LISTEN +0 +0 +198\.18\.0\.2:7 +0\.0\.0\.0:\*/);
    const all = await cli(stats, [...C(), '--all']);
    expect(all.out).toMatch(/zero +0/);
    const j = await cli(stats, [...C(), '--json']);
    expect(JSON.parse(j.out)).toEqual({ counters: { rx: 5, zero: 0 }, connections: [{ state: 'LISTEN', local: '198.18.0.2:7', peer: '0.0.0.0:*' }] });
  });

  it('stats: a summary by default; rows streamed on request (--limit, --all, filters) and merged; --watch prints deltas', async () => {
    const stats = await import('../../bin/cli/commands/stats');
    const seen: Record<string, unknown>[] = [];
    let tick = 0;
    const rowsOf = (n: number) =>
      Array.from({ length: n }, (_, i) => ({ state: 'ESTABLISHED', recvQ: 0, sendQ: 0, local: '198.18.0.2:9', peer: `198.18.0.1:${40000 + i}` }));
    const s = await serve({
      stats: (a, ctx) => {
        seen.push(a);
        tick++;
        const out: Record<string, unknown> = { counters: { rx: 100 * tick, steady: 7 }, connectionCount: 2500, states: { ESTABLISHED: 2500 } };
        const limit = a.all ? 2500 : typeof a.limit === 'number' ? a.limit : a.state ? 100 : 0;
        if (limit > 0) {
          const rows = rowsOf(Math.min(limit, 2500));
          for (let i = 0; i < rows.length; i += 1000) ctx.stream({ rows: rows.slice(i, i + 1000) });
          out.rows = { matched: 2500, sent: rows.length, limit: a.all ? 'all' : limit };
        }
        return out;
      },
    });
    const C2 = ['--control', s.path];
    const h = await cli(stats, C2);
    expect(h.code).toBe(0);
    expect(h.out).toContain('\nConnections: 2500 (ESTAB 2500)\n  (--limit N or --all lists them; --state, --port, --peer filter)\n');
    expect(h.out).not.toContain('198.18.0.1:');
    expect(seen.at(-1)).toEqual({});
    const lim = await cli(stats, [...C2, '--limit', '3']);
    expect(lim.out).toContain('Connections (3 of 2500 matching, 2497 more match: --limit N or --all):\n');
    expect(lim.out).toMatch(/ESTAB +0 +0 +198\.18\.0\.2:9 +198\.18\.0\.1:40002\n/);
    expect(seen.at(-1)).toEqual({ limit: 3 });
    const all = await cli(stats, [...C2, '--all', '--json']);
    const doc = JSON.parse(all.out);
    expect(doc.connections).toHaveLength(2500); // three events of rows, merged
    expect(doc.rows).toEqual({ matched: 2500, sent: 2500, limit: 'all' });
    await cli(stats, [...C2, '--state', 'established', '--port', '9', '--peer', '198.18.0.1', '--gc']);
    expect(seen.at(-1)).toEqual({ state: 'established', port: 9, peer: '198.18.0.1', gc: true });
    const badState = await cli(stats, [...C2, '--state', 'sleepy']);
    expect(badState.code).toBe(2);
    expect(badState.err).toMatch(/^faultstack stats: --state must be one of established, estab, syn-sent, .*, got "sleepy"\n$/);
    expect((await cli(stats, [...C2, '--count', '2'])).err).toBe('faultstack stats: --count N goes with --watch SEC\n');
    const w = await cli(stats, [...C2, '--watch', '0.1', '--count', '2', '--json']);
    expect(w.code).toBe(0);
    const lines = w.out
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    expect(lines).toHaveLength(2);
    for (const l of lines) {
      expect(l.deltas).toEqual({ rx: 100 }); // steady did not change
      expect(l.intervalMs).toBeGreaterThanOrEqual(90);
    }
    const wh = await cli(stats, [...C2, '--watch', '0.1', '--count', '1']);
    expect(wh.out).toMatch(/^\d\d:\d\d:\d\d\.\d{3} {2}\+0\.\d s: 1 counter changed\n {2}rx +\d+ +\+100 +\d+(\.\d)?\/s\n$/);
  });

  it('fault set: sends id and mode; EINVAL replies exit 2, others exit 1', async () => {
    const fault = await import('../../bin/cli/commands/fault');
    const ok = await cli(fault, ['set', '297040', 'buggy', ...C()]);
    expect(ok).toEqual({ code: 0, out: 'fault 297040 (conntable-hang): off -> buggy\n', err: '' });
    expect(calls.at(-1)).toEqual({ cmd: 'fault.set', args: { id: '297040', mode: 'buggy' } });
    const bad = await cli(fault, ['set', '297040', 'broken', ...C()]);
    expect(bad).toEqual({ code: 2, out: '', err: 'faultstack fault set: mode must be off, buggy or hotfixed, got "broken"\n' });
    const unknown = await cli(fault, ['set', '1', 'buggy', ...C()]);
    expect(unknown).toEqual({ code: 1, out: '', err: 'faultstack fault set: no fault "1"; faults: 297040, 319381, 898060, 903927, 972183\n' });
    const usage = await cli(fault, ['get', '1']);
    expect(usage.code).toBe(2);
    expect(usage.err).toBe('faultstack fault: unknown subcommand "get" (did you mean set?); valid: set\n');
  });

  it('param set', async () => {
    const param = await import('../../bin/cli/commands/param');
    expect(await cli(param, ['set', 'SynAttackProtect', '2', ...C()])).toEqual({ code: 0, out: 'SynAttackProtect = 0 -> 2\n', err: '' });
    expect(calls.at(-1)).toEqual({ cmd: 'param.set', args: { name: 'SynAttackProtect', value: '2' } });
  });

  it('events: once, as JSONL, and following', async () => {
    const events = await import('../../bin/cli/commands/events');
    const h = await cli(events, [...C(), '--limit', '5']);
    expect(h.code).toBe(0);
    expect(h.out).toMatch(
      /^\d\d:\d\d:\d\d\.000 lock\.taken holder="connect 198\.18\.0\.99:80"\n\d\d:\d\d:\d\d\.000 note text="two words"\n2024-01-01T00:00:00\.000Z fault-mode-changed kb297040 \(conntable-hang\) mode hotfixed -> buggy\n$/,
    );
    expect(calls.at(-1)).toEqual({ cmd: 'events', args: { follow: false, limit: 5 } });
    const j = await cli(events, [...C(), '--json']);
    expect(
      j.out
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l).type),
    ).toEqual(['lock.taken', 'note', 'fault-mode-changed']);
    const f = await cli(events, [...C(), '--follow', '--json']);
    expect(f.code).toBe(0);
    expect(f.out.trim().split('\n')).toHaveLength(3);
    expect(calls.at(-1)).toEqual({ cmd: 'events', args: { follow: true } });
  });

  it('connect: target validation, success, and a failure reply', async () => {
    const connect = await import('../../bin/cli/commands/connect');
    const ok = await cli(connect, ['198.18.0.1:7', '--timeout', '2.5', ...C()]);
    expect(ok).toEqual({ code: 0, out: 'connected to 198.18.0.1:7 in 3 ms (localPort=49152)\n', err: '' });
    expect(calls.at(-1)).toEqual({ cmd: 'connect', args: { host: '198.18.0.1', port: 7, timeoutMs: 2500 } });
    const fail = await cli(connect, ['198.18.0.99:80', ...C()]);
    expect(fail).toEqual({ code: 1, out: '', err: 'faultstack connect 198.18.0.99:80: no SYN-ACK from 198.18.0.99:80 after 3 SYNs (21 s)\n' });
    const bad = await cli(connect, ['198.18.0.1:0', ...C()]);
    expect(bad.code).toBe(2);
    expect(bad.err).toBe(
      'faultstack connect: the target must be HOST:PORT with an IPv4 address and a port from 1 to 65535, e.g. 198.18.0.99:80, got "198.18.0.1:0"\n',
    );
    const badT = await cli(connect, ['198.18.0.1:7', '--timeout', '0', ...C()]);
    expect(badT.err).toBe('faultstack connect: --timeout must be a number from 0.1 to 3600 seconds, got "0"\n');
  });

  it('unlock and routes', async () => {
    const unlock = await import('../../bin/cli/commands/unlock');
    expect(await cli(unlock, C())).toEqual({ code: 0, out: 'released the connection-table lock held by connect 198.18.0.99:80 for 12.5 s\n', err: '' });
    const routes = await import('../../bin/cli/commands/routes');
    const r = await cli(routes, C());
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/^count: 2\nlimit: 1000\n\nroutes \(2\):\n {2}DEST +MTU +KIND\n {2}198\.18\.0\.0\/24 +1500 +-\n {2}198\.18\.5\.7\/32 +576 +pmtu\n$/);
    // The runtime's shape: several tables and a summary.
    const { renderRoutes } = await import('../../bin/cli/commands/routes');
    expect(renderRoutes({ interfaceMtu: 1500, networks: [{ dest: '198.18.0.0/24', mtu: 1500, kind: 'connected' }], hosts: [], atLimit: false })).toBe(
      'interfaceMtu: 1500\natLimit: false\n\nnetworks (1):\n  DEST            MTU  KIND\n  198.18.0.0/24  1500  connected\n\nhosts: (none)\n',
    );
    expect(renderRoutes([])).toBe('routes: (none)\n');
  });

  it('main: unknown command and help without loading anything', async () => {
    let err = '';
    const e = vi.spyOn(process.stderr, 'write').mockImplementation((c: string | Uint8Array) => {
      err += String(c);
      return true;
    });
    try {
      expect(await main(['sats'])).toBe(2);
    } finally {
      e.mockRestore();
    }
    expect(err).toBe(
      'faultstack: unknown command "sats" (did you mean stats?); commands: run, stats, fault, param, events, connect, unlock, routes, trace, impair, neigh, ipsec, fw, fwc, nlb, faults, certs, demo, lab, scenario (faultstack --help)\n',
    );
  });
});
