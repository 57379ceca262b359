import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { afterEach, describe, expect, it } from 'vitest';
import { EventKind, EventLog, logConfigChanges, type FaultEvent } from '../../stack/faults/events';
import { FaultConfig } from '../../stack/faults/config';

const tmpDirs: string[] = [];
function tmpFile(name: string): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'fs-events-'));
  tmpDirs.push(d);
  return path.join(d, name);
}
afterEach(() => {
  for (const d of tmpDirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});

function readLines(file: string): FaultEvent[] {
  return fs
    .readFileSync(file, 'utf8')
    .split('\n')
    .filter((l) => l.length > 0)
    .map((l) => JSON.parse(l) as FaultEvent);
}

describe('EventLog', () => {
  it('stamps seq and ISO wall time', () => {
    let t = Date.parse('2026-01-02T03:04:05.000Z');
    const log = new EventLog({ now: () => new Date((t += 1000)) });
    const a = log.emit({
      kind: EventKind.SynProtectionTriggered,
      fault: 'kb903927',
      message: 'half-open over limit',
      data: { threshold: 'TcpMaxHalfOpen', value: 501, limit: 500 },
    });
    const b = log.emit({ kind: EventKind.SynProtectionCleared, message: 'back under limits' });
    expect(a).toEqual({
      seq: 1,
      ts: '2026-01-02T03:04:06.000Z',
      fault: 'kb903927',
      kind: 'syn-protection-triggered',
      message: 'half-open over limit',
      data: { threshold: 'TcpMaxHalfOpen', value: 501, limit: 500 },
    });
    expect(b.seq).toBe(2);
    expect(b.ts).toBe('2026-01-02T03:04:07.000Z');
    expect('fault' in b).toBe(false);
    expect(log.lastSeq).toBe(2);
  });

  it("defines the event kinds in the articles' terms", () => {
    expect(Object.values(EventKind)).toEqual(
      expect.arrayContaining([
        'syn-protection-triggered',
        'syn-protection-cleared',
        'backlog-reset',
        'leak-retained',
        'lock-taken-not-released',
        'lock-released',
        'hostroute-limit-reached',
        'icmp-ignored-at-limit',
        'fault-mode-changed',
        'param-changed',
      ]),
    );
  });

  it('keeps a bounded ring; recent(n) is oldest first', () => {
    const log = new EventLog({ capacity: 5 });
    for (let i = 1; i <= 12; i++) log.emit({ kind: 'k', message: `m${i}` });
    expect(log.size).toBe(5);
    expect(log.recent().map((e) => e.seq)).toEqual([8, 9, 10, 11, 12]);
    expect(log.recent(2).map((e) => e.message)).toEqual(['m11', 'm12']);
    expect(log.recent(100).length).toBe(5);
    expect(log.recent(0)).toEqual([]);
    expect(log.since(10).map((e) => e.seq)).toEqual([11, 12]);
    expect(log.since(1).map((e) => e.seq)).toEqual([8, 9, 10, 11, 12]); // older ones are gone
    expect(() => new EventLog({ capacity: 0 })).toThrow(RangeError);
  });

  it('holds 10,000 events by default', () => {
    const log = new EventLog();
    expect(log.capacity).toBe(10_000);
    for (let i = 0; i < 10_050; i++) log.emit({ kind: 'k', message: '' });
    expect(log.size).toBe(10_000);
    expect(log.recent(1)[0].seq).toBe(10_050);
    expect(log.recent()[0].seq).toBe(51);
  });

  it('pushes events to subscribers until they unsubscribe; a throwing subscriber is isolated', () => {
    const log = new EventLog();
    const got: string[] = [];
    const off = log.subscribe((e) => got.push(e.message));
    log.subscribe(() => {
      throw new Error('bad observer');
    });
    log.emit({ kind: 'k', message: 'one' });
    off();
    log.emit({ kind: 'k', message: 'two' });
    expect(got).toEqual(['one']);
    expect(log.subscriberErrors).toBe(2);
  });

  it('appends JSON lines to a file, buffered, flushed on close', () => {
    const file = tmpFile('events.jsonl');
    fs.writeFileSync(file, '{"seq":0,"ts":"x","kind":"earlier","message":"kept"}\n');
    const log = new EventLog({ file, flushIntervalMs: 60_000 });
    for (let i = 0; i < 100; i++) log.emit({ kind: EventKind.LeakRetained, fault: 'kb903927', message: `c${i}`, data: { bytes: i } });
    expect(readLines(file).length).toBe(1); // still buffered
    log.close();
    const lines = readLines(file);
    expect(lines.length).toBe(101);
    expect(lines[0].kind).toBe('earlier'); // appended, not truncated
    expect(lines[100]).toMatchObject({ seq: 100, kind: 'leak-retained', message: 'c99', data: { bytes: 99 } });
    expect(Object.keys(lines[1])).toEqual(['seq', 'ts', 'fault', 'kind', 'message', 'data']);
    log.close(); // twice is fine
    expect(() => log.emit({ kind: 'k', message: 'late' })).toThrow(/after close/);
  });

  it('flushes when the buffer grows and on its timer', async () => {
    const file = tmpFile('events.jsonl');
    const log = new EventLog({ file, flushIntervalMs: 20, flushBytes: 1024 });
    for (let i = 0; i < 40; i++) log.emit({ kind: 'k', message: 'x'.repeat(50) });
    expect(readLines(file).length).toBeGreaterThan(0); // size-triggered flush
    await new Promise((r) => setTimeout(r, 80));
    expect(readLines(file).length).toBe(40); // timer-triggered flush
    log.close();
  });

  it('never loses the tail when the process exits without close()', () => {
    const file = tmpFile('events.jsonl');
    const src = path.resolve(__dirname, '../../stack/faults/events.ts');
    // A child process that emits and exits at once: the exit hook must flush.
    const vn = path.resolve(__dirname, '../../node_modules/.bin/vite-node');
    const script = tmpFile('child.ts');
    fs.writeFileSync(
      script,
      `import { EventLog } from ${JSON.stringify(src.replace(/\.ts$/, ''))};\n` +
        `const log = new EventLog({ file: ${JSON.stringify(file)}, flushIntervalMs: 60000 });\n` +
        `for (let i = 0; i < 500; i++) log.emit({ kind: 'k', message: 'm' + i });\n` +
        `process.exit(0);\n`,
    );
    const r = spawnSync(vn, [script], { encoding: 'utf8', timeout: 60_000 });
    expect(r.status, r.stderr).toBe(0);
    const lines = readLines(file);
    expect(lines.length).toBe(500);
    expect(lines[499].message).toBe('m499');
  });

  it('records configuration changes as fault-mode-changed and param-changed events', () => {
    const cfg = new FaultConfig();
    const log = new EventLog();
    const stop = logConfigChanges(cfg, log);
    cfg.setMode('synprotect-leak', 'buggy');
    cfg.setParam('tcpmaxhalfopen', 10);
    const [m, p] = log.recent();
    expect(m).toMatchObject({
      fault: 'kb903927',
      kind: 'fault-mode-changed',
      message: 'kb903927 (synprotect-leak) mode hotfixed -> buggy',
      data: { fault: 'kb903927', from: 'hotfixed', to: 'buggy' },
    });
    expect(p).toMatchObject({ kind: 'param-changed', message: 'TcpMaxHalfOpen 500 -> 10', data: { name: 'TcpMaxHalfOpen', from: 500, to: 10 } });
    stop();
    cfg.setParam('TcpMaxHalfOpen', 11);
    expect(log.lastSeq).toBe(2);
  });
});
