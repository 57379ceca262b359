/** KB 297040's catalogue entry: the connection-table lock that a failed active open never releases. */
import type { FaultSpec } from '../spec';
import { TCPIP } from '../registry';

export const spec = {
  id: 'kb297040',
  alias: 'conntable-hang',
  title: 'Windows May Hang When Attempting to Establish a TCP Connection to a Nonexistent IP Address',
  article: 'KB 297040',
  appliesTo: 'Windows NT 4.0 SP6a (and Terminal Server SP6) with a post-SP6a TCP/IP hotfix',
  summary:
    'When SynAttackProtect is set and the host itself opens a TCP connection to an address that does not exist or ' +
    'does not answer, the failure path of that attempt takes the lock on the TCP connection table and never releases ' +
    'it. Everything that needs the table then waits forever: new and existing connections stall and the host no ' +
    'longer answers even ping. Hotfixed, the lock is released on every path; the attempt fails with a timeout (or ' +
    'host unreachable) and the stack keeps serving everything else.',
  modes: ['buggy', 'hotfixed'],
  defaultMode: 'hotfixed',
  params: {
    TcpMaxConnectRetransmissions: {
      type: 'int',
      default: 2,
      min: 0,
      max: 255,
      unit: 'retransmissions',
      system: 'windows',
      registry: TCPIP,
      meaning: 'SYN retransmissions of an active open before the attempt is abandoned (the failure path of KB 297040)',
      source: 'Windows 2000 / Server 2003 registry reference: 2; we use 2 for NT4 as well',
    },
    TcpInitialRttMs: {
      type: 'int',
      default: 3000,
      min: 10,
      max: 0xffff,
      unit: 'ms',
      system: 'windows',
      registry: null,
      meaning: 'delay before the first SYN retransmission of an active open; doubles after each attempt',
      source: 'our name for TcpInitialRTT (Interfaces\\<adapter>, documented in seconds, default 3); kept in milliseconds so a lab can shorten the schedule',
    },
  },
  // The precondition (SynAttackProtect set), and which system's SYN schedule applies.
  reads: ['SynAttackProtect', 'TcpStackProfile'],
  sources: ['KB 297040', 'the Windows 2000 / Server 2003 TCP/IP registry reference (TcpMaxConnectRetransmissions, TcpInitialRTT)'],
  implemented: true,
  ourChoices: [
    'the leaking failure paths are: SYN retransmissions exhausted, and an ICMP unreachable aborting the attempt',
    'the lock is an inspectable object and the control plane stays alive while the emulated stack is hung',
    'no `off` mode: the precondition is SynAttackProtect != 0',
  ],
} as const satisfies FaultSpec;
