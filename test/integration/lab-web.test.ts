/**
 * FAULTSTACK_LAB_WEB=1 (issue 15, "a benchmarker can scrape /metrics during make bench"):
 * every stack the lab starts, the benchmarks' included, serves /metrics inside its
 * namespace, and the lab says where. Here a stack started the way bench/ starts them is
 * scraped with curl from its namespace while iperf3 moves data, and the counters move.
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import parsePrometheus from 'parse-prometheus-text-format';
import { Lab, type StackProcess } from '../../lab/lab';

let lab: Lab;
let tmp: string;
let stack: StackProcess;
let ns: string;
const saved = process.env.FAULTSTACK_LAB_WEB;
const stderrLines: string[] = [];
const realWrite = process.stderr.write.bind(process.stderr);

beforeAll(async () => {
  lab = await Lab.create('lweb');
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fs-lweb-'));
  ns = await lab.addNamespace('k');
  process.env.FAULTSTACK_LAB_WEB = '1';
  process.stderr.write = ((chunk: string | Uint8Array, ...rest: unknown[]) => {
    stderrLines.push(String(chunk));
    return (realWrite as (c: string | Uint8Array, ...r: unknown[]) => boolean)(chunk, ...rest);
  }) as typeof process.stderr.write;
  try {
    stack = await lab.startStack(ns, [
      '--tun',
      lab.ifname('t0'),
      '--addr',
      '198.18.0.2/24',
      '--host-addr',
      '198.18.0.1/24',
      '--services',
      'iperf3',
      '--control',
      path.join(tmp, 'ctl.sock'),
    ]);
  } finally {
    process.stderr.write = realWrite;
    if (saved === undefined) delete process.env.FAULTSTACK_LAB_WEB;
    else process.env.FAULTSTACK_LAB_WEB = saved;
  }
}, 60_000);

afterAll(async () => {
  await lab?.cleanup();
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

type Family = { name: string; metrics: { value: string }[] };

async function scrape(url: string): Promise<Map<string, number>> {
  const r = await lab.exec(ns, 'curl', ['-sS', '--max-time', '5', url], { timeoutMs: 10_000 });
  expect(r.code, r.stderr).toBe(0);
  const families = parsePrometheus(r.stdout) as Family[];
  return new Map(families.map((f) => [f.name, Number(f.metrics[0]?.value ?? NaN)]));
}

describe('FAULTSTACK_LAB_WEB=1', () => {
  test('a lab stack serves /metrics in its namespace, the lab says where, and the counters move under iperf3', async () => {
    expect(stack.readyLine).toMatch(/\bweb http:\/\/127\.0\.0\.1:\d+/);
    const said = stderrLines.join('').match(/metrics at (http:\/\/127\.0\.0\.1:\d+\/metrics)/);
    expect(said, stderrLines.join('')).not.toBeNull();
    const url = said![1]!;
    const before = await scrape(url);
    expect(before.get('faultstack_TcpInSegs')).toBeGreaterThanOrEqual(0);
    const run = await lab.exec(ns, 'iperf3', ['-c', '198.18.0.2', '-t', '1', '-J'], { timeoutMs: 30_000 });
    expect(run.code, run.stderr).toBe(0);
    const j = JSON.parse(run.stdout) as { error?: string; end?: { sum_received?: { bytes: number } } };
    expect(j.error).toBeUndefined();
    expect(j.end?.sum_received?.bytes ?? 0).toBeGreaterThan(1_000_000);
    const after = await scrape(url);
    expect(after.get('faultstack_TcpInSegs')! - before.get('faultstack_TcpInSegs')!).toBeGreaterThan(100);
  }, 60_000);
});
