/**
 * KB 319381's catalogue entry (not implemented yet: the firewall in stack/firewall and
 * this folder's behaviour land with their own branch).
 */
import type { FaultSpec } from '../module';

export const spec = {
  id: 'kb319381',
  alias: 'udp-rebind',
  // The article as stored has no title line: this one is ours, from its Symptoms section.
  title: 'Windows Media Player behind ISA Server may not work over MMSU when moving to the next item of a server-side playlist',
  article: 'KB 319381',
  appliesTo: 'ISA Server 2000 SP1 with Firewall Client',
  summary:
    'A firewall\'s streaming-media filter opens UDP ports on behalf of firewall clients. When the player moves to the ' +
    'next playlist item it releases its UDP port and binds the same port again. The buggy firewall has already closed ' +
    'the port, so its packet filter drops the arriving media packets (and logs them as a port scan from the media ' +
    'server); if the re-bind races the release, it answers WSAEADDRINUSE. Hotfixed, a re-bind re-opens the port and ' +
    'release and re-bind are ordered, so there are no drops, no EADDRINUSE and no false port-scan events.',
  modes: ['off', 'buggy', 'hotfixed'],
  defaultMode: 'off',
  params: {
    PortScanWellKnownThreshold: {
      type: 'int', default: 10, min: 1, max: 2048, unit: 'ports', system: 'windows', registry: null,
      meaning: 'dropped packets to this many distinct ports in 1..2048 from one address raise event 15104 (well-known port scan)',
      source: 'our choice: not in the article; the later ISA/TMG default was 10',
    },
    PortScanAllPortsThreshold: {
      type: 'int', default: 20, min: 1, max: 65535, unit: 'ports', system: 'windows', registry: null,
      meaning: 'dropped packets to this many distinct ports from one address raise event 15105 (all port scan)',
      source: 'our choice: not in the article; the later ISA/TMG default was 20',
    },
  },
  sources: [
    'KB 319381',
    'the ISA Server 2000 and TMG SDK documentation (Firewall Client, application filters, port-scan detection)',
  ],
  implemented: false,
  ourChoices: ['port-scan thresholds 10 well-known and 20 in all, the later TMG defaults'],
} as const satisfies FaultSpec;
