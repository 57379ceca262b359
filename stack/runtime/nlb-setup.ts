/**
 * `faultstack run --tap T --nlb CLUSTER_IP ...`: makes the stack a Network Load
 * Balancing host. Puts an NlbHost (stack/nlb/host.ts) on the Ethernet interface, reads
 * its parameters live from the fault configuration (the WLBS registry values), writes
 * its events to the event log, installs KB 972183's module on its hook, starts the
 * lab's sticky application when asked, and serves `faultstack nlb ...` on the control
 * socket.
 */
import { randomInt } from 'node:crypto';
import type { RuntimeOptions as RunOptions } from './options';
import type { ControlHandler } from '../control/server';
import type { FaultConfig } from '../faults/config';
import type { EventLog } from '../faults/events';
import { kb972183 } from '../faults/kb972183/index';
import type { InstalledFault } from '../faults/module';
import type { Ipsec } from '../ipsec/ipsec';
import { NlbHost, type NlbEvent } from '../nlb/host';
import { defaultRule, type NlbConfig, type NlbParams } from '../nlb/config';
import { createNetApi } from '../api/net';
import { startMailbox, type MailboxHandle } from '../services/mailbox';
import type { Stack } from '../stack';
import { CodedError } from '../util/errors';
import type { EthernetRuntime } from './ethernet';

export interface NlbRuntime {
  host: NlbHost;
  handlers: Record<string, ControlHandler>;
  close(): Promise<void>;
  /** For the ready line. */
  summary(): string;
}

/** NlbEvent -> the event log's kinds and messages (the fault's own events come from stack/faults/kb972183). */
function logged(e: NlbEvent): { kind: string; message: string; fault?: string; data: object } {
  switch (e.kind) {
    case 'convergence-started':
      return { kind: 'nlb-convergence-started', message: `convergence started: ${e.reason} (hosts ${e.hosts.join(', ')})`, data: e };
    case 'convergence-finished':
      return {
        kind: 'nlb-convergence-finished',
        message: `converged in ${e.ms} ms with hosts ${e.hosts.join(', ')}: this host owns ${e.buckets} bucket(s); default host ${e.defaultHost}`,
        data: e,
      };
    case 'host-joined':
      return { kind: 'nlb-host-joined', message: `host ${e.host} (${e.dedicatedIp}) joined the cluster`, data: e };
    case 'host-lost':
      return { kind: 'nlb-host-lost', message: `host ${e.host} (${e.dedicatedIp}) left the cluster: ${e.reason}`, data: e };
    case 'not-owner-dropped':
      return {
        kind: 'nlb-not-owner-dropped',
        message: `${e.what} from ${e.client} dropped: bucket ${e.bucket} of rule ${e.rule} belongs to host ${e.owner || 'nobody'} (at most 4 of these a period)`,
        data: e,
      };
    case 'descriptor-block-allocated':
      return {
        kind: 'nlb-descriptor-block-allocated',
        message: `connection descriptor block ${e.blocks} allocated (${e.perAlloc} descriptors; ${e.capacity} in all)`,
        data: e,
      };
    case 'descriptors-exhausted':
      return {
        kind: 'nlb-descriptors-exhausted',
        message: `no connection descriptor left (${e.inUse} in use, MaxDescriptorAllocs reached): the connection from ${e.client} is dropped`,
        data: e,
      };
    case 'tunnel-opened':
      return {
        kind: 'nlb-tunnel-opened',
        message: `${e.local ? 'this host' : `host ${e.host}`} opened an IPsec tunnel for ${e.identity} from ${e.client}`,
        data: e,
      };
    case 'tunnel-state-dropped':
      return {
        kind: 'nlb-tunnel-state-dropped',
        fault: 'kb972183',
        message: `old IPsec tunnel state of ${e.identity} from ${e.client} (IKE SA ${e.ikeSa}) destroyed: ${e.reason}`,
        data: e,
      };
    case 'state-changed':
      return { kind: 'nlb-state-changed', message: `host state ${e.from} -> ${e.to}`, data: e };
    case 'rule-conflict':
      return {
        kind: 'nlb-rule-conflict',
        message: `host ${e.host} (${e.dedicatedIp}) has other port rules, bucket count or hash seed (host code ${e.theirs}, ours ${e.ours}): the cluster cannot converge`,
        data: e,
      };
    case 'duplicate-priority':
      return { kind: 'nlb-duplicate-priority', message: `another host (${e.dedicatedIp}) uses our priority ${e.host}: its heartbeats are ignored`, data: e };
  }
}

export function attachNlb(
  stack: Stack,
  opts: RunOptions,
  link: EthernetRuntime | null,
  ipsec: Ipsec | null,
  faults: FaultConfig,
  events: EventLog,
): NlbRuntime | null {
  const o = opts.nlb;
  if (!o) return null;
  if (!link) throw new CodedError('EINVAL', '--nlb needs --tap NAME');
  const p = faults.params;
  const params = (): NlbParams => ({
    AliveMsgPeriod: p.AliveMsgPeriod,
    AliveMsgTolerance: p.AliveMsgTolerance,
    DescriptorsPerAlloc: p.DescriptorsPerAlloc,
    MaxDescriptorAllocs: p.MaxDescriptorAllocs,
    MaskSourceMAC: p.MaskSourceMAC,
    FilterICMP: p.FilterICMP,
  });
  const config: NlbConfig = {
    clusterIp: o.clusterIp,
    clusterPrefix: o.clusterPrefix,
    dedicatedIp: opts.addr.addr,
    priority: o.priority,
    mode: o.mode,
    rules: o.rules ?? [{ ...defaultRule(), affinity: p.NlbAffinity }],
    buckets: p.NlbBucketCount,
    hashSeed: 0,
    hostName: `faultstack-${o.priority}`,
    initialState: o.initialState,
  };
  const emit = (x: { kind: string; message: string; fault?: string; data?: object }) => {
    try {
      events.emit(x);
    } catch {
      /* closed at shutdown */
    }
  };
  const host = new NlbHost({
    config,
    params,
    link: link.eth,
    stack,
    ipsec,
    incarnation: randomInt(1, 2 ** 31),
    onEvent: (e) => emit(logged(e)),
  });
  const fault: InstalledFault = kb972183.install({ stack, config: faults, events, features: { nlb: host, ipsec: ipsec ?? undefined, ethernet: link.eth } });
  let mailbox: MailboxHandle | null = null;
  if (o.mailbox) {
    mailbox = startMailbox({
      api: createNetApi(stack),
      ipsec,
      host: o.priority,
      localAddr: opts.addr.addr,
      directory: o.mailbox.directory,
      onEvent: (kind, message, data) => emit({ kind, message, data }),
    });
  }
  const now = () => stack.clock();
  const handlers: Record<string, ControlHandler> = {
    'nlb.query': () => host.query(now()),
    'nlb.display': () => ({ ...host.display(now()), ...(fault.stats?.() ?? {}), ...(mailbox ? { mailbox: mailbox.stats() } : {}) }),
    'nlb.params': () => host.paramsReply(),
    'nlb.drainstop': () => {
      const r = host.drainstop(now());
      stack.flushSoon();
      return { ...r, ...host.query(now()) };
    },
    'nlb.stop': () => {
      const r = host.stop(now());
      stack.flushSoon();
      return { ...r, ...host.query(now()) };
    },
    'nlb.start': () => {
      const r = host.start(now());
      stack.flushSoon();
      return { ...r, ...host.query(now()) };
    },
    ...(mailbox ? { mailbox: () => mailbox!.stats() } : {}),
  };
  return {
    host,
    handlers,
    async close() {
      if (mailbox) await mailbox.close();
      fault.uninstall();
      host.close();
      stack.flushSoon();
    },
    summary: () => `NLB host ${o.priority} of ${config.mode} cluster ${host.display(now()).config.clusterIp}`,
  };
}
