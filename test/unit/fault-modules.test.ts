/**
 * The fault-module boundary (issue 9 item 1, stack/faults/module.ts):
 * - no fault mode string outside stack/faults/ (what `grep -rn "'buggy'" stack/` checks),
 *   and the core imports no fault module;
 * - the services reach the stack through the net-api only;
 * - the catalogue is the union of the modules' specs, in the modules' order;
 * - installing every module replaces the core's hooks, uninstalling puts the defaults back.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { FAULTS, PARAMS, SYSTEM_PARAMS } from '../../stack/faults/catalogue';
import { buildFaultConfig } from '../../stack/faults/config';
import { EventLog } from '../../stack/faults/events';
import { FAULT_MODULES } from '../../stack/faults/index';
import { installFaults } from '../../stack/faults/install';
import { CREATIONS_AND_REMOVALS } from '../../stack/iface/pmtu';
import { OPEN_GATE } from '../../stack/stack';
import { releaseResetBeforeAccept } from '../../stack/tcp/tcp';
import { makePair } from './helpers/pair';

const ROOT = path.resolve(__dirname, '../..');

/** Every .ts file under `dir` (relative to the repository), recursively. */
function sources(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    for (const e of fs.readdirSync(path.join(ROOT, d), { withFileTypes: true })) {
      const rel = path.join(d, e.name);
      if (e.isDirectory()) walk(rel);
      else if (e.name.endsWith('.ts')) out.push(rel);
    }
  };
  walk(dir);
  return out;
}

/** file:line of every line of `files` that matches `re`. */
function hits(files: string[], re: RegExp): string[] {
  const out: string[] = [];
  for (const f of files) {
    fs.readFileSync(path.join(ROOT, f), 'utf8')
      .split('\n')
      .forEach((line, i) => {
        if (re.test(line)) out.push(`${f}:${i + 1}`);
      });
  }
  return out;
}

describe('the fault boundary in the source tree', () => {
  const stack = sources('stack');

  it("'buggy' appears in stack/ only under stack/faults/ (and does appear there)", () => {
    const found = hits(stack, /['"`]buggy['"`]/);
    expect(found.filter((h) => !h.startsWith('stack/faults/'))).toEqual([]);
    // The walk reads the real tree: the modes are there, where they belong.
    expect(found.some((h) => h.startsWith('stack/faults/kb898060/'))).toBe(true);
  });

  it('the core (wire, iface, tcp, udp, stack.ts, timers, counters, util) imports no fault module, service, runtime or CLI', () => {
    const core = stack.filter((f) => /^stack\/(wire|iface|tcp|udp|util)\//.test(f) || ['stack/stack.ts', 'stack/timers.ts', 'stack/counters.ts'].includes(f));
    expect(core.length).toBeGreaterThan(20);
    expect(hits(core, /^\s*import .*from '.*\/(faults|services|runtime|control)\/|from '.*\/bin\//)).toEqual([]);
  });

  it('the services import the socket API only through the net-api, and nothing of TCP, UDP or IP', () => {
    const services = sources('stack/services');
    expect(services.length).toBeGreaterThan(5);
    expect(hits(services, /from '\.\.\/(tcp|udp|iface)\/|from '\.\.\/api\/(net|dgram)'|from '\.\.\/stack'/)).toEqual([]);
  });

  it('no source points at a folder outside the repository', () => {
    const all = [...stack, ...sources('test'), ...sources('bin'), ...sources('bench')];
    expect(hits(all, /\.\.\/\.\.\/\.\.\/shared|\/work\/shared/).filter((h) => !h.startsWith('test/unit/fault-modules.test.ts'))).toEqual([]);
  });
});

describe('the catalogue is the union of the modules', () => {
  it("lists the modules' specs in their order, each with the parameters it owns", () => {
    expect(FAULTS.map((f) => f.id)).toEqual(FAULT_MODULES.map((m) => m.spec.id));
    for (const m of FAULT_MODULES) {
      const f = FAULTS.find((x) => x.id === m.spec.id)!;
      expect(f.implemented).toBe(m.spec.implemented);
      for (const name of Object.keys(m.spec.params)) {
        expect(f.params, `${m.spec.id} lists ${name}`).toContain(name);
        expect(PARAMS.find((p) => p.name === name)!.faults, name).toContain(m.spec.id);
      }
      for (const name of (m.spec as { reads?: readonly string[] }).reads ?? []) expect(f.params).toContain(name);
    }
  });

  it('every parameter is owned once: by a fault module or by the emulated system', () => {
    const owned = [...FAULT_MODULES.flatMap((m) => Object.keys(m.spec.params)), ...Object.keys(SYSTEM_PARAMS)];
    expect(new Set(owned).size).toBe(owned.length);
    expect([...owned].sort()).toEqual(PARAMS.map((p) => p.name).sort());
  });

  it('the unimplemented faults are catalogued only: installing them changes no hook', () => {
    for (const m of FAULT_MODULES.filter((x) => !x.spec.implemented)) {
      const p = makePair();
      const before = { tcp: { ...p.a.tcp.hooks }, stack: { ...p.a.hooks }, pmtu: { ...p.a.pmtu.hooks } };
      const inst = m.install({ stack: p.a, config: buildFaultConfig({ faults: [], params: [] }), events: new EventLog(), features: {} });
      expect({ tcp: { ...p.a.tcp.hooks }, stack: { ...p.a.hooks }, pmtu: { ...p.a.pmtu.hooks } }).toEqual(before);
      expect(inst.control).toBeUndefined();
      inst.uninstall();
    }
  });
});

describe('installing and uninstalling the modules', () => {
  it("replaces the core's hooks with the modules' and puts the defaults back", () => {
    const p = makePair();
    const s = p.a;
    const defaults = { ...s.tcp.hooks };
    expect(defaults.listenerAdmission).toBe(s.tcp.defaultListenerAdmission);
    expect(defaults.resetBeforeAccept).toBe(releaseResetBeforeAccept);
    expect(s.hooks.gate).toBe(OPEN_GATE);
    expect(s.pmtu.hooks.hostRouteAccounting).toBe(CREATIONS_AND_REMOVALS);

    const cfg = buildFaultConfig({ profile: 'win2003-sp1', faults: ['kb903927=buggy', 'kb297040=buggy', 'kb898060=buggy'], params: [] });
    const events = new EventLog();
    const installed = installFaults(s, cfg, events);
    expect(s.tcp.hooks.listenerAdmission).toBe(installed.faults.kb903927.listener);
    expect(s.tcp.hooks.resetBeforeAccept).not.toBe(releaseResetBeforeAccept);
    expect(s.tcp.hooks.activeOpenFailed).not.toBe(defaults.activeOpenFailed);
    expect(s.hooks.gate).not.toBe(OPEN_GATE);
    expect(s.pmtu.hooks.hostRouteAccounting.rule).toBe('buggy');
    expect(Object.keys(installed.control)).toEqual(['unlock']);
    expect(Object.keys(installed.stats()).sort()).toEqual(['leak', 'lock']);
    // The linux profile puts the core's Linux policy (with the profile's sysctls) in place.
    cfg.applyProfile('linux');
    expect(s.tcp.hooks.listenerAdmission).toBe(installed.faults.kb903927.linux);
    expect(s.ttl).toBe(64);

    installed.uninstall();
    expect({ ...s.tcp.hooks }).toEqual(defaults);
    expect(s.tcp.hooks.listenerAdmission).toBe(defaults.listenerAdmission);
    expect(s.hooks.gate).toBe(OPEN_GATE);
    expect(s.pmtu.hooks.hostRouteAccounting).toBe(CREATIONS_AND_REMOVALS);
    // Nothing follows the configuration any more.
    cfg.applyProfile('win2003-sp1');
    expect(s.tcp.hooks.listenerAdmission).toBe(defaults.listenerAdmission);
    expect(s.ttl).toBe(64);
    events.close();
  });
});
