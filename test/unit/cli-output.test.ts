/**
 * The CLI's output reaches a pipe whole: `faultstack stats --json | jq` during a SYN
 * flood prints hundreds of kilobytes (one row per half-open connection), more than a
 * pipe holds (64 KiB). A stand-in control server answers with such a reply.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { ControlServer } from '../../stack/control/server';
import { buildPrivate, type PrivateBuild } from '../helpers/build';

let build: PrivateBuild;
let server: ControlServer;
let sock: string;

const ROWS = 4000;
const bigStats = () => ({
  counters: { TcpInSegs: 1 },
  connections: Array.from({ length: ROWS }, (_, i) => ({
    state: 'SYN-RECEIVED',
    recvQ: 0,
    sendQ: 0,
    local: '198.18.0.2:5061',
    peer: `198.18.100.${i % 250}:${10000 + i}`,
  })),
});

beforeAll(async () => {
  build = buildPrivate(['bin/cli/main.js', 'bin/cli/commands/stats.js']);
  sock = path.join(build.root, 'ctl.sock');
  server = await ControlServer.start(sock, { stats: () => bigStats() });
}, 120_000);

afterAll(async () => {
  await server?.close();
  build?.remove();
});

it('stats --json into a pipe: every byte of a reply far larger than the pipe buffer arrives', async () => {
  const c = spawn(build.shim, ['stats', '--json', '--control', sock], { stdio: ['ignore', 'pipe', 'pipe'] });
  const chunks: Buffer[] = [];
  c.stdout.on('data', (d: Buffer) => chunks.push(d));
  // A slow reader: the pipe fills before the CLI is done writing.
  c.stdout.pause();
  setTimeout(() => c.stdout.resume(), 300);
  const code = await new Promise<number | null>((r) => c.on('close', r));
  const out = Buffer.concat(chunks).toString();
  expect(code).toBe(0);
  const whole = JSON.stringify(bigStats(), null, 2) + '\n';
  expect(whole.length).toBeGreaterThan(4 * 65536);
  expect(out.length).toBe(whole.length);
  const parsed = JSON.parse(out) as ReturnType<typeof bigStats>;
  expect(parsed.connections.length).toBe(ROWS);
  expect(fs.existsSync(sock)).toBe(true);
}, 30_000);
