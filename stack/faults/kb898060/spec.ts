/** KB 898060's catalogue entry: path-MTU host routes counted twice until ICMP is ignored. */
import type { FaultSpec } from '../spec';
import { TCPIP, TCPIP_IF } from '../registry';

export const spec = {
  id: 'kb898060',
  alias: 'pmtu-hostroutes',
  // The article as stored has no title line: this one is from its first sentence.
  title: 'Network connectivity between clients and servers may fail after you install MS05-019 or Windows Server 2003 SP1',
  article: 'KB 898060',
  appliesTo: 'Windows Server 2003 SP1 and Windows with MS05-019',
  summary:
    'Path MTU discovery keeps the learnt MTU of each destination in a host route created from ICMP "fragmentation ' +
    'needed" messages, and the number of such routes is limited by MaxIcmpHostRoutes. The buggy code counts a host ' +
    'route again every time an ICMP message lowers the MTU of a route that already exists, so repeated updates (several ' +
    'routers, a small-MTU tunnel, load balancing, route changes) drive the count to the limit while the real number of ' +
    'routes stays small. From then on every ICMP MTU update is ignored: new destinations never learn their path MTU and ' +
    'connections hang after the handshake as soon as they send full-size segments. Hotfixed, the count moves only when a ' +
    'host route is created or removed.',
  modes: ['buggy', 'hotfixed'],
  defaultMode: 'hotfixed',
  params: {
    MaxIcmpHostRoutes: {
      type: 'int',
      default: 1000,
      min: 1,
      max: 1_000_000,
      unit: 'routes',
      system: 'windows',
      registry: TCPIP,
      meaning: 'the most host routes that ICMP (fragmentation needed, redirects) may create; at the limit ICMP MTU updates are ignored',
      source: "KB 898060: 1000 (KB 896350 says 10000; we keep the article's value)",
    },
    EnablePMTUDiscovery: {
      type: 'bool',
      default: 1,
      system: 'any',
      registry: TCPIP,
      meaning: '1: send with DF and learn the path MTU from ICMP (RFC 1191); 0: use 576 for every destination off the local subnet',
      source: 'Windows 2000 / Server 2003 registry reference: 1',
    },
    EnablePMTUBHDetect: {
      type: 'bool',
      default: 0,
      system: 'any',
      registry: TCPIP,
      meaning: 'black-hole detection: after several unanswered retransmissions of a segment, drop the MSS to 536 and stop relying on ICMP',
      source: 'Windows 2000 / Server 2003 registry reference: 0',
    },
    PMTUFloor: {
      type: 'int',
      default: 576,
      min: 68,
      max: 576,
      unit: 'bytes',
      system: 'any',
      registry: null,
      meaning:
        "lowest path MTU that an ICMP message may set: 68 is RFC 791/1191's minimum, 576 the floor MS05-019 introduced against CVE-2004-1060 (a genuine link below it then breaks)",
      source: 'our name; 576 after MS05-019 / Server 2003 SP1, 68 before (nt4-sp6a), 552 on Linux (min_pmtu)',
    },
    HostRouteAgingSec: {
      type: 'int',
      default: 600,
      min: 0,
      max: 86_400,
      unit: 's',
      system: 'any',
      registry: null,
      meaning: 'a host route whose MTU has not been lowered for this long is aged back to the first-hop MTU and removed (0: never)',
      source: 'our name; RFC 1191 suggests about 10 minutes; Linux mtu_expires is 600 s',
    },
    MTU: {
      type: 'int',
      default: 0,
      min: 0,
      max: 65535,
      unit: 'bytes',
      system: 'any',
      registry: TCPIP_IF,
      meaning: "interface MTU override, the article's workaround (576 is the safe value); 0: the link's MTU; values below 68 mean 68",
      source: "KB 898060 / KB 120642: absent (0xFFFFFFFF) means the link's MTU; we spell that 0",
    },
  },
  sources: [
    'KB 898060',
    'KB 896350: MaxIcmpHostRoutes',
    'RFC 1191: path MTU discovery, the plateau table, aging',
    'MS05-019 and CVE-2004-1060: the 576-byte floor',
    'Linux net/ipv4/route.c and ip-sysctl.rst (min_pmtu, mtu_expires) for the linux profile',
  ],
  implemented: true,
  ourChoices: [
    'host routes age out after HostRouteAgingSec (600 s, 0 = never), swept once a minute as RFC 1191 suggests',
    'no `off` mode: path MTU discovery is switched off with EnablePMTUDiscovery=0',
  ],
} as const satisfies FaultSpec;
