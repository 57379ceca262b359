/**
 * The NLB command line: `faultstack run --nlb ...` checked into NlbRunOptions (one-line
 * errors naming what is valid), and `faultstack nlb` rendering a host's replies as the
 * human output (from a real host on the virtual clock).
 */
import { describe, expect, test } from 'vitest';
import { buildRunOptions } from '../../bin/cli/commands/run';
import { renderDisplay, renderQuery } from '../../bin/cli/commands/nlb';
import { parseIpv4 } from '../../stack/wire/addr';
import { parsePortRule } from '../../stack/nlb/config';
import { usageMessage } from './helpers/usage';
import { makeCluster, waitConverged } from './helpers/nlb-cluster';
import { runFor } from './helpers/pair';

const base = ['--tap', 'nt1', '--bridge', 'br0', '--addr', '198.18.70.11/24'];
const msg = (...argv: string[]) => usageMessage(() => buildRunOptions([...base, ...argv]));

describe('faultstack run --nlb', () => {
  test("the flags become NlbRunOptions: the cluster prefix defaults to --addr's, rules parsed, state, the application", () => {
    const o = buildRunOptions([
      ...base,
      '--nlb',
      '198.18.70.100',
      '--nlb-priority',
      '2',
      '--nlb-mode',
      'igmp',
      '--nlb-rule',
      'ports=80,proto=tcp,affinity=none,weight=30',
      '--nlb-rule',
      'ports=443,proto=tcp,timeout=20',
      '--nlb-stopped',
      '--nlb-app',
      'mailbox=198.18.70.200:6100',
    ])!;
    expect(o.nlb).toEqual({
      clusterIp: parseIpv4('198.18.70.100'),
      clusterPrefix: 24,
      priority: 2,
      mode: 'igmp',
      initialState: 'stopped',
      rules: [parsePortRule('ports=80,proto=tcp,affinity=none,weight=30'), parsePortRule('ports=443,proto=tcp,timeout=20')],
      mailbox: { directory: { addr: parseIpv4('198.18.70.200'), port: 6100 } },
    });
    expect(buildRunOptions([...base, '--nlb', '198.18.70.100/25', '--nlb-priority', '1'])!.nlb).toMatchObject({
      clusterPrefix: 25,
      mode: 'unicast',
      rules: null,
      initialState: 'started',
    });
    expect(buildRunOptions(base)!.nlb).toBeUndefined();
  });

  test('bad NLB flags are one line each, saying what is valid', () => {
    expect(usageMessage(() => buildRunOptions(['--tun', 'fs0', '--addr', '198.18.70.11/24', '--nlb', '198.18.70.100', '--nlb-priority', '1']))).toBe(
      'faultstack run: --nlb needs --tap NAME (a cluster host is an Ethernet host: every host must see every frame)',
    );
    expect(msg('--nlb', '198.18.70.100')).toBe('faultstack run: --nlb needs --nlb-priority N (1 to 32, unique in the cluster)');
    expect(msg('--nlb', '198.18.70.100', '--nlb-priority', '33')).toMatch(/^faultstack run: --nlb-priority must be an integer from 1 to 32/);
    expect(msg('--nlb', '198.18.70.100', '--nlb-priority', '1', '--nlb-mode', 'broadcast')).toMatch(/--nlb-mode must be one of unicast, multicast, igmp/);
    expect(msg('--nlb', '224.0.0.9', '--nlb-priority', '1')).toMatch(/--nlb must be a unicast address/);
    expect(msg('--nlb', '198.18.71.100', '--nlb-priority', '1')).toBe(
      'faultstack run: --nlb 198.18.71.100 must be in the subnet of --addr (198.18.70.11/24): the cluster and dedicated addresses share the adapter',
    );
    expect(msg('--nlb', '198.18.70.11', '--nlb-priority', '1')).toMatch(/--nlb must differ from --addr/);
    expect(msg('--nlb', '198.18.70.100', '--nlb-priority', '1', '--nlb-rule', 'ports=90-80')).toMatch(
      /^faultstack run: --nlb-rule is not a valid port rule: ports must be START or START-END/,
    );
    expect(msg('--nlb', '198.18.70.100', '--nlb-priority', '1', '--nlb-rule', 'ports=80-90', '--nlb-rule', 'ports=85')).toMatch(
      /--nlb-rule: port rules .* overlap/,
    );
    expect(msg('--nlb-priority', '1')).toBe('faultstack run: --nlb-priority goes with --nlb CLUSTER_IP[/PREFIX]');
    expect(msg('--nlb', '198.18.70.100', '--nlb-priority', '1', '--nlb-app', 'mail=1.2.3.4:5')).toMatch(/--nlb-app must be mailbox=IP:PORT/);
  });
});

describe('faultstack nlb: the human output', () => {
  test('query and display render a converged host as nlb.exe would say it', async () => {
    const c = makeCluster(2);
    expect(await waitConverged(c)).toBe(true);
    await runFor(c.clock, 100, 5); // host 2's heartbeat after it converged
    const q = renderQuery(c.hosts[0]!.nlb.query(c.clock.now));
    expect(q.split('\n')[0]).toBe('Host 1 has converged as DEFAULT with the following host(s) as part of the cluster: 1, 2');
    expect(q).toMatch(/^\s+2\s+198\.18\.70\.12\s+host2\s+Converged/m);
    const d = renderDisplay(JSON.parse(JSON.stringify(c.hosts[1]!.nlb.display(c.clock.now))));
    expect(d).toContain('  clusterMac            02:bf:c6:12:46:64');
    expect(d).toContain('=== Port rule 0: ports=0-65535,proto=both,mode=multiple,affinity=single,weight=equal ===');
    expect(d).toContain('  this host owns 30 bucket(s): 1,3,5,7,9,11,13,15,17,19,21,23,25,27,29,31,33,35,37,39,41,43,45,47,49,51,53,55,57,59');
    expect(d).toContain('  host 1: 30 bucket(s) 0,2,4,6,8,10');
    expect(d).toContain('  no identity holds tunnels on more than one host');
    expect(d).toMatch(/NlbHeartbeatsOut\s+\d+/);
  });
});
