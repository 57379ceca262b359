/**
 * Summarises a V8 .cpuprofile (node --cpu-prof): self time per function, highest
 * first, with its share of the samples.
 *   node dist/bench/tools/cpuprofile-top.js FILE.cpuprofile [--top 25] [--by-file]
 * --by-file adds up self time per place instead: stack/tcp, drivers/tun, node:_http_server...
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseFlags } from '../../lab/flags';

interface Node {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
}
interface Profile {
  nodes: Node[];
  samples: number[];
  timeDeltas: number[];
}

export function topFunctions(file: string, top = 25, byFile = false): { name: string; selfPct: number; selfMs: number }[] {
  const p = JSON.parse(fs.readFileSync(file, 'utf8')) as Profile;
  const byId = new Map<number, Node>();
  for (const n of p.nodes) byId.set(n.id, n);
  const self = new Map<string, number>();
  let total = 0;
  for (let i = 0; i < p.samples.length; i++) {
    const n = byId.get(p.samples[i]!);
    if (!n) continue;
    const dt = p.timeDeltas[i] ?? 0;
    const cf = n.callFrame;
    const where = cf.url ? `${path.basename(cf.url)}:${cf.lineNumber + 1}` : '';
    const key = byFile ? fileGroup(cf.url, cf.functionName) : `${cf.functionName || '(anonymous)'} ${where}`.trim();
    self.set(key, (self.get(key) ?? 0) + dt);
    total += dt;
  }
  return [...self.entries()]
    .sort((a, b) => b[1] - a[1])
    .slice(0, top)
    .map(([name, us]) => ({ name, selfPct: (100 * us) / total, selfMs: us / 1000 }));
}

/** Where a sample's code lives: the stack's folders, Node's own modules, or V8/native. */
function fileGroup(url: string, fn: string): string {
  if (!url) return fn.startsWith('(') ? fn : '(native)';
  const m = /\/dist\/(stack\/[a-z]+|drivers\/[a-z]+|bench)\//.exec(url);
  if (m) return m[1]!;
  if (url.startsWith('node:')) return url.replace(/^node:(internal\/)?/, 'node:').split('/')[0]!;
  return path.basename(url);
}

if (require.main === module) {
  const { values: f, positionals } = parseFlags('cpuprofile-top', process.argv.slice(2), { top: { type: 'string' }, 'by-file': { type: 'boolean' } }, 1);
  const file = positionals[0];
  if (!file) throw new Error('usage: node dist/bench/tools/cpuprofile-top.js FILE.cpuprofile [--top N] [--by-file]');
  for (const r of topFunctions(file, Number(f.top ?? 25), f['by-file'] === true)) {
    console.log(`${r.selfPct.toFixed(1).padStart(5)}%  ${r.selfMs.toFixed(0).padStart(7)} ms  ${r.name}`);
  }
}
