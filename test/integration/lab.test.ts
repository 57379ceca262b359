/**
 * The lab harness itself, against the real kernel: namespaces, veth, real ping,
 * netem, sysctl, process-group kills, startStack, and cleanup that leaves nothing
 * behind (also on process exit and after a SIGKILL). Needs root.
 */
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PrivateBuild, buildPrivate } from '../helpers/build';
import { Lab, StackStartError } from '../../lab/lab';
import { requireTool } from '../../lab/tools';

function netnsList(): string[] {
  const r = spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' });
  return r.stdout
    .split('\n')
    .map((l) => l.split(' ')[0]!)
    .filter(Boolean);
}

function rootLinks(): string[] {
  const r = spawnSync('ip', ['-o', 'link', 'show'], { encoding: 'utf8' });
  return r.stdout
    .split('\n')
    .map((l) => /^\d+:\s+([^:@\s]+)/.exec(l)?.[1])
    .filter((x): x is string => !!x);
}

/** Running (a zombie waiting for its reaper is not). */
function alive(pid: number): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return !/^[ZX]/.test(stat.slice(stat.lastIndexOf(')') + 2));
  } catch {
    return false;
  }
}

beforeAll(() => {
  requireTool('ping', 'iputils-ping');
  requireTool('tc', 'iproute2');
});

describe('Lab', () => {
  let lab: Lab;
  let tmp = '';

  beforeAll(async () => {
    lab = await Lab.create('t');
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fs-labtest-'));
  });

  afterAll(async () => {
    await lab?.cleanup();
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  it('names itself within ifname limits', () => {
    expect(lab.id).toMatch(/^fst\d{1,4}[0-9a-z]{2}$/);
    expect(lab.id.length).toBeLessThanOrEqual(11);
    expect(lab.ifname('t0').length).toBeLessThanOrEqual(15);
    expect(() => lab.ifname('waytoolong')).toThrow(/longer than 15/);
  });

  it('joins two namespaces with a veth pair and real ping crosses it', async () => {
    const a = await lab.addNamespace('a');
    const b = await lab.addNamespace('b');
    expect(netnsList()).toEqual(expect.arrayContaining([a, b]));
    const { devA, devB } = await lab.veth('a', 'b', { addrA: '198.18.1.1/24', addrB: '198.18.1.2/24', mtu: 1400 });
    expect(await lab.ip('a', 'link', 'show', devA)).toMatch(/mtu 1400 .*state UP/);
    expect(await lab.ip(b, '-4', 'addr', 'show', devB)).toContain('198.18.1.2/24');
    // The pair lives only inside the namespaces.
    expect(rootLinks().filter((l) => l.startsWith(lab.id))).toEqual([]);
    const r = await lab.exec('a', 'ping', ['-c', '3', '-i', '0.2', '-W', '2', '198.18.1.2'], { timeoutMs: 15_000 });
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/3 packets transmitted, 3 received/);
    // A Linux router in a third namespace: ping across two hops.
    await lab.addNamespace('c');
    await lab.veth('b', 'c', { addrA: '198.18.2.1/24', addrB: '198.18.2.2/24' });
    await lab.sysctl('b', 'net.ipv4.ip_forward', 1);
    expect((await lab.exec('b', 'cat', ['/proc/sys/net/ipv4/ip_forward'])).stdout.trim()).toBe('1');
    await lab.ip('a', 'route', 'add', '198.18.2.0/24', 'via', '198.18.1.2');
    await lab.ip('c', 'route', 'add', '198.18.1.0/24', 'via', '198.18.2.1');
    const hop = await lab.exec('a', 'ping', ['-c', '2', '-i', '0.2', '-W', '2', '198.18.2.2'], { timeoutMs: 15_000 });
    expect(hop.stdout).toMatch(/2 received/);
    expect(hop.stdout).toMatch(/ttl=63/);
  });

  // The kernel decides which half runs (many VM kernels ship without sch_netem, which the
  // project supports: faultstack impairs its own traffic and Lab.lossy falls back to
  // nftables); the test says which one it checked.
  it('netem shapes a link where the kernel has sch_netem, and the lab says so plainly where it has not', async () => {
    await lab.addNamespace('n1');
    await lab.addNamespace('n2');
    const { devA } = await lab.veth('n1', 'n2', { addrA: '198.18.3.1/24', addrB: '198.18.3.2/24' });
    if (Lab.netemAvailable()) {
      console.log('sch_netem present: checking that a 60 ms delay shapes the link');
      await lab.netem('n1', devA, 'delay 60ms');
      const r = await lab.exec('n1', 'ping', ['-c', '2', '-i', '0.2', '-W', '2', '198.18.3.2'], { timeoutMs: 15_000 });
      const avg = Number(/= [\d.]+\/([\d.]+)\//.exec(r.stdout)?.[1]);
      expect(avg).toBeGreaterThanOrEqual(60);
      await expect(lab.netem('n1', 'nosuchdev', 'delay 1ms')).rejects.toThrow(/tc qdisc replace dev nosuchdev root netem delay 1ms failed/);
    } else {
      console.log('no sch_netem in this kernel: checking the error the lab gives');
      await expect(lab.netem('n1', devA, 'delay 60ms')).rejects.toThrow(
        `netem is not available in this kernel (sch_netem is neither built in nor loadable): tc qdisc replace dev ${devA} root netem delay 60ms`,
      );
    }
  });

  it('execs with input, exit codes and output; rejects unknown namespaces', async () => {
    const r = await lab.exec('a', 'sh', ['-c', 'cat; echo err >&2; exit 3'], { input: 'hello' });
    expect(r).toMatchObject({ code: 3, signal: null, stdout: 'hello', stderr: 'err\n', timedOut: false });
    await expect(lab.exec('a', 'false', [], { check: true })).rejects.toThrow(/false: exit 1/);
    await expect(lab.exec('zz', 'true')).rejects.toThrow('namespace "zz" was not created by lab');
    const here = await lab.exec('a', 'ip', ['-o', 'link']);
    expect(here.stdout).not.toMatch(/eth0|ens|enp/);
  });

  it('kills the whole process group when exec times out', async () => {
    const marker = `fslabsleep${process.pid}`;
    const r = await lab.exec('a', 'sh', ['-c', `exec -a ${marker} sleep 300 & sleep 300; wait`], { timeoutMs: 500 });
    expect(r.timedOut).toBe(true);
    const left = spawnSync('pgrep', ['-f', marker], { encoding: 'utf8' });
    expect(left.stdout.trim()).toBe('');
  });

  it('spawns, waits for output, and kills a process group', async () => {
    const p = lab.spawn('a', 'sh', ['-c', 'echo starting; sleep 0.2; echo "listening on 5201"; sleep 300 & sleep 300']);
    const m = await p.waitFor(/listening on (\d+)/);
    expect(m[1]).toBe('5201');
    expect(p.running).toBe(true);
    const pid = p.pid;
    const exit = await p.kill(2000);
    expect(exit.signal).toBe('SIGTERM');
    expect(alive(pid)).toBe(false);
    expect(spawnSync('ip', ['netns', 'pids', lab.ns('a')], { encoding: 'utf8' }).stdout.trim()).toBe('');
  });

  it('escalates to SIGKILL when SIGTERM is ignored', async () => {
    const p = lab.spawn('a', 'sh', ['-c', 'trap "" TERM; echo up; while :; do sleep 0.05; done']);
    await p.waitFor(/up/);
    const t0 = Date.now();
    const exit = await p.kill(400);
    expect(exit.signal).toBe('SIGKILL');
    expect(Date.now() - t0).toBeLessThan(3000);
  });

  it('waitFor rejects with the output on exit and on timeout', async () => {
    const p = lab.spawn('a', 'sh', ['-c', 'echo one; echo two >&2; exit 4']);
    await expect(p.waitFor(/never/)).rejects.toThrow(
      /exited \(code 4\) before printing \/never\/; output:\none\ntwo|exited \(code 4\) before printing \/never\/; output:\ntwo\none/,
    );
    const q = lab.spawn('a', 'sleep', ['300']);
    await expect(q.waitFor(/never/, { timeoutMs: 200 })).rejects.toThrow(/no \/never\/ within 0.2 s/);
    await q.kill();
  });

  it('startStack resolves on the ready line, rejects with the output on exit or timeout', async () => {
    const script = (body: string) => {
      const f = path.join(tmp, `cli${Math.random().toString(36).slice(2)}.js`);
      fs.writeFileSync(f, body);
      return f;
    };
    const prev = process.env.FAULTSTACK_CLI;
    try {
      process.env.FAULTSTACK_CLI = script(
        `console.error('args ' + process.argv.slice(2).join(' ')); console.log('stack ready on fs9'); setInterval(() => {}, 1000);`,
      );
      const s = await lab.startStack('a', ['--tun', 'fsx9', '--addr', '198.18.9.2/24']);
      expect(s.readyLine).toBe('stack ready on fs9');
      expect(s.tun).toBe('fsx9');
      expect(s.controlPath).toBe(path.join(process.env.FAULTSTACK_RUN_DIR ?? '/run/faultstack', 'fsx9.sock'));
      expect(s.output).toContain('args run --tun fsx9 --addr 198.18.9.2/24');
      await s.kill();

      process.env.FAULTSTACK_CLI = script(`console.error('faultstack: cannot open /dev/net/tun'); process.exit(1);`);
      const err = await lab.startStack('a', ['--addr', '198.18.9.2/24']).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(StackStartError);
      expect((err as StackStartError).message).toMatch(/did not become ready: .*exited \(code 1\).*\nfaultstack: cannot open \/dev\/net\/tun/s);
      expect((err as StackStartError).output).toBe('faultstack: cannot open /dev/net/tun\n');

      process.env.FAULTSTACK_CLI = script(`console.log('starting slowly'); setInterval(() => {}, 1000);`);
      const t0 = Date.now();
      const slow = await lab.startStack('a', ['--addr', '198.18.9.2/24'], { timeoutMs: 500 }).catch((e: unknown) => e);
      expect(slow).toBeInstanceOf(StackStartError);
      expect((slow as StackStartError).message).toMatch(/no .*ready.* within 0.5 s; output:\nstarting slowly/);
      expect(Date.now() - t0).toBeLessThan(5000);
      expect(spawnSync('ip', ['netns', 'pids', lab.ns('a')], { encoding: 'utf8' }).stdout.trim()).toBe('');
    } finally {
      if (prev === undefined) delete process.env.FAULTSTACK_CLI;
      else process.env.FAULTSTACK_CLI = prev;
    }
  });
});

describe('Lab cleanup', () => {
  it('removes namespaces, devices and every process, including strays; idempotent', async () => {
    const lab = await Lab.create('c');
    const ns = await lab.addNamespace('x');
    await lab.addNamespace('y');
    await lab.veth('x', 'y', { addrA: '198.18.4.1/24', addrB: '198.18.4.2/24' });
    // A veth end in the root namespace (no address, no traffic) must go too.
    const { devA } = await lab.veth(null, 'y');
    expect(rootLinks()).toContain(devA);
    const p = lab.spawn('x', 'sleep', ['300']);
    // A stray that left our process group: only `ip netns pids` finds it.
    await lab.exec('x', 'sh', ['-c', 'setsid sleep 300 > /dev/null 2>&1 < /dev/null & sleep 0.3']);
    const strays = spawnSync('ip', ['netns', 'pids', ns], { encoding: 'utf8' }).stdout.trim().split(/\s+/).map(Number);
    expect(strays.length).toBe(2);
    await lab.cleanup();
    await lab.cleanup();
    expect(netnsList().filter((n) => n.startsWith(lab.id))).toEqual([]);
    expect(rootLinks().filter((l) => l.startsWith(lab.id))).toEqual([]);
    expect(p.running).toBe(false);
    for (const pid of strays) expect(alive(pid)).toBe(false);
    expect(lab.leftovers()).toEqual([]);
    await expect(lab.addNamespace('z')).rejects.toThrow(/cleaned up/);
    expect(fs.existsSync(`/run/faultstack-lab/${lab.id}.json`)).toBe(false);
  });
});

describe('Lab in another process', () => {
  let build: PrivateBuild;

  beforeAll(() => {
    build = buildPrivate(['lab/lab.js']);
  }, 120_000);

  afterAll(() => build?.remove());

  const child = (body: string) =>
    spawn(
      process.execPath,
      [
        '-e',
        `
    const { Lab } = require(${JSON.stringify(path.join('PLACEHOLDER', 'lab/lab.js'))});
    (async () => { ${body} })().catch((e) => { console.error(e); process.exit(9); });
  `.replace('PLACEHOLDER', build.dist),
      ],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );

  const readLine = (c: ReturnType<typeof spawn>) =>
    new Promise<string>((resolve) => {
      let buf = '';
      c.stdout!.on('data', (d) => {
        buf += d;
        if (buf.includes('\n')) resolve(buf.trim());
      });
    });

  it('cleans up when the process exits without calling cleanup()', async () => {
    const c = child(`
      const lab = await Lab.create('e');
      const ns = await lab.addNamespace('x');
      const p = lab.spawn('x', 'sleep', ['300']);
      await new Promise((r) => setTimeout(r, 100));
      console.log(JSON.stringify({ ns, pid: p.pid }));
      process.exit(0);
    `);
    const info = JSON.parse(await readLine(c)) as { ns: string; pid: number };
    await new Promise((r) => c.once('exit', r));
    expect(netnsList()).not.toContain(info.ns);
    expect(alive(info.pid)).toBe(false);
  });

  it('cleans up on SIGTERM', async () => {
    const c = child(`
      const lab = await Lab.create('s');
      const ns = await lab.addNamespace('x');
      console.log(JSON.stringify({ ns }));
      setInterval(() => {}, 1000);
    `);
    const info = JSON.parse(await readLine(c)) as { ns: string };
    c.kill('SIGTERM');
    const [, sig] = await new Promise<[number | null, string | null]>((r) => c.once('exit', (code, s) => r([code, s])));
    expect(sig).toBe('SIGTERM');
    expect(netnsList()).not.toContain(info.ns);
  });

  it('a later lab sweeps what a SIGKILLed one left', async () => {
    const c = child(`
      const lab = await Lab.create('k');
      const ns = await lab.addNamespace('x');
      const p = lab.spawn('x', 'sleep', ['300']);
      await new Promise((r) => setTimeout(r, 100));
      console.log(JSON.stringify({ ns, pid: p.pid }));
      setInterval(() => {}, 1000);
    `);
    const info = JSON.parse(await readLine(c)) as { ns: string; pid: number };
    c.kill('SIGKILL');
    await new Promise((r) => c.once('exit', r));
    expect(netnsList()).toContain(info.ns);
    expect(alive(info.pid)).toBe(true);
    expect(Lab.sweepStale()).toContain(info.ns);
    expect(netnsList()).not.toContain(info.ns);
    expect(alive(info.pid)).toBe(false);
  });
});
