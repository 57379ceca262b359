/**
 * Round-trip time and the retransmission timeout (RFC 6298: SRTT, RTTVAR, RTO with its
 * lower and upper bounds; Karn's rule where samples are taken, send.ts and handshake.ts),
 * and our timestamp clock (RFC 7323 5.4: ms, offset per connection).
 */
import type { TcpConnection } from './connection';

/** An RTT measurement, ms (RFC 6298 2.2 and 2.3). */
export function sampleRtt(c: TcpConnection, rttMs: number): void {
  // RFC 6298 2.2 and 2.3, alpha 1/8, beta 1/4.
  if (c.srtt === 0) {
    c.srtt = Math.max(rttMs, 0.01);
    c.rttvar = rttMs / 2;
  } else {
    c.rttvar = 0.75 * c.rttvar + 0.25 * Math.abs(c.srtt - rttMs);
    c.srtt = 0.875 * c.srtt + 0.125 * rttMs;
  }
  c.rto = computeRto(c);
}

/** RFC 6298 2.4-2.5: RTO = SRTT + max(G, 4 * RTTVAR), within [minRtoMs, maxRtoMs]; the initial RTO before any sample (2.1). */
export function computeRto(c: TcpConnection): number {
  const cfg = c.layer.config;
  if (c.srtt === 0) return cfg.initialRtoMs;
  const g = cfg.clockGranularityMs;
  const rto = c.srtt + Math.max(g, 4 * c.rttvar);
  return Math.min(cfg.maxRtoMs, Math.max(cfg.minRtoMs, rto));
}

/** Our timestamp clock: ms, offset per connection (RFC 7323 5.4). */
export function tsNow(c: TcpConnection, now: number): number {
  return (Math.floor(now) + c.tsOffset) >>> 0;
}
