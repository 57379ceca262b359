/**
 * KB 972183's catalogue entry: the fault, the parameters it owns (with their registry
 * names), its modes, sources and our choices (the fault-module contract:
 * stack/faults/<id>/spec.ts). `faultstack faults` prints it; ./index.ts is its behaviour.
 *
 * The NLB host's own values (heartbeats, descriptors, buckets, MAC masking, ICMP) are
 * listed here too, because this is the fault that runs on the cluster; the NLB feature
 * (stack/nlb/) reads them through stack/runtime/nlb-setup.ts.
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
    "host that does not own the bucket drop the old tunnel's state so the client has one tunnel on one host.",
  modes: ['buggy', 'hotfixed'],
  defaultMode: 'hotfixed',
  params: {
    DropStateIfNotBucketOwner: {
      type: 'bool',
      default: 1,
      system: 'windows',
      registry: WLBS_IF,
      meaning:
        "with the hotfix installed (mode hotfixed): 1, a host that does not own the bucket of a client's new tunnel destroys its old tunnel's state, so a client has one active tunnel on one host; 0 (or absent), the old behaviour. Without the hotfix (mode buggy) the value is not read",
      source: 'KB 972183: default 1 once the hotfix is installed; absent or 0 disables it',
    },
    AliveMsgPeriod: {
      type: 'int',
      default: 1000,
      min: 100,
      max: 10_000,
      unit: 'ms',
      system: 'windows',
      registry: WLBS,
      meaning: 'NLB heartbeat period',
      source: 'NLB registry reference (TechNet cc962166), KB 232711: 1000 ms, 100-10000',
    },
    AliveMsgTolerance: {
      type: 'int',
      default: 5,
      min: 5,
      max: 100,
      unit: 'heartbeats',
      system: 'windows',
      registry: WLBS,
      meaning: 'missed heartbeats after which a host is dropped and the cluster converges',
      source: 'NLB registry reference (cc962166), KB 232711: 5, 5-100',
    },
    NlbBucketCount: {
      type: 'int',
      default: 60,
      min: 1,
      max: 64,
      unit: 'buckets',
      system: 'windows',
      registry: null,
      meaning: 'buckets the client space is cut into, per port rule; each is owned by one host (every host of a cluster must use the same)',
      source: "our choice: not in any public document; at most 64 because the heartbeat's bucket maps are 64 bits; 60 divides evenly among 1 to 6 hosts",
    },
    NlbAffinity: {
      type: 'enum',
      values: ['none', 'single', 'network'],
      default: 'single',
      system: 'windows',
      registry: null,
      meaning:
        "affinity of the default port rule (when no --nlb-rule is given): none (client address and port), single (client address), network (the client's /24)",
      source: "WMI MicrosoftNLB_PortRuleEx: single is the default; our name for the default rule's setting",
    },
    DescriptorsPerAlloc: {
      type: 'int',
      default: 512,
      min: 16,
      max: 1024,
      unit: 'descriptors',
      system: 'windows',
      registry: WLBS,
      meaning: 'connection descriptors allocated per block',
      source: 'NLB registry reference (Windows 2000): 512, 16-1024',
    },
    MaxDescriptorAllocs: {
      type: 'int',
      default: 512,
      min: 1,
      max: 1024,
      unit: 'blocks',
      system: 'windows',
      registry: WLBS,
      meaning: 'descriptor blocks a host may allocate; past them new connections are dropped (counted)',
      source: 'NLB registry reference (Windows 2000): 512, 1-1024 (Server 2008: MaximumConnectionDescriptors 262144 = 512 x 512)',
    },
    MaskSourceMAC: {
      type: 'bool',
      default: 1,
      system: 'windows',
      registry: WLBS_IF,
      meaning: 'unicast mode: send from 02-h-w-x-y-z (h the host priority) so that switches never learn the cluster MAC and keep flooding it',
      source: 'NLB technical overview, NLB registry reference: 1',
    },
    FilterICMP: {
      type: 'bool',
      default: 0,
      system: 'windows',
      registry: WLBS_IF,
      meaning: '0: every host takes ICMP sent to the cluster address (a ping gets one reply per host); 1: ICMP is balanced by client address',
      source: 'NLB registry reference: 0',
    },
  },
  sources: [
    'KB 972183',
    'Microsoft NLB technical overview',
    'KB 283028',
    'KB 232711',
    'KB 248346',
    'TechNet cc962166 (NLB registry entries)',
    'TechNet cc962158',
    'TechNet cc758275',
    'WMI MicrosoftNLB_PortRuleEx',
    'Wireshark MS NLB dissector (packet-msnlb.c), for the heartbeat layout only',
  ],
  ourChoices: [
    'buggy = the hotfix is not installed (DropStateIfNotBucketOwner is not read); hotfixed = installed, DropStateIfNotBucketOwner decides (1 by default)',
    'how a host learns that another opened a tunnel for an identity: every heartbeat period each host sends its IPsec descriptors (identity hash, client address, opening sequence number) in an extended heartbeat entry of its own (type 0xFA), and at once when a tunnel opens; a higher sequence number is a new tunnel',
    '"the same client" is the IKE peer identity (IDi) IKE proved, not the source address',
    "destroying the old tunnel's state: the IKE SA and its child SAs are deleted (the peer is sent an INFORMATIONAL Delete it may not get: it moved)",
    "bucket count and hash: 60 buckets, MurmurHash3's fmix32 over the affinity key (docs/nlb.md says why)",
    "extended affinity timeouts are in minutes, as WMI's ClientStickinessTimeout has them (default 20), not seconds as the unattend Timeout setting (default 0); Ns gives seconds for labs",
  ],
  implemented: true,
} as const satisfies FaultSpec;
