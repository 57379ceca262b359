/** KB 903927's catalogue entry: the Windows listener's SYN attack protection and the mtls service it resets. */
import type { FaultSpec } from '../spec';
import { TCPIP } from '../registry';

export const spec = {
  id: 'kb903927',
  alias: 'synprotect-leak',
  // The article as stored has no title line: this one is ours, from its first paragraph.
  title: 'Live Communications Server connections to a Windows Server 2003 SP1 server with SYN attack protection fail, and memory leaks',
  article: 'KB 903927',
  appliesTo: 'Live Communications Server 2003 and Office Live Communications Server 2005 on Windows Server 2003 SP1',
  summary:
    'With SYN attack protection on (as Server 2003 SP1 shipped it), the stack finishes the three-way handshake before ' +
    'it tells the listening application or looks at its backlog. When the backlog turns out to be full, the already ' +
    'established connection is reset, after the client has succeeded in connecting and has usually sent the start of ' +
    'its mutual-TLS negotiation. On that reset path the per-connection "stacks" allocated for the negotiation are ' +
    'never freed, so memory grows with every reset connection and the server slows down. Hotfixed, the reset path ' +
    'frees everything and memory stays flat.',
  modes: ['buggy', 'hotfixed'],
  defaultMode: 'hotfixed',
  params: {
    SynAttackProtect: {
      type: 'int',
      default: 0,
      min: 0,
      max: 2,
      system: 'windows',
      registry: TCPIP,
      meaning:
        '0 off; 1 fewer SYN-ACK retransmissions and no route-cache lookup before the SYN-ACK once a threshold is exceeded; 2 = 1 plus delayed indication: the application is told of a connection only after the handshake completes',
      source:
        '0 when absent (NT4, Windows 2000, Server 2003 RTM); Server 2003 SP1 turned protection on by default (profile win2003-sp1 sets 2: our choice, see there)',
    },
    TcpMaxHalfOpen: {
      type: 'int',
      default: 500,
      min: 1,
      max: 0xffff,
      unit: 'connections',
      system: 'windows',
      registry: TCPIP,
      meaning: 'half-open (SYN-RCVD) connections on a listener beyond which SYN attack protection triggers',
      source:
        'Server 2003 registry reference: 500; Windows accepts 100..65535, we accept 1.. so a lab can trigger protection with a handful of SYNs (our choice)',
    },
    TcpMaxHalfOpenRetried: {
      type: 'int',
      default: 400,
      min: 1,
      max: 0xffff,
      unit: 'connections',
      system: 'windows',
      registry: TCPIP,
      meaning: 'half-open connections that already had at least one SYN-ACK retransmission, beyond which protection triggers',
      source: 'Server 2003 registry reference: 400; Windows accepts 80..65535, we accept 1.. (our choice, as TcpMaxHalfOpen)',
    },
    TcpMaxPortsExhausted: {
      type: 'int',
      default: 5,
      min: 0,
      max: 0xffff,
      unit: 'refused requests',
      system: 'windows',
      registry: TCPIP,
      meaning: 'connection requests refused because the listen backlog was exhausted, beyond which protection triggers (0: as soon as the backlog is consumed)',
      source: 'Windows 2000 / Server 2003 registry reference: 5, range 0..65535',
    },
    TcpMaxConnectResponseRetransmissions: {
      type: 'int',
      default: 2,
      min: 0,
      max: 255,
      unit: 'retransmissions',
      system: 'windows',
      registry: TCPIP,
      meaning: 'SYN-ACK retransmissions before a half-open connection is dropped (first after 3 s, doubling); protection acts only when this is >= 2',
      source: 'Windows 2000 / Server 2003 registry reference and KB 142641: 2 (3 s, 6 s, give up after 21 s)',
    },
    // The mutual-TLS service whose backlog fills.
    MtlsListenBacklog: {
      type: 'int',
      default: 5,
      min: 0,
      max: 0xffff,
      unit: 'connections',
      system: 'any',
      registry: null,
      meaning: 'listen backlog of the emulated mutual-TLS (SIP/LCS-like) server; when it is full the stack refuses or resets new connections',
      source: 'our choice: 5, the classic Winsock listen(5), so a short burst fills it',
    },
    MtlsAcceptIntervalMs: {
      type: 'int',
      default: 100,
      min: 0,
      max: 60_000,
      unit: 'ms',
      system: 'any',
      registry: null,
      meaning: 'how often the emulated server accepts one queued connection (a slow application lets the backlog fill); 0: accept at once',
      source: 'our choice: 100 ms, slow enough that a few hundred connections per second overflow a backlog of 5',
    },
  },
  // Which listener the system is, and the Linux listener's knobs (the profile linux).
  reads: ['TcpStackProfile', 'tcp_syncookies', 'tcp_abort_on_overflow', 'tcp_max_syn_backlog', 'somaxconn'],
  sources: [
    'KB 903927',
    'KB 142641: the SYN attack parameters and the SYN-ACK retransmission schedule',
    'the Windows Server 2003 TCP/IP registry reference (SynAttackProtect, TcpMaxHalfOpen, TcpMaxHalfOpenRetried, TcpMaxPortsExhausted)',
    'KB 875417: with SP1 the reset comes after the handshake',
    'RFC 4987: TCP SYN flooding attacks and common mitigations',
    'Linux ip-sysctl.rst (tcp_syncookies, tcp_abort_on_overflow, tcp_max_syn_backlog, somaxconn)',
  ],
  implemented: true,
  ourChoices: [
    'no `off` mode: SYN attack protection is switched off with SynAttackProtect=0 (or --profile linux), not with a mode',
    'the article places the leak in the SChannel/SIP code of the Live Communications Server whose connection is reset; ' +
      "the emulator keeps it on the stack's own reset path (docs/faults.md): the control block, the receive buffer with the " +
      "client's first flight and the per-connection application state",
  ],
} as const satisfies FaultSpec;
