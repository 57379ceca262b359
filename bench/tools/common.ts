/**
 * Small helpers shared by the benchmark tools (processes the bench runner starts
 * inside lab namespaces): flag parsing, JSON lines on stdout, commands on stdin.
 */
import * as readline from 'node:readline';
import { fullGc } from '../../stack/runtime/memory';
import { parseFlags } from '../../lab/flags';

/**
 * The tool's flags (lab/flags.ts: node's parseArgs, strict): `strings` take a value,
 * `switches` none (present: 'true'). A flag the tool does not know is an error.
 */
export function flags(tool: string, argv: readonly string[], strings: readonly string[], switches: readonly string[] = []): Map<string, string> {
  const options: Record<string, { type: 'string' | 'boolean' }> = {};
  for (const n of strings) options[n] = { type: 'string' };
  for (const n of switches) options[n] = { type: 'boolean' };
  const { values } = parseFlags(tool, argv, options);
  return new Map(
    Object.entries(values)
      .filter(([, v]) => v !== undefined && v !== false)
      .map(([k, v]) => [k, String(v)]),
  );
}

export function say(obj: Record<string, unknown>): void {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

/** Heap and RSS after two full collections: what live objects cost, not garbage. */
export function memoryAfterGc(): { heapUsed: number; rss: number; external: number; arrayBuffers: number } {
  fullGc();
  const m = process.memoryUsage();
  return { heapUsed: m.heapUsed, rss: m.rss, external: m.external, arrayBuffers: m.arrayBuffers };
}

/**
 * One JSON command per stdin line ({"cmd": "..."}); the handler's result is printed as
 * one JSON line with the same `id`. EOF on stdin ends the process (the runner died).
 */
export function serveCommands(
  handler: (cmd: Record<string, unknown>) => Promise<Record<string, unknown>> | Record<string, unknown>,
  onEof: () => Promise<void> | void,
): void {
  const rl = readline.createInterface({ input: process.stdin });
  rl.on('line', (line) => {
    let cmd: Record<string, unknown>;
    try {
      cmd = JSON.parse(line) as Record<string, unknown>;
    } catch {
      say({ error: `bad command line: ${line}` });
      return;
    }
    Promise.resolve()
      .then(() => handler(cmd))
      .then((r) => say({ id: cmd.id ?? null, ...r }))
      .catch((e: Error) => say({ id: cmd.id ?? null, error: e.message }));
  });
  rl.on('close', () => {
    void Promise.resolve(onEof()).finally(() => process.exit(0));
  });
}

/** Counters from /proc/net/snmp and /proc/net/netstat of the current namespace, as "Tcp.InSegs" etc. */
export function kernelCounters(): Record<string, number> {
  const out: Record<string, number> = {};
  const fs = require('node:fs') as typeof import('node:fs');
  for (const f of ['/proc/net/snmp', '/proc/net/netstat']) {
    const lines = fs.readFileSync(f, 'utf8').trim().split('\n');
    for (let i = 0; i + 1 < lines.length; i += 2) {
      const h = lines[i]!.split(/\s+/);
      const v = lines[i + 1]!.split(/\s+/);
      const pre = h[0]!.replace(/:$/, '');
      for (let k = 1; k < h.length; k++) out[`${pre}.${h[k]}`] = Number(v[k]);
    }
  }
  return out;
}
