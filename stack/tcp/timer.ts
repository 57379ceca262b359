/**
 * The connection's timers. Every deadline (retransmission, delayed ACK, persist,
 * keepalive, TIME-WAIT or FIN-WAIT-2 linger) is one field of the control block; the
 * connection keeps one entry in the stack's timer heap, at the earliest of them
 * (`rearm`). What happens when each expires is here too: the RTO (RFC 6298 5.4-5.7,
 * RFC 5681 3.1, and PMTU black-hole detection, RFC 2923 2.1), the persist timer's
 * zero-window probe and SWS override (RFC 9293 3.8.6.1, 3.8.6.2.1), keepalive probes
 * (RFC 1122 4.2.3.6), the delayed ACK (RFC 9293 3.8.6.3) and the linger timeouts.
 */
import { CodedError } from '../util/errors';
import type { TcpConnection } from './connection';
import { State } from './state';

/** PMTU black-hole detection: unanswered retransmissions of a segment before the fallback size. */
const BLACK_HOLE_RETRIES = 2;
/** The size every IPv4 path must carry (RFC 1122 3.3.3); MSS 536 without options. */
const BLACK_HOLE_MTU = 576;

/** (Re)starts the retransmission timer (RFC 6298 5.1, 5.3) with the backoff of 5.5; SYN-SENT and SYN-RECEIVED use the policy's SYN timeout. */
export function armRto(c: TcpConnection, now: number): void {
  const base = c.state === State.SynSent || c.state === State.SynReceived ? c.layer.synRto(c) : c.rto;
  const at = now + Math.min(base * Math.pow(2, c.backoff), c.layer.config.maxRtoMs);
  c.rtoAt = at;
  rearm(c);
}
/** Nothing outstanding: the retransmission timer stops (RFC 6298 5.2). */
export function disarmRto(c: TcpConnection): void {
  c.rtoAt = Infinity;
  rearm(c);
}
/** The persist timer (RFC 9293 3.8.6.1), backed off like the RTO, at most 60 s. */
export function armPersist(c: TcpConnection, now: number): void {
  c.persistAt = now + Math.min(c.rto * Math.pow(2, c.persistBackoff), 60_000);
  rearm(c);
}

/** Re-arms the connection's single heap timer at the earliest deadline. */
export function rearm(c: TcpConnection): void {
  const at = Math.min(c.rtoAt, c.delackAt, c.persistAt, c.keepaliveAt, c.lingerAt);
  if (at === c.at) return;
  if (at === Infinity) c.layer.timers.disarm(c);
  else c.layer.timers.arm(c, at);
}

/** The connection's heap entry fired: every deadline that is due runs, then the entry is re-armed. */
export function onTimer(c: TcpConnection, now: number): void {
  if (c.state === State.Closed) return;
  if (c.lingerAt <= now) {
    c.lingerAt = Infinity;
    if (c.state === State.TimeWait || c.state === State.FinWait2) {
      c.destroy(null, now);
      return;
    }
  }
  if (c.rtoAt <= now) {
    c.rtoAt = Infinity;
    onRto(c, now);
    if (c.isClosed()) return;
  }
  if (c.delackAt <= now) {
    c.delackAt = Infinity;
    // Owed only if nothing sent since carried RCV.NXT: never a pure ACK that repeats one.
    if (c.ackOwed()) {
      c.layer.counters.TcpExtDelayedACKs++;
      c.ackNow = true;
      c.output(now);
    }
  }
  if (c.persistAt <= now) {
    c.persistAt = Infinity;
    if (c.sndWnd === 0 && c.dataLimit() !== c.sndNxt) {
      // Zero-window probe: an old sequence number forces the peer to ACK with its window.
      c.layer.counters.TcpExtTCPWinProbe++;
      c.sendProbe(now);
      c.persistBackoff = Math.min(c.persistBackoff + 1, 10);
      armPersist(c, now);
    } else {
      // The window is open but smaller than a segment and sender SWS avoidance is
      // holding data back: the override timeout has expired, so send what the
      // window allows (RFC 9293 3.8.6.2.1). Waiting again instead would never learn
      // of a window update that was lost, and the connection would stall for good.
      c.swsOverride = true;
      c.output(now);
      c.swsOverride = false;
    }
  }
  if (c.keepaliveAt <= now) {
    c.keepaliveAt = Infinity;
    onKeepalive(c, now);
    if (c.isClosed()) return;
  }
  rearm(c);
}

function onKeepalive(c: TcpConnection, now: number): void {
  const cfg = c.layer.config;
  if (!c.keepaliveEnabled || c.state < State.Established || c.state === State.TimeWait) return;
  // Keepalives are for an idle connection (RFC 1122 4.2.3.6). With data in flight or
  // queued, the retransmission or persist timer is watching the peer already (Linux's
  // tcp_keepalive_timer only reschedules then); probing too would cut the connection
  // after the keepalive count instead of after dataRetries.
  if (c.sndMax !== c.sndUna || c.sendQueue.length > 0) {
    c.keepaliveProbes = 0;
    c.keepaliveAt = now + c.keepaliveIdleMs;
    return;
  }
  const idle = now - c.lastRecvAt;
  if (idle < c.keepaliveIdleMs && c.keepaliveProbes === 0) {
    c.keepaliveAt = c.lastRecvAt + c.keepaliveIdleMs;
    return;
  }
  if (c.keepaliveProbes >= cfg.keepaliveProbes) {
    c.layer.counters.TcpExtTCPAbortOnTimeout++;
    c.abort(now, new CodedError('ETIMEDOUT', 'read ETIMEDOUT (keepalive)'));
    return;
  }
  c.keepaliveProbes++;
  c.layer.counters.TcpExtTCPKeepAlive++;
  c.sendProbe(now);
  c.keepaliveAt = now + cfg.keepaliveIntervalMs;
}

/** The retransmission timer expired (RFC 6298 5.4-5.7; SYN retries, RFC 9293 3.8.1). */
function onRto(c: TcpConnection, now: number): void {
  const ctr = c.layer.counters;
  const cfg = c.layer.config;
  if (c.state === State.SynSent) {
    c.retries++;
    if (c.retries > c.layer.synRetries(c)) {
      ctr.TcpAttemptFails++;
      c.layer.onConnectTimeout(c, now);
      return;
    }
    ctr.TcpExtTCPSynRetrans++;
    ctr.TcpRetransSegs++;
    c.retransmitSyn(now);
    return;
  }
  if (c.state === State.SynReceived) {
    c.retries++;
    if (c.retries > c.layer.synAckRetries(c)) {
      ctr.TcpAttemptFails++;
      c.destroy(new CodedError('ETIMEDOUT', 'handshake timed out'), now);
      return;
    }
    c.retransmitSynAck(now);
    return;
  }
  if (c.sndUna === c.sndMax) return;
  c.retries++;
  if (c.retries > cfg.dataRetries) {
    ctr.TcpExtTCPAbortOnTimeout++;
    c.abort(now, new CodedError('ETIMEDOUT', 'read ETIMEDOUT'));
    return;
  }
  ctr.TcpExtTCPTimeouts++;
  if (c.retries > BLACK_HOLE_RETRIES && c.blackHoleMtu === 0 && c.mss > BLACK_HOLE_MTU - 40 - (c.tsOk ? 12 : 0) && c.layer.blackHoleDetection()) {
    // EnablePMTUBHDetect: full-size segments keep vanishing and no ICMP says why
    // (a router that drops DF packets silently, or filters its ICMP: RFC 2923 2.1).
    // Fall back to the size every IPv4 path carries (RFC 879/1122: 576, MSS 536).
    c.blackHoleMtu = BLACK_HOLE_MTU;
    ctr.FsPmtuBlackHoleDetected++;
    c.updateMss();
  }
  // RFC 6298 5.5-5.7 and RFC 5681 eq. 4: back off, collapse cwnd, resend from SND.UNA.
  // ssthresh is set only when the segment "has not yet been resent by way of the
  // retransmission timer" (RFC 5681 3.1): on later timeouts it is held (FlightSize
  // is then one segment and would drag it down to 2*SMSS).
  if (c.backoff === 0) c.cc.onTimeout(c.flight, now);
  else c.cc.cwnd = c.mss;
  c.recovery!.onRetransmitTimeout();
  c.sndNxt = c.sndUna;
  c.rttStart = -1;
  c.backoff = Math.min(c.backoff + 1, 16);
  armRto(c, now);
  ctr.TcpExtTCPSlowStartRetrans++;
  c.output(now);
}
