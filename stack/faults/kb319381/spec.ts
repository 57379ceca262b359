/**
 * KB 319381's catalogue entry and the parameters it owns (the fault-module contract:
 * stack/faults/<id>/spec.ts). What the fault does is in ./index.ts; the firewall it acts
 * on, in stack/firewall/.
 */
import type { FaultSpec } from '../spec';

export const spec = {
  id: 'kb319381',
  alias: 'udp-rebind',
  // The article as stored has no title line: this one is ours, from its Symptoms section.
  title: 'Windows Media Player behind ISA Server may not work over MMSU when moving to the next item of a server-side playlist',
  article: 'KB 319381',
  appliesTo: 'ISA Server 2000 SP1 with Firewall Client',
  summary:
    "A firewall's streaming-media filter opens UDP ports on behalf of firewall clients. When the player moves to the " +
    'next playlist item it releases its UDP port and binds the same port again. The buggy firewall has already closed ' +
    'the port, so its packet filter drops the arriving media packets (and logs them as a port scan from the media ' +
    'server); if the re-bind races the release, it answers WSAEADDRINUSE. Hotfixed, a re-bind re-opens the port and ' +
    'release and re-bind are ordered, so there are no drops, no EADDRINUSE and no false port-scan events.',
  modes: ['off', 'buggy', 'hotfixed'],
  // ISA installs the streaming-media filter (the article); every implemented fault starts hotfixed.
  defaultMode: 'hotfixed',
  params: {
    PortScanWellKnownThreshold: {
      type: 'int',
      default: 10,
      min: 1,
      max: 2048,
      unit: 'ports',
      system: 'windows',
      registry: null,
      meaning:
        'distinct well-known ports (1..2048) touched by dropped packets from one address within the detection interval (60 s) that raise event 15104 (well-known port scan); a dropped TCP or UDP packet touches its destination and its source port',
      source: 'our choice: not in the article; the later TMG default (PortScanDetectionWellKnownPorts... in its SDK) was 10',
    },
    PortScanAllPortsThreshold: {
      type: 'int',
      default: 20,
      min: 1,
      max: 65535,
      unit: 'ports',
      system: 'windows',
      registry: null,
      meaning:
        'distinct ports of any number touched by dropped packets from one address within the detection interval (60 s) that raise event 15105 (all port scan)',
      source: 'our choice: not in the article; the later TMG default was 20',
    },
    MediaPortReleaseDelayMs: {
      type: 'int',
      default: 500,
      min: 0,
      max: 60_000,
      unit: 'ms',
      system: 'windows',
      registry: null,
      meaning:
        'how long a UDP port a Firewall Client released stays bound on the external address before the firewall has freed it; a re-bind within it races the release (buggy: WSAEADDRINUSE)',
      source:
        'our choice: the article names the race ("before it has been properly freed at the ISA server") but not its length; 500 ms, longer than a player takes to bind again',
    },
  },
  sources: [
    'KB 319381',
    "the article's symptoms, cause, and the events 15104 and 15105 with their texts",
    'Wireshark msproxy dissector (packet-msproxy.c): the Firewall Client header layout and message codes',
    'ISA Server 2000 and TMG SDK documentation: Firewall Client, application filters, port-scan detection defaults',
    '[MS-MMSP]: the fields of an MMS data packet (LocationId, PlayIncarnation, AFFlags, PacketSize)',
  ],
  implemented: true,
  ourChoices: [
    'port-scan thresholds 10 well-known and 20 in all, the later TMG defaults; detection interval 60 s; a dropped TCP or UDP packet touches its destination and its source port (the media server sends from many ports to one)',
    'the release delay MediaPortReleaseDelayMs (500 ms) stands for the time the firewall takes to free a released port',
    'off: the streaming-media filter is not in use (MMSU through the firewall fails for every client; MMST works); hotfixed by default, as ISA installs the filter',
    'the Firewall Client protocol, the UDP relay header and MMS are minimal models (docs/fwc.md, stack/wire/mms.ts)',
  ],
} as const satisfies FaultSpec;
