/**
 * TCP request/response latency: one connection to an echo server, `count` round
 * trips of `size` bytes, one at a time (the next request leaves when the whole
 * answer is back). Prints {"p50Us","p99Us","meanUs","count"} on stdout.
 *   node dist/bench/tools/rr-client.js --host 198.18.0.2 [--port 7] [--count 5000] [--size 64] [--warmup 200]
 */
import * as net from 'node:net';
import { flags, say } from './common';

function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

async function main(): Promise<void> {
  const f = flags('rr-client', process.argv.slice(2), ['host', 'port', 'count', 'warmup', 'size']);
  const host = f.get('host') ?? '198.18.0.2';
  const port = Number(f.get('port') ?? 7);
  const count = Number(f.get('count') ?? 5000);
  const warmup = Number(f.get('warmup') ?? 200);
  const size = Number(f.get('size') ?? 64);
  const sock = net.connect({ host, port });
  sock.setNoDelay(true);
  await new Promise<void>((res, rej) => {
    sock.once('connect', res);
    sock.once('error', rej);
  });
  const req = Buffer.alloc(size, 0x61);
  const samples = new Float64Array(count);
  let got = 0;
  let i = -warmup;
  let t0 = 0n;
  await new Promise<void>((resolve, reject) => {
    sock.on('error', reject);
    const send = () => {
      t0 = process.hrtime.bigint();
      sock.write(req);
    };
    sock.on('data', (d: Buffer) => {
      got += d.length;
      if (got < size) return;
      got -= size;
      const dt = Number(process.hrtime.bigint() - t0) / 1000;
      if (i >= 0) samples[i] = dt;
      i++;
      if (i >= count) {
        resolve();
        return;
      }
      send();
    });
    send();
  });
  sock.destroy();
  samples.sort();
  let sum = 0;
  for (const s of samples) sum += s;
  say({ count, size, p50Us: percentile(samples, 50), p99Us: percentile(samples, 99), meanUs: sum / count });
}

main().catch((e: Error) => {
  say({ error: e.message });
  process.exit(1);
});
