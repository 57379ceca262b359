/**
 * Small helpers shared by the benchmark tools (processes the bench runner starts
 * inside lab namespaces): flag parsing, JSON lines on stdout, commands on stdin.
 */
import * as readline from 'node:readline';
import { fullGc } from '../../stack/runtime/memory';

export function flags(argv: readonly string[]): Map<string, string> {
  const m = new Map<string, string>();
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (!a.startsWith('--')) continue;
    const eq = a.indexOf('=');
    if (eq > 0) m.set(a.slice(2, eq), a.slice(eq + 1));
    else if (i + 1 < argv.length && !argv[i + 1]!.startsWith('--')) m.set(a.slice(2), argv[++i]!);
    else m.set(a.slice(2), 'true');
  }
  return m;
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
export function serveCommands(handler: (cmd: Record<string, unknown>) => Promise<Record<string, unknown>> | Record<string, unknown>, onEof: () => Promise<void> | void): void {
  const rl = readline.createInterface({ input: process.stdin });
  rl.on('line', (line) => {
    let cmd: Record<string, unknown>;
    try { cmd = JSON.parse(line) as Record<string, unknown>; } catch { say({ error: `bad command line: ${line}` }); return; }
    Promise.resolve()
      .then(() => handler(cmd))
      .then((r) => say({ id: cmd.id ?? null, ...r }))
      .catch((e: Error) => say({ id: cmd.id ?? null, error: e.message }));
  });
  rl.on('close', () => { void Promise.resolve(onEof()).finally(() => process.exit(0)); });
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
