/**
 * The connection states of RFC 9293 3.3.2 (figure 5), in the order the checks rely on:
 * every state from ESTABLISHED on is synchronized (`state >= State.Established`).
 * A leaf module: every file of the connection imports it without a cycle.
 */
export const enum State {
  Closed = 0,
  Listen,
  SynSent,
  SynReceived,
  Established,
  FinWait1,
  FinWait2,
  CloseWait,
  Closing,
  LastAck,
  TimeWait,
}
export const STATE_NAMES = [
  'CLOSED',
  'LISTEN',
  'SYN-SENT',
  'SYN-RECEIVED',
  'ESTABLISHED',
  'FIN-WAIT-1',
  'FIN-WAIT-2',
  'CLOSE-WAIT',
  'CLOSING',
  'LAST-ACK',
  'TIME-WAIT',
];
