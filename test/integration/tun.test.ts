/**
 * TUN driver against the real kernel, entirely inside a network namespace this file creates
 * (fs-tun-<pid>-<rand>) and removes in afterAll, also when a test fails. Needs root, the
 * addon (`make addon`) and the compiled driver in dist/ (`make ts`): the fixture runs under
 * `ip netns exec NS node test/integration/fixtures/tun-fixture.js ...`.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ChildProcess, execFileSync, spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

const root = path.resolve(__dirname, '..', '..');
const fixture = path.join(root, 'test', 'integration', 'fixtures', 'tun-fixture.js');
const distJs = path.join(root, 'dist', 'drivers', 'tun', 'index.js');
const srcTs = path.join(root, 'drivers', 'tun', 'index.ts');
const addon = path.join(root, 'drivers', 'tun', 'build', 'Release', 'faultstack_tun.node');
const ns = `fs-tun-${process.pid}-${Math.random().toString(36).slice(2, 8)}`;
const children = new Set<ChildProcess>();
let nsCreated = false;

function ip(...args: string[]): string {
  return execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

function lastJson(stdout: string): Record<string, any> {
  const lines = stdout
    .trim()
    .split('\n')
    .filter((l) => l.startsWith('{'));
  if (lines.length === 0) throw new Error(`fixture printed no JSON: ${stdout}`);
  return JSON.parse(lines[lines.length - 1]!);
}

/** Runs the fixture to completion inside the namespace and returns its last JSON line. */
function runFixture(...args: string[]): Record<string, any> {
  const r = spawnSync('ip', ['netns', 'exec', ns, process.execPath, fixture, ...args], {
    encoding: 'utf8',
    timeout: 20_000,
  });
  if (r.status !== 0) throw new Error(`fixture ${args.join(' ')} exited ${r.status}: ${r.stdout}${r.stderr}`);
  return lastJson(r.stdout);
}

interface Running {
  proc: ChildProcess;
  ready: Record<string, any>;
  out: () => string;
  exited: Promise<number | null>;
}

/** Starts the fixture in the namespace and waits for its "ready" line. */
function startFixture(...args: string[]): Promise<Running> {
  const proc = spawn('ip', ['netns', 'exec', ns, process.execPath, fixture, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.add(proc);
  let stdout = '';
  let stderr = '';
  const exited = new Promise<number | null>((res) =>
    proc.on('exit', (code) => {
      children.delete(proc);
      res(code);
    }),
  );
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`fixture not ready in 10s: ${stdout}${stderr}`)), 10_000);
    proc.stderr!.on('data', (d) => (stderr += d));
    proc.stdout!.on('data', (d) => {
      stdout += d;
      for (const line of stdout.split('\n')) {
        if (line.includes('"event":"ready"')) {
          clearTimeout(timer);
          resolve({ proc, ready: JSON.parse(line), out: () => stdout, exited });
          return;
        }
        if (line.includes('"event":"error"')) {
          clearTimeout(timer);
          reject(new Error(`fixture failed: ${line}${stderr}`));
          return;
        }
      }
    });
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`fixture exited (${code}) before ready: ${stdout}${stderr}`));
    });
  });
}

async function stop(r: Running): Promise<Record<string, any>> {
  r.proc.kill('SIGTERM');
  const code = await r.exited;
  expect(code).toBe(0);
  return lastJson(r.out());
}

function ping(count: number, target = '198.18.0.2', size = 56): { ok: boolean; received: number; out: string } {
  const args = ['netns', 'exec', ns, 'ping', '-n', '-c', String(count), '-i', '0.2', '-W', '1', '-s', String(size), target];
  const r = spawnSync('ip', args, {
    encoding: 'utf8',
    timeout: 20_000,
  });
  const m = /(\d+) received/.exec(r.stdout ?? '');
  return { ok: r.status === 0, received: m ? Number(m[1]) : 0, out: `${r.stdout}${r.stderr}` };
}

function linkInNs(name: string): boolean {
  return spawnSync('ip', ['-n', ns, 'link', 'show', 'dev', name], { stdio: 'ignore' }).status === 0;
}

beforeAll(() => {
  if (process.getuid?.() !== 0) throw new Error('tun integration tests need root (CAP_NET_ADMIN) to create namespaces and TUN devices');
  if (!fs.existsSync('/dev/net/tun')) throw new Error('/dev/net/tun is missing (modprobe tun)');
  if (!fs.existsSync(addon)) throw new Error(`TUN addon missing (${addon}): run \`make addon\` first`);
  if (!fs.existsSync(distJs)) throw new Error(`compiled driver missing (${distJs}): run \`make ts\` (or \`make build\`) first`);
  if (fs.statSync(distJs).mtimeMs < fs.statSync(srcTs).mtimeMs) {
    throw new Error(`${distJs} is older than ${srcTs}: run \`make ts\` first`);
  }
  if (spawnSync('ping', ['-V'], { stdio: 'ignore' }).error) throw new Error('ping not installed (make deps installs iputils-ping)');
  ip('netns', 'add', ns);
  nsCreated = true;
  ip('-n', ns, 'link', 'set', 'lo', 'up');
});

afterAll(async () => {
  for (const c of children) {
    c.kill('SIGKILL');
    await new Promise((r) => c.once('exit', r));
  }
  if (nsCreated) {
    // A persistent device we made: delete it explicitly, then the namespace.
    spawnSync('ip', ['-n', ns, 'tuntap', 'del', 'dev', 'fsp0', 'mode', 'tun'], { stdio: 'ignore' });
    ip('netns', 'del', ns);
  }
  expect(fs.existsSync(`/var/run/netns/${ns}`)).toBe(false);
});

describe('TunDevice (real kernel, in a namespace)', () => {
  it('answers ping 198.18.0.2 by hand through the TUN device; the device goes away on close', async () => {
    const r = await startFixture('echo', 'fst0');
    try {
      expect(r.ready).toMatchObject({ name: 'fst0', created: true, mtu: 1500, vnetHdr: false, queues: 1 });
      const p = ping(3);
      expect(p.received, p.out).toBe(3);
      expect(p.ok).toBe(true);
    } finally {
      const res = await stop(r);
      expect(res.replies).toBeGreaterThanOrEqual(3);
      expect(res.stats.rxPackets).toBeGreaterThanOrEqual(3);
      expect(res.stats.rxBursts).toBeGreaterThanOrEqual(1);
      expect(res.stats.txPackets).toBe(res.replies);
      expect(res.stats.txDrops).toBe(0);
      expect(res.existsAfterClose).toBe(false);
    }
    expect(linkInNs('fst0')).toBe(false);
  }, 30_000);

  it('replies sent with sendDetached (the writer thread) arrive, with and without the virtio header; txQueueLen sets the created device', async () => {
    for (const vnet of [false, true]) {
      const r = await startFixture('echo', 'fsd0', '--detached', '--txqlen', '4096', ...(vnet ? ['--vnet'] : []));
      try {
        expect(r.ready).toMatchObject({ name: 'fsd0', created: true, vnetHdr: vnet });
        expect(ip('-n', ns, 'link', 'show', 'fsd0')).toMatch(/qlen 4096/);
        const p = ping(5);
        expect(p.received, p.out).toBe(5);
      } finally {
        const res = await stop(r);
        expect(res.replies).toBeGreaterThanOrEqual(5);
        expect(res.stats.txPackets).toBe(res.replies);
        expect(res.stats.txDrops).toBe(0);
        expect(res.stats.txErrors).toBe(0);
      }
      expect(linkInNs('fsd0')).toBe(false);
    }
  }, 40_000);

  it('early SYN drop: while backlogged, bare SYNs of unverified sources beyond the budget are dropped and counted; an allowed source loses none', async () => {
    const r = await startFixture('synbudget', 'fss0', '--block', '2500', '--wait', '1500');
    try {
      // Sent while the fixture's loop is blocked: they wait in the kernel's queue (500 packets).
      const synflood = path.join(root, 'dist', 'lab', 'synflood.js');
      for (const src of ['198.18.100.0/24', '198.18.7.7']) {
        const f = spawnSync(
          'ip',
          [
            'netns',
            'exec',
            ns,
            process.execPath,
            synflood,
            '--target',
            '198.18.0.2:80',
            '--source',
            src,
            '--count',
            '150',
            '--duration',
            '2',
            '--json',
            '--quiet',
          ],
          { encoding: 'utf8', timeout: 10_000 },
        );
        expect(f.status, f.stderr).toBe(0);
        expect(lastJson(f.stdout).sent).toBe(150);
      }
      const code = await r.exited;
      expect(code, r.out()).toBe(0);
      const res = lastJson(r.out());
      const flood = Object.entries(res.bySource as Record<string, number>)
        .filter(([a]) => a.startsWith('198.18.100.'))
        .reduce((n, [, v]) => n + v, 0);
      expect(res.bySource['198.18.7.7']).toBe(150);
      expect(res.stats.synEarlyDrops).toBeGreaterThan(50);
      expect(flood + res.stats.synEarlyDrops).toBe(150);
    } finally {
      if (r.proc.exitCode === null) r.proc.kill('SIGKILL');
    }
    expect(linkInNs('fss0')).toBe(false);
  }, 30_000);

  it('with the virtio header and 2 queues, ping still works and offloads were probed', async () => {
    const r = await startFixture('echo', 'fsq0', '--vnet', '--queues', '2', '--mtu', '9000');
    try {
      expect(r.ready).toMatchObject({ name: 'fsq0', created: true, mtu: 9000, vnetHdr: true, queues: 2 });
      expect(r.ready.offloads.csum).toBe(true);
      const p = ping(3);
      expect(p.received, p.out).toBe(3);
    } finally {
      const res = await stop(r);
      expect(res.replies).toBeGreaterThanOrEqual(3);
      expect(res.metaSeen).toBeGreaterThan(0); // meta arrays were passed
      expect(res.stats.rxTruncated).toBe(0);
      expect(res.existsAfterClose).toBe(false);
    }
    expect(linkInNs('fsq0')).toBe(false);
  }, 30_000);

  it('close() inside the receive callback is safe and lets the process exit by itself', async () => {
    const r = await startFixture('echo', 'fsc0', '--close-in-cb');
    ping(1);
    const code = await Promise.race([r.exited, new Promise<string>((res) => setTimeout(() => res('timeout'), 5000))]);
    expect(code).toBe(0);
    const res = lastJson(r.out());
    expect(res).toMatchObject({ closedInCallback: true, exists: false });
    expect(res.replies).toBeGreaterThanOrEqual(1);
  }, 30_000);

  it('virtio header both ways: NEEDS_CSUM meta on receive, a GSO_UDP_L4 send is segmented by the kernel', () => {
    const res = runFixture('meta', 'fsm0');
    expect(res.offloads.csum).toBe(true);
    // the kernel left the UDP checksum to us: csum_start = IP header, csum_offset = UDP check field
    expect(res.rxMeta).toEqual({ flags: 1, gsoType: 0, hdrLen: 0, gsoSize: 0, csumStart: 20, csumOffset: 6 });
    // one 3028-byte packet with gsoSize 1000 became three 1000-byte datagrams at a kernel socket
    expect(res.datagrams).toEqual([1000, 1000, 1000]);
    expect(res.bytesOk).toBe(true);
    expect(res.stats.txPackets).toBe(1);
    expect(res.stats.txErrors).toBe(0);
  });

  it('deferred writes (the writer thread): owned large packets and the small ones behind them reach the kernel in order, each with its own bytes', () => {
    const on = runFixture('deferred', 'fsd0');
    expect(on.why).toBe('done');
    expect(on.txThread).toBe(true);
    expect(on.got).toEqual(Array.from({ length: 248 }, (_, i) => i));
    expect(on.bad).toBe(0);
    // 8 large per round; the 3 small ones queued behind large ones went the same way.
    expect(on.stats.txDeferred).toBeGreaterThanOrEqual(20 * 8);
    // Small owned packets: 2 in one flush written at once, 6 in one flush (a batch) deferred.
    expect(on.smallDeferred).toEqual([0, 6]);
    expect(on.stats.txPackets).toBe(248);
    expect(on.stats.txErrors + on.stats.txDrops).toBe(0);
    const off = runFixture('deferred', 'fsd1', '--no-tx-thread');
    expect(off.why).toBe('done');
    expect(off.txThread).toBe(false);
    expect(off.got).toEqual(Array.from({ length: 248 }, (_, i) => i));
    expect(off.bad).toBe(0);
    expect(off.smallDeferred).toEqual([0, 0]);
    expect(off.stats.txDeferred).toBe(0);
    expect(off.stats.txPackets).toBe(248);
  });

  it('a packet longer than the receive slot (MTU raised behind our back) is counted as truncated', async () => {
    // Slots of the MTU: without receive coalescing (which makes them 64 KiB).
    const r = await startFixture('echo', 'fsr0', '--no-gro');
    try {
      ip('-n', ns, 'link', 'set', 'dev', 'fsr0', 'mtu', '9000');
      const p = ping(2, '198.18.0.2', 4000); // 4028-byte packets, 2112-byte slots
      expect(p.received).toBe(0);
    } finally {
      const res = await stop(r);
      expect(res.stats.rxTruncated).toBe(2);
      expect(res.replies).toBe(0);
    }
  }, 30_000);

  it('a throwing receive handler is an uncaughtException; a deleted interface reaches onError once', () => {
    const res = runFixture('faults', 'fsf0');
    expect(res.uncaught).toEqual(['handler threw']);
    expect(res.received).toBe(2); // receiving went on after the throw
    expect(res.onError.code).toBe('EBADF');
    expect(res.stats.rxErrors).toBe(1); // stopped polling: no spinning on a dead fd
  });

  it('a device it created vanishes after close()', () => {
    const res = runFixture('lifecycle', 'fsl0');
    expect(res).toEqual({ event: 'result', name: 'fsl0', created: true, existsWhileOpen: true, existsAfterClose: false });
    expect(linkInNs('fsl0')).toBe(false);
  });

  it('attaches to a persistent `ip tuntap add` device and leaves it in place', () => {
    ip('-n', ns, 'tuntap', 'add', 'dev', 'fsp0', 'mode', 'tun');
    try {
      const res = runFixture('attach', 'fsp0');
      expect(res.created).toBe(false);
      expect(res.existsAfterClose).toBe(true);
      expect(res.ifFlags & 0x0800).toBe(0x0800); // IFF_PERSIST
    } finally {
      ip('-n', ns, 'tuntap', 'del', 'dev', 'fsp0', 'mode', 'tun');
    }
    expect(linkInNs('fsp0')).toBe(false);
  });

  it('vnetHdr open: the offload probe reports what the kernel accepted; setOffload reports refusals', () => {
    const res = runFixture('vnet', 'fsv0');
    expect(res.vnetHdr).toBe(true);
    // The first probe step (CSUM|TSO4|TSO6) is accepted by any kernel with TSO support in tun.
    expect(res.probed.csum).toBe(true);
    expect(res.probed.flags & ~0x07).toBe(0);
    expect([0x07, 0x03, 0x01]).toContain(res.probed.flags);
    expect(res.setCsumOnly).toBe(true);
    expect(res.setBogus).toBe(false); // unknown bit: kernel says EINVAL
    expect(res.afterBogus.flags).toBe(1); // a refused call leaves the last accepted state
    expect(res.setNone).toBe(true);
    expect(res.reprobe.flags).toBe(res.probed.flags);
    expect(res.plainOffloads.flags).toBe(0); // no vnet header: never offloads
    expect(res.plainSetCsum).toBe(false);
    console.log(`offload probe on this kernel: ${res.probed.names.join('|') || 'none'} (flags ${res.probed.flags})`);
  });

  it('open errors become one-line Errors with a code', () => {
    const res = runFixture('errors', 'fse0');
    const oneLine = (e: { message: string }) => expect(e.message).not.toContain('\n');
    expect(res.tooLong.code).toBe('EINVAL');
    expect(res.badChars.code).toBe('EINVAL');
    expect(res.busy.code).toBe('EBUSY');
    expect(res.busy.message).toMatch(/busy/);
    expect(res.mqMismatch.code).toBe('EINVAL');
    expect(res.notTun.code).toBe('EINVAL');
    expect(res.badQueues.code).toBe('EINVAL');
    expect(res.hostNoDev.code).toBe('ERR_IP_COMMAND');
    expect(res.hostNoDev.message).toMatch(/ip addr add 198\.18\.0\.1\/24 dev fsnodev0.*failed/);
    expect(res.hostBadAddr.code).toBe('EINVAL');
    for (const k of ['tooLong', 'badChars', 'busy', 'mqMismatch', 'notTun', 'badQueues', 'hostNoDev', 'hostBadAddr']) {
      oneLine(res[k]);
      expect(res[k].name).toBe('TunError');
    }
    expect(res.pattern.created).toBe(true);
    expect(res.pattern.name).toMatch(/^fs\d+$/);
    expect(res.leftover).toBe(false);
  });
});
