#!/usr/bin/env node
/**
 * A stand-in for the faultstack CLI, for testing the lab and the demo without the
 * userspace stack: `run` serves the demo's services from the KERNEL inside the
 * namespace it runs in (the --addr address on lo; TCP and UDP echo on 7, HTTP on 80
 * with /bytes/N, `iperf3 -s`) plus a real ControlServer answering `stats`, then
 * prints a ready line. With `--tap NAME --bridge BR` the address goes on the bridge
 * (created when absent) instead, so that hosts on the bridge reach the kernel's
 * services as they would reach a stack's TAP port. Every other command goes to the real CLI.
 *
 * Use as FAULTSTACK_CLI=test/lab/fake-stack.cjs with
 *   FAKE_DIST      a compiled dist/ (for ControlServer and the real CLI)
 *   FAKE_FAIL=1    `run` fails at startup the way a stack without a TUN device would
 * Only ever run inside a lab namespace: it adds an address to that namespace's lo.
 */
'use strict';
const { spawn, execFileSync } = require('child_process');
const path = require('path');
const net = require('net');
const dgram = require('dgram');
const http = require('http');

const dist = process.env.FAKE_DIST;
if (!dist) {
  process.stderr.write('fake-stack: FAKE_DIST is not set\n');
  process.exit(1);
}
const argv = process.argv.slice(2);
if (argv[0] !== 'run') {
  require(path.join(dist, 'bin/cli/main.js')).cli(argv);
} else {
  run(argv.slice(1)).catch((e) => {
    process.stderr.write(`fake-stack: ${e.message}\n`);
    process.exit(1);
  });
}

function flag(args, name, dflt) {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : dflt;
}

async function run(args) {
  if (process.env.FAKE_FAIL === '1') {
    process.stderr.write('faultstack: cannot start the stack on fsdemo0: /dev/net/tun: No such device (fake)\n');
    process.exit(1);
  }
  const addr = flag(args, 'addr', '').split('/')[0];
  if (!/^198\.1[89]\./.test(addr)) throw new Error(`refusing address ${addr}: lab addresses are in 198.18.0.0/15`);
  const tun = flag(args, 'tap', flag(args, 'tun', 'fs0'));
  const runDir = process.env.FAULTSTACK_RUN_DIR || '/run/faultstack';
  const control = flag(args, 'control', path.join(runDir, `${tun}.sock`));
  const bridge = flag(args, 'bridge', '');
  if (bridge) {
    try { execFileSync('ip', ['link', 'show', 'dev', bridge], { stdio: 'ignore' }); } catch { execFileSync('ip', ['link', 'add', 'name', bridge, 'type', 'bridge']); }
    execFileSync('ip', ['addr', 'add', flag(args, 'addr', ''), 'dev', bridge]);
    execFileSync('ip', ['link', 'set', 'dev', bridge, 'up']);
  } else {
    execFileSync('ip', ['addr', 'add', `${addr}/32`, 'dev', 'lo']);
  }

  const closers = [];
  const tcp = net.createServer((s) => { s.on('error', () => {}); s.pipe(s); });
  await new Promise((r) => tcp.listen(7, addr, r));
  closers.push(() => tcp.close());

  const udp = dgram.createSocket('udp4');
  udp.on('message', (m, from) => udp.send(m, from.port, from.address));
  await new Promise((r) => udp.bind(7, addr, r));
  closers.push(() => udp.close());

  const web = http.createServer((req, res) => {
    const m = /^\/bytes\/(\d+)$/.exec(req.url || '');
    const body = m ? Buffer.alloc(Number(m[1]), 'x') : Buffer.from('<h1>fake faultstack</h1>\n');
    res.writeHead(200, { 'content-length': body.length, 'content-type': m ? 'application/octet-stream' : 'text/html' });
    res.end(body);
  });
  await new Promise((r) => web.listen(80, addr, r));
  closers.push(() => web.close());

  const iperf = spawn('iperf3', ['-s', '-B', addr], { stdio: ['ignore', 'pipe', 'pipe'] });
  closers.push(() => iperf.kill('SIGKILL'));
  // iperf3 block-buffers its banner into a pipe: poll its port instead.
  let iperfExit = null;
  iperf.on('exit', (c) => { iperfExit = c; });
  for (let i = 0; ; i++) {
    if (iperfExit !== null) throw new Error(`iperf3 -s exited ${iperfExit}`);
    if (i > 100) throw new Error('iperf3 -s is not listening after 5 s');
    const up = await new Promise((r) => {
      const c = net.connect({ host: addr, port: 5201 }, () => { c.destroy(); r(true); });
      c.on('error', () => r(false));
    });
    if (up) break;
    await new Promise((r) => setTimeout(r, 50));
  }

  const { ControlServer } = require(path.join(dist, 'stack/control/server.js'));
  const started = Date.now();
  const server = await ControlServer.start(control, {
    stats: () => ({
      tun, addr: `${addr}/24`, uptimeMs: Date.now() - started,
      counters: { tcp: { accepted: 3, resets: 0 }, udp: { datagrams: 20 } },
      connections: [{ state: 'LISTEN', recvQ: 0, sendQ: 0, local: `${addr}:7`, peer: '0.0.0.0:*' }],
      lock: { name: 'tcp-connection-table', held: false },
      faults: { 297040: 'off', 903927: 'off' },
    }),
  });
  closers.push(() => server.close());

  const stop = async () => {
    for (const c of closers.reverse()) { try { await c(); } catch { /* best effort */ } }
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  process.stdout.write(`fake faultstack ready: ${addr} (kernel services), control ${control}\n`);
}
