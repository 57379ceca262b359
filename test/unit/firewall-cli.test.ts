/**
 * The firewall's command line: `faultstack run`'s firewall flags checked into
 * RunOptions.firewall (or one-line usage errors), packet-filter rules, and what
 * `faultstack fw` prints from a reply.
 */
import { describe, expect, it } from 'vitest';
import { buildRunOptions } from '../../bin/cli/commands/run';
import { renderFw } from '../../bin/cli/commands/fw';
import { parseRule, RuleSet, RuleSyntaxError } from '../../stack/firewall/rules';
import { formatIpv4 } from '../../stack/wire/addr';
import { usageMessage } from './helpers/usage';

const base = ['--tun', 'fwin0', '--addr', '198.18.1.1/24', '--external-tun', 'fwex0', '--external-addr', '198.19.0.1/24'];

describe('faultstack run as a firewall', () => {
  it('builds the firewall options: the external side, its kernel-side address by default, the rules after the default', () => {
    const o = buildRunOptions([...base, '--external-mtu', '1280', '--fw-rule', 'allow in tcp/80 to 198.19.0.1', '--fw-rule', 'deny out udp/53'])!;
    expect(o.firewall).toMatchObject({ tun: 'fwex0', mtu: 1280, rules: ['allow in tcp/80 to 198.19.0.1/32', 'deny out udp/53'] });
    expect(formatIpv4(o.firewall!.addr.addr)).toBe('198.19.0.1');
    expect(formatIpv4(o.firewall!.hostAddr!.addr)).toBe('198.19.0.2');
    expect(buildRunOptions(['--tun', 'a', '--addr', '198.18.0.2/24'])!.firewall).toBeUndefined();
  });

  const cases: [string[], RegExp][] = [
    [['--tun', 'a', '--addr', '198.18.1.1/24', '--external-addr', '198.19.0.1/24'], /go with --external-tun NAME/],
    [['--tun', 'a', '--addr', '198.18.1.1/24', '--external-tun', 'b'], /--external-tun needs --external-addr/],
    [['--tun', 'a', '--addr', '198.18.1.1/24', '--external-tun', 'a', '--external-addr', '198.19.0.1/24'], /must differ from the internal device/],
    [
      ['--tun', 'a', '--addr', '198.18.1.1/24', '--external-tun', 'b', '--external-addr', '198.18.0.1/16'],
      /overlap: the two interfaces need separate networks/,
    ],
    [[...base, '--external-host-addr', '198.19.5.1/24'], /--external-host-addr must be another address of 198\.19\.0\.0\/24/],
    [[...base, '--fw-rule', 'permit all'], /--fw-rule is not a rule: .*it must start with allow or deny/],
    [[...base, '--fw-rule', 'allow in icmp/80'], /ports go with tcp or udp only/],
    [[...base, '--shards', '--queues', '2'], /a firewall runs in one thread/],
    [[...base, '--external-host-netns', 'no-such-namespace-here'], /must be an existing network namespace/],
    [['--tap', 'a', '--addr', '198.18.1.1/24', '--external-tun', 'b', '--external-addr', '198.19.0.1/24'], /two TUN devices/],
  ];
  for (const [argv, re] of cases) {
    it(`refuses ${argv.slice(argv.indexOf('--addr') + 2).join(' ') || argv.join(' ')} in one line`, () => {
      const msg = usageMessage(() => buildRunOptions(argv));
      expect(msg).toMatch(re);
      expect(msg.split('\n')).toHaveLength(1);
    });
  }
});

describe('packet-filter rules', () => {
  it('parse into a normal form and match first-wins on protocol, port range and prefixes', () => {
    expect(parseRule('ALLOW  in TCP/1024-5000 from 198.19.0.0/16').text).toBe('allow in tcp/1024-5000 from 198.19.0.0/16');
    const rs = new RuleSet(['deny out udp/53', 'allow out any', 'allow in udp/1024-5000 from 198.19.0.2 to 198.19.0.1/32']);
    expect(rs.match('out', 17, 1, 2, 53)).toBe('deny');
    expect(rs.match('out', 17, 1, 2, 54)).toBe('allow');
    expect(rs.match('in', 17, 0xc6130002, 0xc6130001, 1025)).toBe('allow');
    expect(rs.match('in', 17, 0xc6130003, 0xc6130001, 1025)).toBeNull();
    expect(rs.match('in', 6, 0xc6130002, 0xc6130001, 1025)).toBeNull();
    expect(rs.describe().map((r) => r.hits)).toEqual([1, 1, 1]);
    for (const bad of [
      '',
      'allow',
      'allow up tcp',
      'allow in gre',
      'allow in tcp/0',
      'allow in tcp/9-3',
      'allow in tcp from',
      'allow in tcp from 1.2.3.4 from 5.6.7.8',
    ]) {
      expect(() => parseRule(bad), bad).toThrow(RuleSyntaxError);
    }
  });
});

describe('faultstack fw output', () => {
  it('summary: interfaces, routes, non-zero counters, drops by reason, the fault line', () => {
    const text = renderFw('summary', {
      interfaces: [{ name: 'internal', device: 'fw-in', address: '198.18.1.1/24', mtu: 1500, hostNetns: 'in' }],
      routes: [{ destination: '0.0.0.0/0', interface: 'external', mtu: 1500, kind: 'default' }],
      counters: { FwForwardedOut: 3, FwDropped: 800 },
      drops: { 'media-port-closed': 800, spoofed: 0 },
      fwc: {},
      media: { enabled: true, MediaPortsLeftClosed: 5 },
      portScan: { wellKnown: 10, allPorts: 20, intervalMs: 60_000, raised: { 15104: 1, 15105: 0 } },
      fault: { id: 'kb319381', mode: 'buggy', releaseDelayMs: 500, rebindsWhileReleasing: 2, addrInUse: 2, leftClosed: 5, reopened: 0 },
    });
    expect(text).toContain('internal  fw-in   198.18.1.1/24  1500  in');
    expect(text).toMatch(/media-port-closed +800/);
    expect(text).not.toContain('spoofed');
    expect(text).toContain('streaming media filter (in use):');
    expect(text).toContain('events 15104: 1, 15105: 0');
    expect(text).toContain('fault kb319381: buggy (release delay 500 ms; re-binds while releasing 2, WSAEADDRINUSE 2, left closed 5, re-opened 0)');
  });

  it('bindings: each binding with its media state', () => {
    const text = renderFw('bindings', {
      bindings: [
        {
          client: '198.18.1.2',
          session: 1,
          bindId: 2,
          external: '198.19.0.1:7000',
          relay: '198.18.1.1:5000',
          clientPort: 7000,
          state: 'bound',
          media: { state: 'closed', server: '198.19.0.2' },
          relayedIn: 0,
          relayedOut: 0,
          dropped: 160,
        },
      ],
      media: [],
      openings: [],
    });
    expect(text).toMatch(/198\.19\.0\.1:7000 +198\.18\.1\.1:5000 +7000 +bound +closed for 198\.19\.0\.2 +0 +0 +160/);
  });
});
