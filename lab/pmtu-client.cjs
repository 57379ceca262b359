#!/usr/bin/env node
/**
 * The download client of the PMTU lab (lab/pmtu-lab.ts). Runs inside the
 * client namespace, which holds hundreds of client addresses, and downloads
 * `/bytes/N` from faultstack's HTTP service from whichever address a job names, so
 * every job is one destination as the stack sees it.
 *
 * Protocol: newline-delimited JSON on stdin, one job per line
 *   {"id": 7, "local": "198.19.1.7", "bytes": 100000, "stallMs": 3000}
 * and one result per line on stdout
 *   {"id": 7, "local": "198.19.1.7", "outcome": "ok" | "stalled" | "connect-failed" | "error",
 *    "connectMs": 0.4, "ms": 12.3, "bytes": 100000, "error": "..."}
 * "bytes" counts the body received. A job that connected but did not receive the
 * whole body within stallMs is "stalled" (the article's symptom: the connection
 * opens, then hangs); one that did not connect within stallMs is "connect-failed".
 * The process exits when stdin closes and every job has answered.
 */
'use strict';
const http = require('http');
const readline = require('readline');

const server = process.argv[2] || '198.18.0.2';
const port = Number(process.argv[3] || 80);
let running = 0;
let closing = false;

function finishIfIdle() {
  if (closing && running === 0) process.exit(0);
}

function job(j) {
  running++;
  const t0 = process.hrtime.bigint();
  const ms = () => Number(process.hrtime.bigint() - t0) / 1e6;
  let connectMs = -1;
  let bytes = 0;
  let done = false;
  const answer = (outcome, error) => {
    if (done) return;
    done = true;
    clearTimeout(timer);
    req.destroy();
    const r = { id: j.id, local: j.local, outcome, connectMs: connectMs < 0 ? null : Math.round(connectMs * 100) / 100, ms: Math.round(ms() * 100) / 100, bytes };
    if (error) r.error = error;
    process.stdout.write(JSON.stringify(r) + '\n');
    running--;
    finishIfIdle();
  };
  const req = http.get({ host: server, port, path: `/bytes/${j.bytes}`, localAddress: j.local, agent: false }, (res) => {
    if (res.statusCode !== 200) { answer('error', `HTTP ${res.statusCode}`); return; }
    res.on('data', (d) => { bytes += d.length; });
    res.on('end', () => answer(bytes === j.bytes ? 'ok' : 'error', bytes === j.bytes ? undefined : `short body ${bytes}`));
    res.on('error', (e) => answer('error', e.message));
  });
  req.on('socket', (s) => s.once('connect', () => { connectMs = ms(); }));
  req.on('error', (e) => answer(connectMs < 0 ? 'connect-failed' : 'error', e.message));
  const timer = setTimeout(() => answer(connectMs < 0 ? 'connect-failed' : 'stalled'), j.stallMs || 3000);
}

const rl = readline.createInterface({ input: process.stdin });
rl.on('line', (line) => {
  if (!line.trim()) return;
  let j;
  try { j = JSON.parse(line); } catch { process.stdout.write(JSON.stringify({ error: `bad job ${line}` }) + '\n'); return; }
  job(j);
});
rl.on('close', () => { closing = true; finishIfIdle(); });
