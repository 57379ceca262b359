import { describe, expect, it } from 'vitest';
import {
  ALL_MODES,
  DEFAULT_PROFILE,
  FAULT_IDS,
  FAULTS,
  findFault,
  findParam,
  lookupParam,
  nearestNames,
  PARAM_NAMES,
  PARAMS,
  PROFILES,
} from '../../stack/faults/catalogue';
import { buildFaultConfig, FaultConfig, type ConfigChange } from '../../stack/faults/config';
import { UsageError } from '../../stack/util/errors';
import { usageMessage } from './helpers/usage';

describe('fault catalogue', () => {
  it('lists the five faults with ids, aliases, articles and modes', () => {
    expect(FAULTS.map((f) => [f.id, f.alias])).toEqual([
      ['kb903927', 'synprotect-leak'],
      ['kb297040', 'conntable-hang'],
      ['kb898060', 'pmtu-hostroutes'],
      ['kb972183', 'nlb-ipsec'],
      ['kb319381', 'udp-rebind'],
    ]);
    for (const f of FAULTS) {
      // The article by its number, not a file: nothing in the catalogue points outside the repository.
      expect(f.article).toBe(`KB ${f.id.slice(2)}`);
      expect(f.sources[0]).toBe(f.article);
      expect(f.title.length).toBeGreaterThan(20);
      expect(f.summary.length).toBeGreaterThan(200);
      expect(f.modes).toContain('buggy');
      expect(f.modes).toContain('hotfixed');
      expect(f.modes).toContain(f.defaultMode);
      for (const m of f.modes) expect(ALL_MODES).toContain(m);
      expect(f.params.length).toBeGreaterThan(0);
      for (const p of f.params) expect(PARAM_NAMES).toContain(p);
    }
  });

  it('marks which faults are implemented; unimplemented ones default to off', () => {
    const impl = Object.fromEntries(FAULTS.map((f) => [f.id, f.implemented]));
    expect(impl).toEqual({ kb903927: true, kb297040: true, kb898060: true, kb972183: true, kb319381: true });
    for (const f of FAULTS) expect(f.defaultMode).toBe(f.implemented ? 'hotfixed' : 'off');
  });

  it('names no file outside the repository: no shared/ folder, no stored article file', () => {
    const text = JSON.stringify({ FAULTS, PARAMS, PROFILES });
    expect(text).not.toMatch(/shared\/|\.\.\/|KB\d+-[a-z0-9-]+\.txt/);
  });

  it('resolves ids, KB numbers and aliases case-insensitively', () => {
    expect(findFault('kb903927').id).toBe('kb903927');
    expect(findFault('KB898060').id).toBe('kb898060');
    expect(findFault('297040').id).toBe('kb297040');
    expect(findFault('synprotect-leak').id).toBe('kb903927');
    expect(findFault('Conntable-Hang').id).toBe('kb297040');
    expect(findFault('udp-rebind').id).toBe('kb319381');
  });

  it('an unknown fault lists every id and alias', () => {
    const msg = usageMessage(() => findFault('kb123'));
    expect(msg).toContain("unknown fault 'kb123'");
    for (const f of FAULTS) {
      expect(msg).toContain(f.id);
      expect(msg).toContain(f.alias);
    }
  });
});

describe('parameter registry', () => {
  const expected: Record<string, { type: string; default: number | string; min?: number; max?: number }> = {
    SynAttackProtect: { type: 'int', default: 0, min: 0, max: 2 },
    TcpMaxHalfOpen: { type: 'int', default: 500 },
    TcpMaxHalfOpenRetried: { type: 'int', default: 400 },
    TcpMaxPortsExhausted: { type: 'int', default: 5 },
    TcpMaxConnectResponseRetransmissions: { type: 'int', default: 2, min: 0, max: 255 },
    TcpMaxConnectRetransmissions: { type: 'int', default: 2, min: 0, max: 255 },
    TcpInitialRttMs: { type: 'int', default: 3000 },
    MaxIcmpHostRoutes: { type: 'int', default: 1000 },
    EnablePMTUDiscovery: { type: 'bool', default: 1 },
    EnablePMTUBHDetect: { type: 'bool', default: 0 },
    PMTUFloor: { type: 'int', default: 576, min: 68, max: 576 },
    HostRouteAgingSec: { type: 'int', default: 600, min: 0 },
    MTU: { type: 'int', default: 0 },
    MtlsListenBacklog: { type: 'int', default: 5 },
    MtlsAcceptIntervalMs: { type: 'int', default: 100 },
    TcpStackProfile: { type: 'enum', default: 'windows' },
    DefaultTTL: { type: 'int', default: 128, min: 1, max: 255 },
    tcp_syncookies: { type: 'int', default: 1, min: 0, max: 2 },
    tcp_abort_on_overflow: { type: 'bool', default: 0 },
    tcp_max_syn_backlog: { type: 'int', default: 128 },
    somaxconn: { type: 'int', default: 4096 },
    DropStateIfNotBucketOwner: { type: 'bool', default: 1 },
    AliveMsgPeriod: { type: 'int', default: 1000 },
    AliveMsgTolerance: { type: 'int', default: 5 },
    NlbBucketCount: { type: 'int', default: 60, min: 1, max: 64 },
    NlbAffinity: { type: 'enum', default: 'single' },
    DescriptorsPerAlloc: { type: 'int', default: 512 },
    MaxDescriptorAllocs: { type: 'int', default: 512 },
    MaskSourceMAC: { type: 'bool', default: 1 },
    FilterICMP: { type: 'bool', default: 0 },
    PortScanWellKnownThreshold: { type: 'int', default: 10 },
    PortScanAllPortsThreshold: { type: 'int', default: 20 },
    MediaPortReleaseDelayMs: { type: 'int', default: 500 },
  };

  it('holds every parameter with its type, default and range', () => {
    expect([...PARAM_NAMES].sort()).toEqual(Object.keys(expected).sort());
    for (const p of PARAMS) {
      const e = expected[p.name];
      expect(p.type, p.name).toBe(e.type);
      expect(p.default, p.name).toBe(e.default);
      if (p.type === 'int') {
        if (e.min !== undefined) expect(p.min, p.name).toBe(e.min);
        if (e.max !== undefined) expect(p.max, p.name).toBe(e.max);
        expect(p.default).toBeGreaterThanOrEqual(p.min);
        expect(p.default).toBeLessThanOrEqual(p.max);
      }
      if (p.type === 'enum') expect(p.values).toContain(p.default);
      expect(p.meaning.length, p.name).toBeGreaterThan(10);
      expect(p.source.length, p.name).toBeGreaterThan(3);
      // Every name of ours says so.
      if (p.registry === null) expect(p.source, p.name).toMatch(/our (name|choice)/);
    }
  });

  it('knows which faults read each parameter', () => {
    expect(findParam('SynAttackProtect').faults).toEqual(['kb903927', 'kb297040']);
    expect(findParam('MaxIcmpHostRoutes').faults).toEqual(['kb898060']);
    expect(findParam('DropStateIfNotBucketOwner').faults).toEqual(['kb972183']);
    // Every parameter is read by a fault, or by the whole emulated system (DefaultTTL).
    for (const p of PARAMS) expect(p.faults.length > 0 || p.general === true, `${p.name} is used by no fault`).toBe(true);
    expect(PARAMS.filter((p) => p.general).map((p) => p.name)).toEqual(['DefaultTTL']);
  });

  it('matches names case-insensitively and reports them canonically', () => {
    expect(lookupParam('synattackprotect')?.name).toBe('SynAttackProtect');
    expect(lookupParam('TCP_SYNCOOKIES')?.name).toBe('tcp_syncookies');
    const cfg = new FaultConfig();
    expect(cfg.setParam('maxicmphostroutes', '50')).toBe('MaxIcmpHostRoutes');
    expect(cfg.params.MaxIcmpHostRoutes).toBe(50);
  });

  it('suggests the nearest names for an unknown parameter, then lists all', () => {
    const msg = usageMessage(() => findParam('SynAtackProtect'));
    expect(msg).toMatch(/^unknown parameter 'SynAtackProtect': did you mean SynAttackProtect/);
    for (const n of PARAM_NAMES) expect(msg).toContain(n);
    expect(nearestNames('TcpMaxHalfOpn', PARAM_NAMES, 2)[0]).toBe('TcpMaxHalfOpen');
    expect(usageMessage(() => findParam('zzzzzzzzzz'))).not.toContain('did you mean');
  });
});

describe('FaultConfig', () => {
  it('starts from the default profile with every implemented fault hotfixed', () => {
    expect(DEFAULT_PROFILE).toBe('win2003-sp1');
    const cfg = new FaultConfig();
    expect(cfg.profile).toBe('win2003-sp1');
    expect(cfg.modes).toEqual({
      kb903927: 'hotfixed',
      kb297040: 'hotfixed',
      kb898060: 'hotfixed',
      kb972183: 'hotfixed',
      kb319381: 'hotfixed',
    });
    expect(cfg.params.SynAttackProtect).toBe(2);
    expect(cfg.params.TcpStackProfile).toBe('windows');
    const none = new FaultConfig(null);
    expect(none.profile).toBeNull();
    expect(none.params.SynAttackProtect).toBe(0);
  });

  it('reads on the hot path are plain numbers on stable objects', () => {
    const cfg = new FaultConfig();
    const params = cfg.params;
    const modes = cfg.modes;
    const n: number = params.TcpMaxHalfOpen; // typed as a number
    expect(n).toBe(500);
    cfg.setParam('TcpMaxHalfOpen', 7);
    cfg.setMode('kb903927', 'buggy');
    expect(params.TcpMaxHalfOpen).toBe(7); // same object, mutated in place
    expect(modes.kb903927).toBe('buggy');
    expect(cfg.isBuggy('kb903927')).toBe(true);
    expect(cfg.mode('synprotect-leak')).toBe('buggy');
  });

  it('sets modes by id or alias and rejects modes the fault does not have', () => {
    const cfg = new FaultConfig();
    cfg.setMode('pmtu-hostroutes', 'BUGGY');
    expect(cfg.modes.kb898060).toBe('buggy');
    const msg = usageMessage(() => cfg.setMode('kb903927', 'off'));
    expect(msg).toBe("fault kb903927 (synprotect-leak) has no mode 'off': valid modes are buggy, hotfixed");
    expect(usageMessage(() => cfg.setMode('kb297040', 'broken'))).toContain('valid modes are buggy, hotfixed');
  });

  it('offers off only where the feature that carries the bug can be absent', () => {
    const cfg = new FaultConfig();
    // KB 319381: the streaming-media filter can be left out of a firewall.
    cfg.setMode('udp-rebind', 'off');
    expect(cfg.modes.kb319381).toBe('off');
    // KB 972183: the cluster is there or the fault is not; the hotfix is installed or not.
    expect(usageMessage(() => cfg.setMode('kb972183', 'off'))).toBe("fault kb972183 (nlb-ipsec) has no mode 'off': valid modes are buggy, hotfixed");
  });

  it('validates parameter types and ranges', () => {
    const cfg = new FaultConfig();
    expect(usageMessage(() => cfg.setParam('SynAttackProtect', 3))).toBe('parameter SynAttackProtect: 3 is out of range; valid values are 0..2');
    expect(usageMessage(() => cfg.setParam('TcpMaxConnectResponseRetransmissions', '256'))).toContain('valid values are 0..255 retransmissions');
    expect(usageMessage(() => cfg.setParam('PMTUFloor', 67))).toContain('68..576');
    expect(usageMessage(() => cfg.setParam('TcpMaxHalfOpen', 'many'))).toContain("'many' is not an integer");
    expect(usageMessage(() => cfg.setParam('TcpMaxHalfOpen', 1.5))).toContain('not an integer');
    expect(usageMessage(() => cfg.setParam('EnablePMTUDiscovery', 2))).toContain('valid values are 0 or 1');
    expect(usageMessage(() => cfg.setParam('TcpStackProfile', 'bsd'))).toContain('windows | linux');
    cfg.setParam('MaxIcmpHostRoutes', '0x2710'); // registry editors show DWORDs in hex
    expect(cfg.params.MaxIcmpHostRoutes).toBe(10000);
    cfg.setParam('EnablePMTUBHDetect', 'true');
    expect(cfg.params.EnablePMTUBHDetect).toBe(1);
    cfg.setParam('TcpStackProfile', 'Linux');
    expect(cfg.params.TcpStackProfile).toBe('linux');
    cfg.setParam('HostRouteAgingSec', 0); // 0 = never
    expect(cfg.params.HostRouteAgingSec).toBe(0);
  });

  it('applies each profile on top of the defaults', () => {
    const nt4 = new FaultConfig('nt4-sp6a');
    expect(nt4.params).toMatchObject({
      TcpStackProfile: 'windows',
      SynAttackProtect: 0,
      TcpMaxConnectRetransmissions: 2,
      PMTUFloor: 68,
    });
    const sp1 = new FaultConfig('win2003-sp1');
    expect(sp1.params).toMatchObject({
      TcpStackProfile: 'windows',
      SynAttackProtect: 2,
      TcpMaxHalfOpen: 500,
      TcpMaxHalfOpenRetried: 400,
      TcpMaxPortsExhausted: 5,
      TcpMaxConnectResponseRetransmissions: 2,
      PMTUFloor: 576,
      MaxIcmpHostRoutes: 1000,
    });
    const linux = new FaultConfig('linux');
    expect(linux.params).toMatchObject({
      TcpStackProfile: 'linux',
      SynAttackProtect: 0,
      tcp_syncookies: 1,
      tcp_abort_on_overflow: 0,
      tcp_max_syn_backlog: 128,
      somaxconn: 4096,
      PMTUFloor: 552,
      HostRouteAgingSec: 600,
    });
    // Profiles never set fault modes.
    for (const name of ['nt4-sp6a', 'win2003-sp1', 'linux']) {
      expect(new FaultConfig(name).modes.kb903927).toBe('hotfixed');
    }
    // Every profile value is valid for its parameter.
    for (const prof of PROFILES) {
      const cfg = new FaultConfig(null);
      for (const [k, v] of Object.entries(prof.params)) cfg.setParam(k, v as string | number);
    }
  });

  it('a profile sets every parameter the stack reads for its system (issue 8 item 13: Windows answered with TTL 64)', () => {
    const read = new Set<string>(['DefaultTTL']);
    for (const f of FAULTS) if (f.implemented) for (const n of f.params) read.add(n);
    for (const prof of PROFILES) {
      const system = prof.params.TcpStackProfile;
      expect(system === 'windows' || system === 'linux', prof.name).toBe(true);
      const implied = PARAMS.filter((p) => read.has(p.name) && (p.system === 'any' || p.system === system)).map((p) => p.name);
      const missing = implied.filter((n) => !(n in prof.params));
      expect(missing, `${prof.name} leaves these to the defaults`).toEqual([]);
    }
    expect(new FaultConfig('nt4-sp6a').params.DefaultTTL).toBe(128);
    expect(new FaultConfig('win2003-sp1').params.DefaultTTL).toBe(128);
    expect(new FaultConfig('linux').params.DefaultTTL).toBe(64);
  });

  it('re-applying a profile resets parameters it does not set; modes are kept', () => {
    const cfg = new FaultConfig('linux');
    cfg.setParam('MaxIcmpHostRoutes', 3);
    cfg.setMode('kb898060', 'buggy');
    cfg.applyProfile('win2003-sp1');
    expect(cfg.params.MaxIcmpHostRoutes).toBe(1000);
    expect(cfg.params.TcpStackProfile).toBe('windows');
    expect(cfg.modes.kb898060).toBe('buggy');
    expect(usageMessage(() => cfg.applyProfile('win95'))).toBe("unknown profile 'win95': valid profiles are nt4-sp6a, win2003-sp1, linux");
  });

  it('notifies listeners of effective changes only, until unsubscribed', () => {
    const cfg = new FaultConfig();
    const seen: ConfigChange[] = [];
    const off = cfg.onChange((c) => seen.push(c));
    cfg.setMode('kb903927', 'buggy');
    cfg.setMode('kb903927', 'buggy'); // no change, no event
    cfg.setParam('synattackprotect', '1');
    cfg.setParam('SynAttackProtect', 1); // no change
    expect(seen).toEqual([
      { kind: 'mode', fault: 'kb903927', alias: 'synprotect-leak', from: 'hotfixed', to: 'buggy' },
      { kind: 'param', name: 'SynAttackProtect', from: 2, to: 1 },
    ]);
    cfg.applyProfile('linux');
    expect(seen.some((c) => c.kind === 'profile' && c.from === 'win2003-sp1' && c.to === 'linux')).toBe(true);
    expect(seen.some((c) => c.kind === 'param' && c.name === 'TcpStackProfile' && c.to === 'linux')).toBe(true);
    off();
    const n = seen.length;
    cfg.setParam('MTU', 576);
    expect(seen.length).toBe(n);
  });

  it('rejects a failed change without touching the value or notifying', () => {
    const cfg = new FaultConfig();
    const seen: ConfigChange[] = [];
    cfg.onChange((c) => seen.push(c));
    expect(() => cfg.setParam('SynAttackProtect', 9)).toThrow(UsageError);
    expect(() => cfg.setMode('kb972183', 'off')).toThrow(UsageError);
    expect(cfg.params.SynAttackProtect).toBe(2);
    expect(cfg.modes.kb972183).toBe('hotfixed');
    expect(seen).toEqual([]);
  });

  it('snapshot is a JSON-able copy of profile, modes and params', () => {
    const cfg = new FaultConfig('nt4-sp6a');
    cfg.setMode('conntable-hang', 'buggy');
    const snap = cfg.snapshot();
    const round = JSON.parse(JSON.stringify(snap));
    expect(round).toEqual(snap);
    expect(round.profile).toBe('nt4-sp6a');
    expect(round.modes.kb297040).toBe('buggy');
    expect(Object.keys(round.params).sort()).toEqual([...PARAM_NAMES].sort());
    expect(Object.keys(round.modes)).toEqual([...FAULT_IDS]);
    cfg.setParam('SynAttackProtect', 1);
    expect(snap.params.SynAttackProtect).toBe(0); // a copy, not a view
  });
});

describe('buildFaultConfig', () => {
  it('applies profile, then faults, then params', () => {
    const cfg = buildFaultConfig({
      profile: 'nt4-sp6a',
      faults: ['conntable-hang=buggy', 'KB903927=hotfixed'],
      params: ['SynAttackProtect=1', 'tcpmaxconnectretransmissions=3'],
    });
    expect(cfg.profile).toBe('nt4-sp6a');
    expect(cfg.modes.kb297040).toBe('buggy');
    expect(cfg.params.SynAttackProtect).toBe(1);
    expect(cfg.params.TcpMaxConnectRetransmissions).toBe(3);
  });

  it('uses the default profile when none is given', () => {
    const cfg = buildFaultConfig({ faults: [], params: [] });
    expect(cfg.profile).toBe(DEFAULT_PROFILE);
    expect(cfg.params.SynAttackProtect).toBe(2);
  });

  it('explains every bad input in one line', () => {
    expect(usageMessage(() => buildFaultConfig({ profile: 'xp', faults: [], params: [] }))).toContain('valid profiles are nt4-sp6a, win2003-sp1, linux');
    expect(usageMessage(() => buildFaultConfig({ faults: ['kb903927'], params: [] }))).toBe(
      "bad fault setting 'kb903927': expected NAME=VALUE, for example kb903927=buggy or synprotect-leak=hotfixed",
    );
    expect(usageMessage(() => buildFaultConfig({ faults: ['nope=buggy'], params: [] }))).toContain(
      'valid faults are kb903927 (synprotect-leak), kb297040 (conntable-hang)',
    );
    expect(usageMessage(() => buildFaultConfig({ faults: ['nlb-ipsec=off'], params: [] }))).toBe(
      "fault kb972183 (nlb-ipsec) has no mode 'off': valid modes are buggy, hotfixed",
    );
    expect(usageMessage(() => buildFaultConfig({ faults: [], params: ['SynAttackProtect='] }))).toContain(
      'expected NAME=VALUE, for example SynAttackProtect=2',
    );
    expect(usageMessage(() => buildFaultConfig({ faults: [], params: ['MaxIcmpHostRoute=5'] }))).toContain('did you mean MaxIcmpHostRoutes');
    expect(usageMessage(() => buildFaultConfig({ faults: [], params: ['TcpMaxHalfOpen=0'] }))).toBe(
      'parameter TcpMaxHalfOpen: 0 is out of range; valid values are 1..65535 connections',
    );
  });
});

describe('faultstack faults', () => {
  async function capture(argv: string[]): Promise<{ code: number; out: string }> {
    const { run } = await import('../../bin/cli/commands/faults');
    const chunks: string[] = [];
    const orig = process.stdout.write.bind(process.stdout);
    (process.stdout as { write: unknown }).write = (c: string | Uint8Array) => {
      chunks.push(String(c));
      return true;
    };
    try {
      const code = await run(argv);
      return { code, out: chunks.join('') };
    } finally {
      (process.stdout as { write: unknown }).write = orig;
    }
  }

  it('prints every fault with modes, default, implemented flag and parameters', async () => {
    const { code, out } = await capture([]);
    expect(code).toBe(0);
    for (const f of FAULTS) {
      expect(out).toContain(`${f.id}  ${f.alias}`);
      expect(out).toContain(`modes: ${f.modes.join(', ')}  default: ${f.defaultMode}`);
      for (const p of f.params) expect(out).toContain(p);
    }
    expect(out).not.toContain('not implemented');
    expect(out).toMatch(/SynAttackProtect\s+0\s+0\.\.2\s+win2003-sp1=2/);
    expect(out).toContain('win2003-sp1 (default)');
  });

  it('--json prints the whole catalogue', async () => {
    const { code, out } = await capture(['--json']);
    expect(code).toBe(0);
    const j = JSON.parse(out);
    expect(j.defaultProfile).toBe('win2003-sp1');
    expect(j.faults.map((f: { id: string }) => f.id)).toEqual([...FAULT_IDS]);
    expect(j.params.find((p: { name: string }) => p.name === 'MaxIcmpHostRoutes')).toMatchObject({
      type: 'int',
      default: 1000,
      faults: ['kb898060'],
    });
    expect(j.profiles.map((p: { name: string }) => p.name)).toEqual(['nt4-sp6a', 'win2003-sp1', 'linux']);
  });

  it('rejects unknown flags with a usage error', async () => {
    const { run } = await import('../../bin/cli/commands/faults');
    await expect(run(['--bogus'])).rejects.toThrow(/unknown flag --bogus.*--json/);
  });
});

describe('FaultConfig listeners', () => {
  it('a throwing listener does not keep the others from hearing the change', () => {
    const cfg = new FaultConfig();
    const heard: string[] = [];
    cfg.onChange(() => {
      throw new Error('listener broke');
    });
    cfg.onChange((c) => heard.push(c.kind));
    expect(() => cfg.setParam('MTU', 1400)).toThrow('listener broke');
    expect(heard).toEqual(['param']);
    expect(cfg.params.MTU).toBe(1400); // the change itself stands
  });
});
