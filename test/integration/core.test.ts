/**
 * The core stack against real Linux peers: the kernel in a network namespace the
 * test creates talks to faultstack through a real TUN device, with its own TCP/IP
 * and stock tools (ping, curl, openssl, iperf3, tc, tshark).
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Lab, StackProcess, repoRoot } from '../../lab/lab';

const STACK = '198.18.0.2';
const clients = path.join(repoRoot(), 'lab', 'clients');
const fixtures = path.join(repoRoot(), 'test', 'integration', 'fixtures');
const MB10 = 10 * 1000 * 1000;

let lab: Lab;
let ns: string;
let stack: StackProcess;
let tmp: string;
let pcapFile: string;

beforeAll(async () => {
  lab = await Lab.create('core');
  ns = await lab.addNamespace('k');
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fs-core-'));
  pcapFile = path.join(tmp, 'core.pcap');
  const tun = lab.ifname('t');
  stack = await lab.startStack(
    ns,
    ['--tun', tun, '--addr', `${STACK}/24`, '--host-addr', '198.18.0.1/24', '--services', 'all', '--control', path.join(tmp, 'ctl.sock')],
    { env: { FAULTSTACK_CERT_DIR: path.join(tmp, 'certs') } },
  );
}, 60_000);

afterAll(async () => {
  await lab?.cleanup();
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

async function sh(cmd: string, timeoutMs = 60_000) {
  return lab.exec(ns, 'bash', ['-c', cmd], { timeoutMs });
}

describe('real Linux peer through a real TUN device', () => {
  test('ping answers, small and fragmented', async () => {
    const r = await sh(`ping -c 3 -i 0.2 -W 2 ${STACK}`);
    expect(r.stdout).toMatch(/3 packets transmitted, 3 received/);
    // 3000-byte echo: the kernel fragments the request, the stack reassembles and fragments the reply.
    const big = await sh(`ping -c 2 -i 0.2 -W 2 -s 3000 ${STACK}`);
    expect(big.stdout).toMatch(/2 packets transmitted, 2 received/);
  }, 30_000);

  test('10 MB each way with the kernel as client: SHA-256 intact', async () => {
    // The echo service returns every byte; the client hashes what it sent and what came back.
    const r = await lab.exec(ns, process.execPath, [path.join(clients, 'sha-peer.js'), 'client', STACK, '7', String(MB10)], { timeoutMs: 90_000 });
    const j = JSON.parse(r.stdout.trim().split('\n').pop()!);
    expect(j.error).toBeUndefined();
    expect(j.receivedBytes).toBe(MB10);
    expect(j.receivedSha).toBe(j.sentSha);
  }, 120_000);

  test('curl gets the status page and /bytes/N with the right size', async () => {
    const page = await sh(`curl -sS --max-time 10 http://${STACK}/`);
    expect(page.code).toBe(0);
    expect(page.stdout).toMatch(/faultstack/i);
    const bytes = await sh(`curl -sS --max-time 20 -o /dev/null -w '%{http_code} %{size_download}' http://${STACK}/bytes/1000000`);
    expect(bytes.stdout.trim()).toBe('200 1000000');
  }, 60_000);

  test('openssl s_client completes mutual TLS with node:tls on the stack', async () => {
    const certs = path.join(tmp, 'certs');
    const r = await sh(
      `(printf 'ping\\n'; sleep 1) | timeout 20 openssl s_client -connect ${STACK}:5061 -CAfile ${certs}/ca.pem ` +
        `-cert ${certs}/client.pem -key ${certs}/client.key -verify_return_error 2>&1`,
      30_000,
    );
    expect(r.stdout).toMatch(/Verify return code: 0 \(ok\)/);
    // The greeting names the client certificate; then the line we sent comes back.
    expect(r.stdout).toMatch(/hello faultstack-client[\s\S]*ping/);
  }, 60_000);

  test('UDP echo', async () => {
    const script = `
      const s = require('dgram').createSocket('udp4');
      const msg = Buffer.from('faultstack udp ' + Date.now());
      s.on('message', (m) => { console.log(m.equals(msg) ? 'same' : 'different'); process.exit(0); });
      s.send(msg, 7, '${STACK}');
      setTimeout(() => { console.log('timeout'); process.exit(1); }, 3000);`;
    const r = await lab.exec(ns, process.execPath, ['-e', script], { timeoutMs: 10_000 });
    expect(r.stdout.trim()).toBe('same');
  }, 20_000);

  test('iperf3 client: 3 s plain and reverse', async () => {
    for (const reverse of [false, true]) {
      const r = await sh(`iperf3 -c ${STACK} -t 3 -J ${reverse ? '-R' : ''}`, 60_000);
      expect(r.code, r.stdout + r.stderr).toBe(0);
      const j = JSON.parse(r.stdout);
      const bps = j.end.sum_received.bits_per_second as number;
      console.log(`iperf3 ${reverse ? 'stack->kernel (-R)' : 'kernel->stack'}: ${(bps / 1e9).toFixed(2)} Gbit/s`);
      expect(j.end.sum_received.bytes).toBeGreaterThan(1_000_000);
    }
  }, 90_000);

  test("a lossy link (faultstack's own impairment: 2% random loss both ways) still delivers 10 MB intact", async () => {
    const ctl = ['--control', stack.controlPath];
    const before = JSON.parse((await lab.cli(ns, ['stats', '--json', ...ctl])).stdout).counters;
    for (const dir of ['in', 'out']) {
      const add = await lab.cli(ns, ['impair', 'add', dir, 'loss', '2%', ...ctl]);
      expect(add.code, add.stderr).toBe(0);
    }
    try {
      const r = await lab.exec(ns, process.execPath, [path.join(clients, 'sha-peer.js'), 'client', STACK, '7', String(MB10)], { timeoutMs: 120_000 });
      const j = JSON.parse(r.stdout.trim().split('\n').pop() || '{}');
      expect(j.error, r.stdout + r.stderr).toBeUndefined();
      expect(j.receivedBytes).toBe(MB10);
      expect(j.receivedSha).toBe(j.sentSha);
      // Both directions really lost packets, and the stack really recovered some by retransmission.
      const rows = JSON.parse((await lab.cli(ns, ['impair', 'list', '--json', ...ctl])).stdout).impairments as {
        spec: string;
        counters: { dropped: number };
      }[];
      expect(rows).toHaveLength(2);
      for (const row of rows) expect(row.counters.dropped, row.spec).toBeGreaterThan(0);
      const c = JSON.parse((await lab.cli(ns, ['stats', '--json', ...ctl])).stdout).counters;
      expect(c.TcpRetransSegs).toBeGreaterThan(before.TcpRetransSegs);
      console.log(
        `lossy link via faultstack impair: dropped ${rows.map((x) => x.counters.dropped).join(' in, ')} out; the stack retransmitted ${c.TcpRetransSegs - before.TcpRetransSegs} segments`,
      );
    } finally {
      await lab.cli(ns, ['impair', 'clear', ...ctl]);
    }
  }, 150_000);

  // The same transfer with the loss inside the kernel (netem, or nftables where this
  // kernel has no sch_netem): the drops happen on the kernel's own path (its output hook
  // drops its segments, its input hook ours), which faultstack's impairment cannot show.
  test("kernel-side loss (2% both ways on the kernel's side of the TUN link) still delivers 10 MB intact", async () => {
    const loss = await lab.lossy(ns, stack.tun, 2);
    const before = JSON.parse((await lab.cli(ns, ['stats', '--json', '--control', stack.controlPath])).stdout).counters;
    try {
      const r = await lab.exec(ns, process.execPath, [path.join(clients, 'sha-peer.js'), 'client', STACK, '7', String(MB10)], { timeoutMs: 120_000 });
      const j = JSON.parse(r.stdout.trim().split('\n').pop() || '{}');
      expect(j.error, r.stdout + r.stderr).toBeUndefined();
      expect(j.receivedBytes).toBe(MB10);
      expect(j.receivedSha).toBe(j.sentSha);
      const c = JSON.parse((await lab.cli(ns, ['stats', '--json', '--control', stack.controlPath])).stdout).counters;
      // The link really lost packets, and the stack really recovered some by retransmission.
      expect(await loss.dropped()).toBeGreaterThan(0);
      expect(c.TcpRetransSegs).toBeGreaterThan(before.TcpRetransSegs);
      console.log(`lossy link via ${loss.method}: retransmitted ${c.TcpRetransSegs - before.TcpRetransSegs} segments`);
    } finally {
      await loss.undo();
    }
  }, 150_000);

  test('tshark finds no malformed packet and no bad checksum in the capture', async () => {
    // A stack of its own with --pcap, a traffic mix that exercises every protocol,
    // then tshark with checksum verification on over the whole capture.
    const ns3 = await lab.addNamespace('p');
    const p = await lab.startStack(ns3, [
      '--tun',
      lab.ifname('p'),
      '--addr',
      `${STACK}/24`,
      '--services',
      'echo,http',
      '--pcap',
      pcapFile,
      '--control',
      path.join(tmp, 'pcap.sock'),
    ]);
    await lab.exec(ns3, 'ping', ['-c', '3', '-i', '0.2', '-s', '2000', STACK]);
    await lab.exec(ns3, 'curl', ['-sS', '-o', '/dev/null', `http://${STACK}/bytes/2000000`]);
    const r = await lab.exec(ns3, process.execPath, [path.join(clients, 'sha-peer.js'), 'client', STACK, '7', '3000000'], { timeoutMs: 60_000 });
    expect(JSON.parse(r.stdout.trim().split('\n').pop()!).receivedBytes).toBe(3_000_000);
    await lab.exec(ns3, 'bash', ['-c', `echo hi | timeout 2 bash -c 'cat > /dev/udp/${STACK}/7'`]);
    await p.kill(5000); // SIGTERM: the capture is flushed and closed
    const total = await sh(`tshark -r ${pcapFile} 2>/dev/null | wc -l`);
    expect(Number(total.stdout.trim())).toBeGreaterThan(100);
    const protos = await sh(`tshark -r ${pcapFile} -T fields -e _ws.col.Protocol 2>/dev/null | sort -u`);
    for (const proto of ['ICMP', 'TCP', 'HTTP', 'ECHO']) expect(protos.stdout).toContain(proto);
    const udp = await sh(`tshark -r ${pcapFile} -Y udp 2>/dev/null | wc -l`);
    expect(Number(udp.stdout.trim())).toBeGreaterThan(0);
    const frags = await sh(`tshark -r ${pcapFile} -Y 'ip.flags.mf == 1' 2>/dev/null | wc -l`);
    expect(Number(frags.stdout.trim())).toBeGreaterThan(0);
    const bad = await sh(
      `tshark -r ${pcapFile} -o tcp.check_checksum:TRUE -o ip.check_checksum:TRUE -o udp.check_checksum:TRUE ` +
        `-Y '_ws.malformed || _ws.expert.severity >= error' 2>/dev/null | head -20`,
    );
    expect(bad.stdout.trim()).toBe('');
  }, 120_000);
});

describe('the stack as a client of a kernel server', () => {
  test('10 MB each way: SHA-256 intact', async () => {
    const ns2 = await lab.addNamespace('c');
    const server = lab.spawn(ns2, process.execPath, [path.join(clients, 'sha-peer.js'), 'server', '9000', String(MB10)]);
    const tun = lab.ifname('c');
    // The kernel side of the TUN link is the server's address.
    const started = lab.exec(
      ns2,
      process.execPath,
      [path.join(fixtures, 'stack-client.js'), tun, '198.18.0.2/24', '198.18.0.1/24', '198.18.0.1', '9000', String(MB10)],
      { timeoutMs: 120_000 },
    );
    await server.waitFor(/listening/, { timeoutMs: 10_000 });
    const r = await started;
    const client = JSON.parse(r.stdout.trim().split('\n').pop()!);
    const srv = JSON.parse((await server.waitFor(/\{.*receivedSha.*\}/, { timeoutMs: 30_000 }))[0]);
    expect(client.error).toBeUndefined();
    expect(srv.receivedBytes).toBe(MB10);
    expect(srv.receivedSha).toBe(client.sentSha);
    expect(client.receivedBytes).toBe(MB10);
    expect(client.receivedSha).toBe(srv.sentSha);
  }, 180_000);

  test('--busy-poll: ping and a SHA-checked echo work; with no traffic the stack sleeps again', async () => {
    const ns4 = await lab.addNamespace('bp');
    const p = await lab.startStack(ns4, [
      '--tun',
      lab.ifname('bp'),
      '--addr',
      `${STACK}/24`,
      '--services',
      'echo',
      '--busy-poll',
      '--control',
      path.join(tmp, 'bp.sock'),
    ]);
    try {
      const ping = await lab.exec(ns4, 'ping', ['-n', '-c', '20', '-i', '0.01', STACK]);
      expect(ping.stdout).toMatch(/20 received/);
      const r = await lab.exec(ns4, process.execPath, [path.join(clients, 'sha-peer.js'), 'client', STACK, '7', '1000000'], { timeoutMs: 60_000 });
      expect(JSON.parse(r.stdout.trim().split('\n').pop()!).receivedBytes).toBe(1_000_000);
      // The spinning stops 10 ms after the last packet: an idle second costs next to no CPU.
      await new Promise((res) => setTimeout(res, 300));
      const cpu = () => {
        const f = fs.readFileSync(`/proc/${p.pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
        return (Number(f[11]) + Number(f[12])) / 100;
      };
      const c0 = cpu();
      await new Promise((res) => setTimeout(res, 1000));
      expect(cpu() - c0).toBeLessThan(0.2);
    } finally {
      await p.kill(5000);
    }
  }, 60_000);
});
