/**
 * KB 972183's catalogue entry (not implemented yet: the NLB cluster in stack/nlb and this
 * folder's behaviour land with their own branch).
 */
import type { FaultSpec } from '../spec';
import { WLBS, WLBS_IF } from '../registry';

export const spec = {
  id: 'kb972183',
  alias: 'nlb-ipsec',
  title: 'Users may experience periodic connection loss for applications that are running in a Windows Server 2008 NLB cluster using an IPsec connection',
  article: 'KB 972183',
  appliesTo: 'Windows Server 2008 and 2008 SP2 Network Load Balancing',
  summary:
    'Every host of an NLB cluster sees every packet and passes up only those whose client maps to a bucket it owns. ' +
    'With single affinity and IPsec, NLB balances the tunnels at the IP level and cannot see the TCP connections inside. ' +
    'A client that reconnects from another network gets a new tunnel that may map to another host while the old host ' +
    'still holds state for the old tunnel, so its connections end up on several hosts and applications that expect one ' +
    'host per client flap between connected and trying to connect. The hotfix (DropStateIfNotBucketOwner=1) makes the ' +
    'host that does not own the bucket drop the old tunnel\'s state so the client has one tunnel on one host.',
  modes: ['off', 'buggy', 'hotfixed'],
  defaultMode: 'off',
  params: {
    DropStateIfNotBucketOwner: {
      type: 'bool', default: 1, system: 'windows', registry: WLBS_IF,
      meaning: 'with the hotfix: a host that does not own the client\'s bucket drops the old IPsec tunnel\'s state, so a client has one active tunnel; 0 or absent: the old behaviour',
      source: 'KB 972183: 1 once the hotfix is installed',
    },
    AliveMsgPeriod: {
      type: 'int', default: 1000, min: 100, max: 10_000, unit: 'ms', system: 'windows', registry: WLBS,
      meaning: 'NLB heartbeat period',
      source: 'NLB registry reference: 1000 ms',
    },
    AliveMsgTolerance: {
      type: 'int', default: 5, min: 5, max: 100, unit: 'heartbeats', system: 'windows', registry: WLBS,
      meaning: 'missed heartbeats after which a host is dropped and the cluster converges',
      source: 'NLB registry reference: 5',
    },
    NlbBucketCount: {
      type: 'int', default: 60, min: 1, max: 4096, unit: 'buckets', system: 'windows', registry: null,
      meaning: 'number of hash buckets the client space is divided into; each is owned by one host',
      source: 'our choice: not in any public document; 60 divides evenly among 1..6 hosts',
    },
    NlbAffinity: {
      type: 'enum', values: ['none', 'single', 'network'], default: 'single', system: 'windows', registry: null,
      meaning: 'port-rule affinity: none (client address and port), single (client address), network (client /24)',
      source: 'NLB documentation: single is the default; our name for the port-rule setting',
    },
    DescriptorsPerAlloc: {
      type: 'int', default: 512, min: 16, max: 1024, unit: 'descriptors', system: 'windows', registry: WLBS,
      meaning: 'connection descriptors allocated per block',
      source: 'NLB registry reference: 512',
    },
    MaxDescriptorAllocs: {
      type: 'int', default: 512, min: 1, max: 1024, unit: 'blocks', system: 'windows', registry: WLBS,
      meaning: 'most descriptor blocks a host may allocate',
      source: 'NLB registry reference: 512',
    },
  },
  sources: [
    'KB 972183',
    'the NLB technical overview; KB 283028, KB 232711, KB 248346',
    'Wireshark\'s MS NLB dissector (the heartbeat format only)',
  ],
  implemented: false,
  ourChoices: [
    'bucket count and hash: 60 buckets, our choice (not public)',
    '"the same client" is the IPsec peer identity carried on each manually keyed SA, not the source address',
  ],
} as const satisfies FaultSpec;
