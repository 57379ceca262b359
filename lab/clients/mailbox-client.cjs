#!/usr/bin/env node
/**
 * The NLB lab's Outlook: a client of the sticky application (stack/services/mailbox.ts)
 * that keeps a session with the cluster while it is told to, from the address of the
 * network it is on, and reports every change of its state as Outlook's status bar
 * would: "trying to connect" and "connected".
 *
 * argv: SERVER PORT NAME. stdin, one command a line:
 *   connect ADDR     keep a session from ADDR (a refused or lost session is retried every RETRY ms)
 *   disconnect       end the session cleanly (the client leaves the service) and stop retrying
 *   quit
 * stdout, one JSON line per change:
 *   {"t": ms, "state": "trying", "from": ADDR}                       a connection attempt
 *   {"t": ms, "state": "connected", "host": N, "via": "ipsec"|"login"}
 *   {"t": ms, "state": "refused", "reason": "..."}                    the server said no
 *   {"t": ms, "state": "lost", "reason": "..."}                        the session broke
 *   {"t": ms, "state": "disconnected"}                                 after `disconnect`
 * While connected it sends PING every 250 ms and expects PONG from the same host.
 */
'use strict';
const net = require('net');
const readline = require('readline');

const [server, portText, name] = process.argv.slice(2);
const port = Number(portText || 6001);
const RETRY = 500;
let want = null;      // the address to keep a session from, or null
let sock = null;
let timer = null;
let pinger = null;
let host = null;

function out(o) { process.stdout.write(JSON.stringify({ t: Date.now(), ...o }) + '\n'); }

function stopSocket() {
  if (pinger) { clearInterval(pinger); pinger = null; }
  if (sock) { const s = sock; sock = null; s.removeAllListeners('close'); s.on('error', () => {}); s.end(); setTimeout(() => s.destroy(), 1000).unref(); }
}

function attempt() {
  timer = null;
  if (!want || sock) return;
  const from = want;
  out({ state: 'trying', from });
  const s = net.connect({ host: server, port, localAddress: from });
  sock = s;
  host = null;
  let buf = '';
  let done = false;
  const retry = (state, reason) => {
    if (done) return;
    done = true;
    if (sock === s) { sock = null; if (pinger) { clearInterval(pinger); pinger = null; } }
    s.destroy();
    if (want) out({ state, reason });
    if (want && !timer) timer = setTimeout(attempt, RETRY);
  };
  s.setTimeout(5000, () => retry(host === null ? 'lost' : 'lost', host === null ? 'no answer within 5 s' : 'no PONG within 5 s'));
  s.on('connect', () => s.write(`HELLO ${name}\n`));
  s.on('data', (d) => {
    buf += d.toString('utf8');
    let nl;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl).trim();
      buf = buf.slice(nl + 1);
      let m;
      if ((m = /^CONNECTED host=(\d+) identity=(\S+) via=(\S+)/.exec(line))) {
        host = Number(m[1]);
        out({ state: 'connected', host, identity: decodeURIComponent(m[2]), via: m[3], from });
        pinger = setInterval(() => { if (sock === s) s.write('PING\n'); }, 250);
      } else if ((m = /^REFUSED (.*)$/.exec(line))) {
        retry('refused', m[1]);
      } else if ((m = /^PONG host=(\d+)/.exec(line))) {
        if (Number(m[1]) !== host) retry('lost', `PONG from host ${m[1]}, not ${host}`);
      }
    }
  });
  s.on('error', (e) => retry('lost', e.code || e.message));
  s.on('close', () => retry('lost', 'closed by the server'));
}

readline.createInterface({ input: process.stdin }).on('line', (line) => {
  const [cmd, arg] = line.trim().split(/\s+/);
  if (cmd === 'connect') { want = arg; if (!sock && !timer) attempt(); }
  else if (cmd === 'disconnect') {
    want = null;
    if (timer) { clearTimeout(timer); timer = null; }
    const s = sock;
    if (pinger) { clearInterval(pinger); pinger = null; }
    sock = null;
    if (s) { s.removeAllListeners('close'); s.removeAllListeners('error'); s.on('error', () => {}); s.on('close', () => out({ state: 'disconnected' })); s.end(); setTimeout(() => s.destroy(), 2000).unref(); }
    else out({ state: 'disconnected' });
  } else if (cmd === 'quit') { want = null; stopSocket(); process.exit(0); }
});
process.stdin.on('end', () => process.exit(0));
