import { spawn, spawnSync } from 'node:child_process';
import { PrivateBuild, REPO, buildPrivate } from '../helpers/build';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  commaSubset,
  decimal,
  defineCommand,
  formatUsage,
  integer,
  keyValue,
  oneOf,
  parseArgs,
  repeatableFlag,
  requiredFlag,
  switchFlag,
  valueFlag,
} from '../../bin/cli/args';
import { buildRunOptions } from '../../bin/cli/commands/run';
import { usageMessage } from './helpers/usage';
import { formatIpv4 } from '../../stack/wire/addr';

const TOY = defineCommand({
  name: 'toy',
  summary: 'a toy command',
  args: 'A [B]',
  minArgs: 1,
  maxArgs: 2,
  flags: {
    n: valueFlag({ valueName: 'N', help: 'a number', ...integer(1, 10), default: 5 }),
    ratio: valueFlag({ valueName: 'X', help: 'a ratio', ...decimal(0, 1) }),
    color: valueFlag({ valueName: 'C', help: 'a color', ...oneOf(['red', 'green'] as const) }),
    set: repeatableFlag({ valueName: 'K=V', help: 'assignments', ...keyValue('K', 'V', 'a=1') }),
    list: valueFlag({
      valueName: 'L',
      help: 'subset',
      ...commaSubset(['x', 'y', 'z'] as const, ['x', 'y', 'z'] as const),
      default: ['x'] as ('x' | 'y' | 'z')[],
    }),
    must: requiredFlag(valueFlag({ valueName: 'M', help: 'mandatory', ...integer(0, 3) })),
    json: switchFlag('json'),
  },
});

describe('parseArgs', () => {
  it('accepts --flag value, --flag=value, repeatable flags, switches and positionals in any order', () => {
    const r = parseArgs(TOY, ['first', '--n', '7', '--must=2', '--set', 'a=1', 'second', '--set=b = 2', '--json', '--color', 'green']);
    expect(r.help).toBe(false);
    if (r.help) return;
    expect(r.flags).toEqual({
      n: 7,
      ratio: undefined,
      color: 'green',
      set: [
        { key: 'a', value: '1' },
        { key: 'b', value: '2' },
      ],
      list: ['x'],
      must: 2,
      json: true,
    });
    expect(r.args).toEqual(['first', 'second']);
  });

  it('applies defaults and keeps the canonical order of subsets', () => {
    const r = parseArgs(TOY, ['a', '--must', '0', '--list', 'z,x,z']);
    if (r.help) throw new Error('help');
    expect(r.flags.n).toBe(5);
    expect(r.flags.json).toBe(false);
    expect(r.flags.list).toEqual(['x', 'z']);
    expect(r.flags.set).toEqual([]);
  });

  it('switches take =true/=false and nothing else', () => {
    const r = parseArgs(TOY, ['a', '--must', '0', '--json=false']);
    if (r.help) throw new Error('help');
    expect(r.flags.json).toBe(false);
    expect(usageMessage(() => parseArgs(TOY, ['a', '--must', '0', '--json=maybe']))).toBe(
      'faultstack toy: --json is a switch: give it alone, or as =true or =false, got "maybe"',
    );
  });

  it('stops at -- and treats negative numbers as positionals', () => {
    const r = parseArgs(TOY, ['--must', '1', '--', '--n']);
    if (r.help) throw new Error('help');
    expect(r.args).toEqual(['--n']);
    const r2 = parseArgs(TOY, ['--must', '1', '-5']);
    if (r2.help) throw new Error('help');
    expect(r2.args).toEqual(['-5']);
  });

  it('returns help for -h and --help, wherever they are', () => {
    expect(parseArgs(TOY, ['--help']).help).toBe(true);
    expect(parseArgs(TOY, ['x', '-h']).help).toBe(true);
    // Even after a bad value or with required flags missing: asking for help always works.
    expect(parseArgs(TOY, ['x', '--n', 'bogus', '-h']).help).toBe(true);
    // After --, it is an argument.
    expect(parseArgs(TOY, ['--must', '1', '--', '--help']).help).toBe(false);
  });

  it('says what is wrong and what is valid', () => {
    expect(usageMessage(() => parseArgs(TOY, ['a', '--must', '1', '--n', 'abc']))).toBe('faultstack toy: --n must be an integer from 1 to 10, got "abc"');
    expect(usageMessage(() => parseArgs(TOY, ['a', '--must', '1', '--n', '11']))).toBe('faultstack toy: --n must be an integer from 1 to 10, got "11"');
    expect(usageMessage(() => parseArgs(TOY, ['a', '--must', '1', '--n', '1.5']))).toContain('an integer from 1 to 10');
    expect(usageMessage(() => parseArgs(TOY, ['a', '--must', '1', '--ratio', '2']))).toBe('faultstack toy: --ratio must be a number from 0 to 1, got "2"');
    expect(usageMessage(() => parseArgs(TOY, ['a', '--must', '1', '--color', 'blue']))).toBe('faultstack toy: --color must be one of red, green, got "blue"');
    expect(usageMessage(() => parseArgs(TOY, ['a', '--must', '1', '--set', 'novalue']))).toBe('faultstack toy: --set must be K=V (e.g. a=1), got "novalue"');
    expect(usageMessage(() => parseArgs(TOY, ['a', '--must', '1', '--list', 'x,w']))).toBe(
      'faultstack toy: --list has unknown item "w": must be a comma-separated list of x, y, z, all, got "x,w"',
    );
  });

  it('reports unknown flags with a suggestion and the valid flags', () => {
    expect(usageMessage(() => parseArgs(TOY, ['a', '--colr', 'red']))).toBe(
      'faultstack toy: unknown flag --colr (did you mean --color?); valid flags: --n, --ratio, --color, --set, --list, --must, --json, --help',
    );
    expect(usageMessage(() => parseArgs(TOY, ['a', '-x']))).toContain('unknown flag -x;');
    expect(usageMessage(() => parseArgs(TOY, ['a', '--constructor=1']))).toContain('unknown flag --constructor;');
  });

  it('reports missing values, duplicates, required flags and argument counts', () => {
    expect(usageMessage(() => parseArgs(TOY, ['a', '--must']))).toBe('faultstack toy: --must needs a value: an integer from 0 to 3');
    expect(usageMessage(() => parseArgs(TOY, ['a', '--n', '--json']))).toBe('faultstack toy: --n needs a value: an integer from 1 to 10');
    expect(usageMessage(() => parseArgs(TOY, ['a', '--must', '1', '--n', '2', '--n=3']))).toBe(
      'faultstack toy: --n given more than once ("2" and "3"); give it once: an integer from 1 to 10',
    );
    expect(usageMessage(() => parseArgs(TOY, ['a']))).toBe('faultstack toy: --must is required: an integer from 0 to 3');
    expect(usageMessage(() => parseArgs(TOY, ['--must', '1']))).toBe('faultstack toy: missing A; usage: faultstack toy A [B] --must M [options]');
    expect(usageMessage(() => parseArgs(TOY, ['a', 'b', 'c', '--must', '1']))).toBe(
      'faultstack toy: unexpected argument "c"; usage: faultstack toy A [B] --must M [options]',
    );
  });

  it('keeps hostile values on one line', () => {
    const msg = usageMessage(() => parseArgs(TOY, ['a', '--must', '1', '--n', 'x\ny\u0007']));
    expect(msg).toContain('"x\\ny\\u0007"');
  });

  it('formats usage with every flag, its default and markers', () => {
    const u = formatUsage(TOY);
    expect(u).toContain('Usage: faultstack toy A [B] --must M [options]');
    expect(u).toMatch(/--n N\s+a number \[default: 5\]/);
    expect(u).toMatch(/--set K=V\s+assignments \(repeatable\)/);
    expect(u).toMatch(/--must M\s+mandatory \(required\)/);
    expect(u).toContain('-h, --help');
  });
});

describe('run flags', () => {
  const base = ['--addr', '198.18.0.2/24'];
  const runMsg = (...argv: string[]) => usageMessage(() => buildRunOptions(argv.includes('--addr') ? argv : [...base, ...argv]));

  it('builds RunOptions with defaults', () => {
    const prev = process.env.FAULTSTACK_RUN_DIR;
    delete process.env.FAULTSTACK_RUN_DIR;
    try {
      const o = buildRunOptions(base)!;
      expect(o.tun).toBe('fs0');
      expect(formatIpv4(o.addr.addr)).toBe('198.18.0.2');
      expect(o.addr.prefix).toBe(24);
      expect(formatIpv4(o.hostAddr!.addr)).toBe('198.18.0.1');
      expect(o.hostAddrDefaulted).toBe(true);
      expect(o.mtu).toBe(1500);
      expect(o.services).toEqual(['echo', 'discard', 'chargen', 'http', 'iperf3']);
      expect(o.control).toBe('/run/faultstack/fs0.sock');
      expect(o.faults).toEqual([]);
      expect(o.params).toEqual([]);
      expect(o.offloads).toBe(true);
      expect(o.queues).toBe(1);
      expect(o.cc).toBe('cubic');
      expect(o.json).toBe(false);
      expect(o.pcap).toBeUndefined();
      expect(o.events).toBeUndefined();
      expect(o.profile).toBeUndefined();
    } finally {
      if (prev !== undefined) process.env.FAULTSTACK_RUN_DIR = prev;
    }
  });

  it('takes every flag', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fs-args-'));
    try {
      const o = buildRunOptions([
        '--tun',
        'fstest0',
        '--addr',
        '198.18.4.10/30',
        '--host-addr=198.18.4.9/30',
        '--mtu',
        '9000',
        '--services',
        'mtls,echo,echo',
        '--pcap',
        path.join(dir, 'x.pcap'),
        '--control',
        path.join(dir, 'c.sock'),
        '--fault',
        '903927=buggy',
        '--fault',
        'conntable-hang=hotfixed',
        '--param',
        'SynAttackProtect=2',
        '--profile',
        'sp1',
        '--offloads',
        'off',
        '--queues',
        '4',
        '--cc',
        'newreno',
        '--events',
        path.join(dir, 'ev.jsonl'),
        '--json',
      ])!;
      expect(o).toMatchObject({
        tun: 'fstest0',
        mtu: 9000,
        services: ['echo', 'mtls'],
        pcap: path.join(dir, 'x.pcap'),
        control: path.join(dir, 'c.sock'),
        faults: [
          { id: '903927', mode: 'buggy' },
          { id: 'conntable-hang', mode: 'hotfixed' },
        ],
        params: [{ name: 'SynAttackProtect', value: '2' }],
        profile: 'sp1',
        offloads: false,
        queues: 4,
        cc: 'newreno',
        events: path.join(dir, 'ev.jsonl'),
        json: true,
        hostAddrDefaulted: false,
      });
      expect(formatIpv4(o.hostAddr!.addr)).toBe('198.18.4.9');
      expect(buildRunOptions([...base, '--services', 'all'])!.services).toEqual(['echo', 'discard', 'chargen', 'http', 'iperf3', 'mtls']);
      expect(buildRunOptions([...base, '--services', 'none'])!.services).toEqual([]);
      // A /31 has no network or broadcast address (RFC 3021): the other end is the only choice.
      expect(formatIpv4(buildRunOptions(['--addr', '198.18.0.1/31'])!.hostAddr!.addr)).toBe('198.18.0.0');
      expect(formatIpv4(buildRunOptions(['--addr', '198.18.0.0/31'])!.hostAddr!.addr)).toBe('198.18.0.1');
      expect(buildRunOptions(['--addr', '198.18.0.1/24', '--tun', 'x'])!.hostAddr!.addr & 255).toBe(2);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('puts the default control socket in FAULTSTACK_RUN_DIR', () => {
    const prev = process.env.FAULTSTACK_RUN_DIR;
    process.env.FAULTSTACK_RUN_DIR = '/tmp/fs-run-dir';
    try {
      expect(buildRunOptions([...base, '--tun', 'abc'])!.control).toBe('/tmp/fs-run-dir/abc.sock');
    } finally {
      if (prev === undefined) delete process.env.FAULTSTACK_RUN_DIR;
      else process.env.FAULTSTACK_RUN_DIR = prev;
    }
  });

  it('returns null for --help', () => {
    expect(buildRunOptions(['--help'])).toBeNull();
  });

  // Every bad value: one line, naming the flag, what would be valid, and what was given.
  const cases: [string[], RegExp][] = [
    [['--mtu', 'abc'], /^faultstack run: --mtu must be an integer from 68 to 65535, got "abc"$/],
    [['--mtu', '67'], /--mtu must be an integer from 68 to 65535, got "67"/],
    [['--mtu', '65536'], /--mtu must be an integer from 68 to 65535/],
    [['--mtu', ''], /--mtu must be an integer from 68 to 65535, got ""/],
    [['--tun', ''], /--tun must be a Linux interface name: 1 to 15 characters, without "\/", ":" or whitespace, got ""/],
    [['--tun', 'a/b'], /--tun must be a Linux interface name.*got "a\/b"/],
    [['--tun', 'has space'], /--tun must be a Linux interface name/],
    [['--tun', 'a:1'], /--tun must be a Linux interface name/],
    [['--tun', '..'], /--tun must be a Linux interface name/],
    [['--tun', 'x'.repeat(16)], /--tun must be a Linux interface name: 1 to 15 characters/],
    [['--addr', '198.18.0.2'], /--addr must be an IPv4 address with a prefix length from 1 to 31, e.g. 198.18.0.2\/24, got "198.18.0.2"/],
    [['--addr', '300.1.1.1/24'], /--addr must be an IPv4 address with a prefix length/],
    [['--addr', '198.18.0.2/33'], /--addr must be an IPv4 address with a prefix length/],
    [['--addr', '198.18.0.2/32'], /--addr must have a prefix length from 1 to 31 .*e\.g\. 198\.18\.0\.2\/24, got "198\.18\.0\.2\/32"/],
    [['--addr', '127.0.0.2/8'], /--addr must be a unicast address .*e\.g\. 198\.18\.0\.2\/24/],
    [['--addr', '224.0.0.1/24'], /--addr must be a unicast address/],
    [
      ['--addr', '198.18.0.255/24'],
      /--addr must be a host address, not the network or broadcast address of 198\.18\.0\.0\/24 \(use 198\.18\.0\.1 to 198\.18\.0\.254\)/,
    ],
    [['--addr', '198.18.0.0/24'], /--addr must be a host address/],
    [['--host-addr', '198.18.1.1/24'], /--host-addr must be in the subnet of --addr \(198\.18\.0\.0\/24\), got "198\.18\.1\.1\/24"; e\.g\. 198\.18\.0\.1\/24/],
    [
      ['--host-addr', '198.18.0.2/24'],
      /--host-addr must differ from --addr \(both are 198\.18\.0\.2\); pick another address in 198\.18\.0\.0\/24, e\.g\. 198\.18\.0\.1\/24/,
    ],
    [['--host-addr', '198.18.0.1/16'], /--host-addr must have the same prefix length as --addr \(\/24\), got "198\.18\.0\.1\/16"; e\.g\. 198\.18\.0\.1\/24/],
    [['--host-addr', 'nope'], /--host-addr must be an IPv4 address with a prefix length/],
    [
      ['--services', 'echo,bogus'],
      /--services has unknown item "bogus": must be a comma-separated list of echo, discard, chargen, http, iperf3, mtls, all, or none, got "echo,bogus"/,
    ],
    [['--services', ''], /--services must be a comma-separated list of echo, discard, chargen, http, iperf3, mtls, all, or none \(no empty items\)/],
    [['--services', 'echo,,http'], /--services must be a comma-separated list .* \(no empty items\)/],
    [['--services', 'none,echo'], /--services must be a comma-separated list of .*, or none \(none stands alone\), got "none,echo"/],
    [['--pcap', '/nonexistent-dir/x.pcap'], /--pcap must be a file path in an existing directory \(\/nonexistent-dir does not exist\), got/],
    [['--pcap', '/tmp'], /--pcap must be a file path, not a directory, got "\/tmp"/],
    [['--events', '/nonexistent-dir/e.jsonl'], /--events must be a file path in an existing directory/],
    [['--control', '/tmp/' + 'x'.repeat(110)], /--control must be a Unix socket path of at most 107 bytes/],
    [['--control', ''], /--control must be a Unix socket path, not empty/],
    [['--fault', 'buggy'], /--fault must be ID=MODE \(e\.g\. 903927=buggy\), got "buggy"/],
    [['--fault', '=buggy'], /--fault must be ID=MODE/],
    [['--fault', '903927='], /--fault must be ID=MODE/],
    [['--param', 'SynAttackProtect'], /--param must be NAME=VALUE \(e\.g\. SynAttackProtect=2\)/],
    [['--profile', ''], /--profile must be a profile name, not empty/],
    [['--offloads', 'maybe'], /--offloads must be one of on, off, got "maybe"/],
    [['--tx-thread', 'yes'], /--tx-thread must be one of on, off, got "yes"/],
    [['--queues', '0'], /--queues must be an integer from 1 to 8, got "0"/],
    [['--queues', '9'], /--queues must be an integer from 1 to 8/],
    [['--cc', 'reno'], /--cc must be one of newreno, cubic, got "reno"/],
    [['--json=2'], /--json is a switch/],
    [['--mtu', '1500', '--mtu', '9000'], /--mtu given more than once \("1500" and "9000"\); give it once: an integer from 68 to 65535/],
    [['--mtu'], /--mtu needs a value: an integer from 68 to 65535/],
    [
      ['--mut', '1500'],
      /unknown flag --mut \(did you mean --mtu\?\); valid flags: --tun, --tap, --bridge, --mac, --gateway, --proxy-arp, --promiscuous, --join, --addr, --host-addr, --mtu, --no-host-config, --services, --pcap, --pcap-snaplen, --pcap-size, --pcap-files, --pcap-wire, --impair, --control, --fault, --param, --profile, --offloads, --gro, --tx-thread, --queues, --shards, --shard-steer, --busy-poll, --cc, --events, --json, --ipsec, --ipsec-psk, --ipsec-keylog, --host-netns, --external-tun, --external-addr, --external-host-addr, --external-mtu, --external-host-netns, --external-pcap, --fw-rule, --web, --web-token, --nlb, --nlb-priority, --nlb-mode, --nlb-rule, --nlb-stopped, --nlb-app, --help/,
    ],
    [['--pcap-size', '5'], /--pcap-size and --pcap-files go with --pcap FILE/],
    [['--pcap', '/tmp/c.pcap', '--pcap-files', '3'], /--pcap-files N needs --pcap-size MB \(the size at which a file is full\), as tcpdump -W needs -C/],
    [['--pcap', '/tmp/c.pcap', '--pcap-size', '0'], /--pcap-size must be an integer from 1 to 1000000, got "0"/],
    [['--no-host-config', '--host-addr', '198.18.0.1/24'], /--no-host-config leaves the kernel side as it is: give --host-addr only without it/],
    [['--no-host-config', '--mtu=9000'], /--no-host-config uses the device's own MTU/],
    [['extra'], /unexpected argument "extra"; usage: faultstack run --addr IP\/PREFIX \[options\]/],
  ];
  for (const [argv, re] of cases) {
    it(`rejects ${JSON.stringify(argv)}`, () => {
      expect(runMsg(...argv)).toMatch(re);
    });
  }

  it('requires --addr', () => {
    expect(usageMessage(() => buildRunOptions([]))).toBe(
      'faultstack run: --addr is required: an IPv4 address with a prefix length from 1 to 31, e.g. 198.18.0.2/24',
    );
  });

  it('--tap: an Ethernet link, a bridge port without a host address, the default MAC from --addr', () => {
    const o = buildRunOptions([
      '--addr',
      '198.18.0.2/24',
      '--tap',
      'fst0',
      '--bridge',
      'fsbr0',
      '--gateway',
      '198.18.0.1',
      '--proxy-arp',
      '198.18.10.7/24',
      '--promiscuous',
      '--join',
      '239.1.2.3',
      '--join',
      '239.1.2.3',
    ])!;
    expect(o.join).toEqual([0xef010203]);
    expect(o).toMatchObject({ tun: 'fst0', link: 'tap', bridge: 'fsbr0', mac: 0x0200c6120002, gateway: 0xc6120001, promiscuous: true, hostAddr: null });
    expect(o.proxyArp).toEqual([{ addr: 0xc6120a00, prefix: 24 }]); // host bits dropped
    expect(o.control).toMatch(/\/fst0\.sock$/);
    const p2p = buildRunOptions(['--addr', '198.18.0.2/24', '--tap', 'fst0', '--mac', '52-54-00-12-34-56'])!;
    expect(p2p).toMatchObject({ link: 'tap', mac: 0x525400123456, bridge: undefined });
    expect(formatIpv4(p2p.hostAddr!.addr)).toBe('198.18.0.1'); // a point-to-point Ethernet link to the kernel
    expect(buildRunOptions(base)!.link).toBeUndefined();
  });

  it('--tx-thread off writes from the stack thread; on (the default) leaves the option out', () => {
    const base = ['--tun', 'fst0', '--addr', '198.18.0.2/24'];
    expect(buildRunOptions([...base, '--tx-thread', 'off'])!.txThread).toBe(false);
    expect(buildRunOptions([...base, '--tx-thread', 'on'])!.txThread).toBeUndefined();
    expect(buildRunOptions(base)!.txThread).toBeUndefined();
  });

  it('--shards steers by client address unless --shard-steer kernel', () => {
    const base = ['--tun', 'fst0', '--addr', '198.18.0.2/24', '--queues', '2'];
    expect(buildRunOptions([...base, '--shards'])!.shardSteer).toBe('client');
    expect(buildRunOptions([...base, '--shards', '--shard-steer', 'kernel'])!.shardSteer).toBe('kernel');
    expect(buildRunOptions(base)!.shardSteer).toBeUndefined();
  });

  const tapCases: [string[], string][] = [
    [['--tap', 't0', '--tun', 't1'], 'faultstack run: give --tun or --tap, not both (--tun t1, --tap t0)'],
    [['--bridge', 'br0'], 'faultstack run: --bridge needs --tap NAME (a TUN device carries IP packets, no Ethernet frames)'],
    [['--mac', '02:00:00:00:00:01'], 'faultstack run: --mac needs --tap NAME (a TUN device carries IP packets, no Ethernet frames)'],
    [['--gateway', '198.18.0.1'], 'faultstack run: --gateway needs --tap NAME (a TUN device carries IP packets, no Ethernet frames)'],
    [['--proxy-arp', '198.18.10.0/24'], 'faultstack run: --proxy-arp needs --tap NAME (a TUN device carries IP packets, no Ethernet frames)'],
    [['--promiscuous'], 'faultstack run: --promiscuous needs --tap NAME (a TUN device carries IP packets, no Ethernet frames)'],
    [
      ['--tap', 't0', '--mac', '03:00:00:00:00:01'],
      'faultstack run: --mac must be a unicast MAC address: 03:00:00:00:00:01 has the group bit set (its first octet is odd), e.g. 02:00:c6:12:00:02, got "03:00:00:00:00:01"',
    ],
    [
      ['--tap', 't0', '--mac', '02:00:00:00:01'],
      'faultstack run: --mac must be a unicast MAC address, six hex octets such as 02:00:c6:12:00:02 (first octet even), got "02:00:00:00:01"',
    ],
    [['--tap', 't0', '--mac', '00:00:00:00:00:00'], 'faultstack run: --mac must be a unicast MAC address, not 00:00:00:00:00:00, got "00:00:00:00:00:00"'],
    [['--tap', 't0', '--gateway', '198.18.1.1'], 'faultstack run: --gateway must be a neighbour in the subnet of --addr (198.18.0.0/24), got "198.18.1.1"'],
    [
      ['--tap', 't0', '--gateway', '198.18.0.2'],
      'faultstack run: --gateway must be another host of 198.18.0.0/24 than --addr (198.18.0.1 to 198.18.0.254), got "198.18.0.2"',
    ],
    [
      ['--tap', 't0', '--gateway', '198.18.0.255'],
      'faultstack run: --gateway must be another host of 198.18.0.0/24 than --addr (198.18.0.1 to 198.18.0.254), got "198.18.0.255"',
    ],
    [['--tap', 't0', '--gateway', 'router'], 'faultstack run: --gateway must be an IPv4 unicast address, e.g. 198.18.0.1, got "router"'],
    [
      ['--tap', 't0', '--bridge', 'br0', '--host-addr', '198.18.0.1/24'],
      'faultstack run: --host-addr does not go with --bridge: a bridge port carries no address (give the bridge, or a veth in it, an address of 198.18.0.0/24)',
    ],
    [['--tap', 't0', '--bridge', 't0'], 'faultstack run: --bridge must name a bridge, not the TAP device itself (both are "t0")'],
    [['--tap', 't0', '--busy-poll'], 'faultstack run: --busy-poll polls one TUN device from one thread: drop --shards and --tap'],
    [['--queues', '2', '--shards', '--busy-poll'], 'faultstack run: --busy-poll polls one TUN device from one thread: drop --shards and --tap'],
    [['--queues', '2', '--shard-steer', 'kernel'], 'faultstack run: --shard-steer goes with --shards'],
    [['--queues', '2', '--shards', '--shard-steer', 'flow'], 'faultstack run: --shard-steer must be one of client, kernel, got "flow"'],
    [
      ['--tap', 't0', '--queues', '2', '--shards'],
      'faultstack run: --shards runs on a TUN device only (a TAP device has one neighbour table and ARP for all its queues); drop --shards, --queues N still works',
    ],
    [
      ['--tap', 't0', '--proxy-arp', '224.0.0.0/4'],
      'faultstack run: --proxy-arp must be a unicast subnet (not in 0.0.0.0/8, 127.0.0.0/8 or 224.0.0.0 and above), e.g. 198.18.10.0/24, got "224.0.0.0/4"',
    ],
    [['--join', '239.1.2.3'], 'faultstack run: --join needs --tap NAME (a TUN device carries IP packets, no Ethernet frames)'],
    [
      ['--tap', 't0', '--join', '198.18.0.1'],
      'faultstack run: --join must be an IPv4 multicast group in 224.0.1.0 to 239.255.255.255, e.g. 239.255.0.10, got "198.18.0.1"',
    ],
    [
      ['--tap', 't0', '--join', '224.0.0.251'],
      'faultstack run: --join must not be in 224.0.0.0/24 (link-local control groups are never reported, RFC 2236 6), e.g. 239.255.0.10, got "224.0.0.251"',
    ],
    [['--tap', 'a/b'], 'faultstack run: --tap must be a Linux interface name: 1 to 15 characters, without "/", ":" or whitespace, got "a/b"'],
  ];
  for (const [argv, msg] of tapCases) {
    it(`rejects ${JSON.stringify(argv)}`, () => {
      expect(runMsg(...argv)).toBe(msg);
    });
  }

  it('passes --pcap-size, --pcap-files and --no-host-config on', () => {
    const o = buildRunOptions(['--addr', '198.18.0.2/24', '--pcap', '/tmp/c.pcap', '--pcap-size', '5', '--pcap-files', '3', '--no-host-config'])!;
    expect(o).toMatchObject({ pcap: '/tmp/c.pcap', pcapSizeMB: 5, pcapFiles: 3, hostConfig: false });
    expect(buildRunOptions(['--addr', '198.18.0.2/24'])!.hostConfig).toBe(true);
  });

  it('rejects --pcap and --events naming the same file', () => {
    expect(runMsg('--pcap', '/tmp/same', '--events', '/tmp/same')).toBe('faultstack run: --pcap and --events must be different files, both are "/tmp/same"');
  });
});

describe('the real bin/faultstack', () => {
  // Compiled into a private tree (not the shared dist/) so parallel builds cannot collide.
  let build: PrivateBuild;
  let root = '';
  let shim = '';

  beforeAll(() => {
    build = buildPrivate(['bin/cli/main.js', 'bin/cli/commands/run.js']);
    root = build.root;
    shim = build.shim;
  }, 120_000);

  afterAll(() => {
    build?.remove();
  });

  const fsRun = (args: string[], env: NodeJS.ProcessEnv = {}) => {
    const r = spawnSync(shim, args, { encoding: 'utf8', env: { ...process.env, FAULTSTACK_RUN_DIR: path.join(root, 'run'), ...env }, timeout: 20_000 });
    return { code: r.status, stdout: r.stdout, stderr: r.stderr };
  };

  it('exits 2 with one line for bad run values, naming the valid ones', () => {
    const cases: [string[], string][] = [
      [['run', '--addr', '198.18.0.2/24', '--mtu', 'abc'], 'faultstack run: --mtu must be an integer from 68 to 65535, got "abc"\n'],
      [['run', '--addr', '198.18.0.2/24', '--cc', 'bbr'], 'faultstack run: --cc must be one of newreno, cubic, got "bbr"\n'],
      [
        ['run', '--addr', '198.18.0.2/24', '--services', 'ftp'],
        'faultstack run: --services has unknown item "ftp": must be a comma-separated list of echo, discard, chargen, http, iperf3, mtls, all, or none, got "ftp"\n',
      ],
      [
        ['run', '--addr', '198.18.0.2/24', '--host-addr', '198.18.9.1/24'],
        'faultstack run: --host-addr must be in the subnet of --addr (198.18.0.0/24), got "198.18.9.1/24"; e.g. 198.18.0.1/24\n',
      ],
      [['run'], 'faultstack run: --addr is required: an IPv4 address with a prefix length from 1 to 31, e.g. 198.18.0.2/24\n'],
    ];
    for (const [args, err] of cases) {
      const r = fsRun(args);
      expect({ args, code: r.code, stderr: r.stderr, stdout: r.stdout }).toEqual({ args, code: 2, stderr: err, stdout: '' });
    }
  });

  it('exits 2 for unknown commands and flags', () => {
    const r = fsRun(['stast']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/^faultstack: unknown command "stast" \(did you mean stats\?\); commands: run, stats, .*\n$/);
    const r2 = fsRun(['stats', '--bogus']);
    expect(r2.code).toBe(2);
    expect(r2.stderr).toBe(
      'faultstack stats: unknown flag --bogus; valid flags: --control, --json, --all, --limit, --state, --port, --peer, --gc, --watch, --count, --help\n',
    );
    const r3 = fsRun([]);
    expect(r3.code).toBe(2);
    expect(r3.stderr).toContain('Usage: faultstack COMMAND');
  });

  it('prints --help for the program and each command, exit 0', () => {
    const top = fsRun(['--help']);
    expect(top.code).toBe(0);
    for (const c of ['run', 'stats', 'fault', 'param', 'events', 'connect', 'unlock', 'routes', 'ipsec', 'faults', 'certs', 'demo']) {
      expect(top.stdout).toContain(`  ${c} `);
    }
    for (const c of ['run', 'stats', 'fault', 'param', 'events', 'connect', 'unlock', 'routes', 'ipsec']) {
      const r = fsRun([c, '--help']);
      expect({ c, code: r.code, stderr: r.stderr }).toEqual({ c, code: 0, stderr: '' });
      expect(r.stdout).toMatch(/^Usage: faultstack /);
    }
    const h = fsRun(['help', 'run']);
    expect(h.code).toBe(0);
    expect(h.stdout).toContain('--mtu N');
  });

  it('exits 1 with one line when no stack is running', () => {
    const r = fsRun(['stats']);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(
      `faultstack: no running faultstack found in ${path.join(root, 'run')} (start one with \`faultstack run ...\` or pass --control PATH)\n`,
    );
  });

  it('reports a command whose module is not built, without affecting the others', () => {
    const missing = path.join(root, 'dist/bin/cli/commands/certs.js');
    if (fs.existsSync(missing)) fs.rmSync(missing);
    const r = fsRun(['certs']);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^faultstack: command "certs" is not available in this build \(.*certs\.js is missing; run `make build`\)\n$/);
    expect(fsRun(['stats', '--help']).code).toBe(0);
  });

  it('prints a stack trace only with FAULTSTACK_DEBUG=1', () => {
    const plain = fsRun(['stats', '--control', path.join(root, 'nothing.sock')]);
    expect(plain.code).toBe(1);
    expect(plain.stderr.trim().split('\n')).toHaveLength(1);
    const dbg = fsRun(['stats', '--control', path.join(root, 'nothing.sock')], { FAULTSTACK_DEBUG: '1' });
    expect(dbg.code).toBe(1);
    expect(dbg.stderr.trim().split('\n').length).toBeGreaterThan(1);
    expect(dbg.stderr).toContain('    at ');
  });

  describe('run, with a stand-in stack runtime', () => {
    // Replaces the compiled runtime in the private tree only.
    const FAKE_RUNTIME = `
      const mode = process.env.FAKE_RT;
      exports.startStackRuntime = async (opts) => {
        process.stderr.write('opts ' + JSON.stringify({ tun: opts.tun, mtu: opts.mtu, services: opts.services, faults: opts.faults, control: opts.control }) + '\\n');
        if (mode === 'throw') throw new Error('cannot open /dev/net/tun: No such device');
        if (mode === 'usage') { const { UsageError } = require('../util/errors'); throw new UsageError('faultstack run: --fault 1=buggy: no such fault; faults: 297040, 903927'); }
        if (mode === 'slow') { process.stderr.write('starting\\n'); await new Promise((r) => setTimeout(r, 700)); }
        let stop;
        const closed = new Promise((r) => { stop = r; });
        if (mode === 'selfstop') setTimeout(stop, 200);
        const keep = setInterval(() => {}, 1000);
        return {
          readyLine: 'faultstack ready: fake',
          closed,
          shutdown: async () => { process.stderr.write('shutdown called\\n'); clearInterval(keep); stop(); },
        };
      };
    `;

    beforeAll(() => {
      const f = path.join(root, 'dist/stack/runtime/run.js');
      fs.mkdirSync(path.dirname(f), { recursive: true });
      fs.writeFileSync(f, FAKE_RUNTIME);
    });

    const start = (mode: string, extra: string[] = []) => {
      const c = spawn(shim, ['run', '--addr', '198.18.0.2/24', '--tun', 'fsx0', '--mtu', '1400', '--fault', '297040=buggy', ...extra], {
        env: { ...process.env, FAKE_RT: mode, FAULTSTACK_RUN_DIR: path.join(root, 'run') },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let out = '';
      let err = '';
      c.stdout.on('data', (d) => {
        out += d;
      });
      c.stderr.on('data', (d) => {
        err += d;
      });
      const exit = new Promise<number | null>((r) => c.on('close', (code) => r(code)));
      const until = async (re: RegExp, which: () => string) => {
        for (let i = 0; i < 200 && !re.test(which()); i++) await new Promise((r) => setTimeout(r, 25));
      };
      return { c, exit, out: () => out, err: () => err, until };
    };

    it('passes RunOptions, prints the ready line, and shuts down cleanly on SIGTERM and SIGINT', async () => {
      for (const sig of ['SIGTERM', 'SIGINT'] as const) {
        const r = start('ok');
        await r.until(/ready/, r.out);
        expect(r.out()).toBe('faultstack ready: fake\n');
        expect(JSON.parse(/opts (.*)/.exec(r.err())![1]!)).toEqual({
          tun: 'fsx0',
          mtu: 1400,
          services: ['echo', 'discard', 'chargen', 'http', 'iperf3'],
          faults: [{ id: '297040', mode: 'buggy' }],
          control: path.join(root, 'run', 'fsx0.sock'),
        });
        r.c.kill(sig);
        expect(await r.exit).toBe(0);
        expect(r.err()).toContain('shutdown called');
      }
    });

    it('exits 1 with one line when startup fails, 2 when the runtime rejects a value', async () => {
      const r = start('throw');
      expect(await r.exit).toBe(1);
      expect(
        r
          .err()
          .split('\n')
          .filter((l) => !l.startsWith('opts ')),
      ).toEqual(['faultstack: cannot start the stack on fsx0: cannot open /dev/net/tun: No such device', '']);
      const u = start('usage');
      expect(await u.exit).toBe(2);
      expect(u.err()).toContain('faultstack run: --fault 1=buggy: no such fault; faults: 297040, 903927\n');
    });

    it('a signal during startup shuts the stack down as soon as it is up', async () => {
      const r = start('slow');
      await r.until(/starting/, r.err);
      r.c.kill('SIGTERM');
      expect(await r.exit).toBe(0);
      expect(r.out()).toBe('faultstack ready: fake\n');
      expect(r.err()).toContain('shutdown called');
    });

    it('exits 0 when the stack stops by itself', async () => {
      const r = start('selfstop');
      expect(await r.exit).toBe(0);
      expect(r.err()).toContain('faultstack run: the stack stopped\n');
    });
  });

  it('says how to build when dist is missing', () => {
    const bare = fs.mkdtempSync(path.join(os.tmpdir(), 'fs-bare-'));
    try {
      fs.mkdirSync(path.join(bare, 'bin'));
      fs.copyFileSync(path.join(REPO, 'bin/faultstack'), path.join(bare, 'bin/faultstack'));
      fs.chmodSync(path.join(bare, 'bin/faultstack'), 0o755);
      const r = spawnSync(path.join(bare, 'bin/faultstack'), ['stats'], { encoding: 'utf8' });
      expect(r.status).toBe(1);
      expect(r.stderr).toBe('faultstack is not built: run `make build`\n');
    } finally {
      fs.rmSync(bare, { recursive: true, force: true });
    }
  });
});
