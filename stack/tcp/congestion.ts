/**
 * Congestion control, selectable per connection: NewReno (RFC 5681, RFC 6582 for
 * recovery) and CUBIC (RFC 9438). The connection owns loss detection and recovery
 * bookkeeping; a controller only decides cwnd and ssthresh. Sizes are in bytes.
 */
export interface CongestionControl {
  readonly name: 'newreno' | 'cubic';
  cwnd: number;
  ssthresh: number;
  /** New data acknowledged outside recovery. `rttMs` may be 0 when unknown. */
  onAck(acked: number, flight: number, now: number, rttMs: number): void;
  /** Loss detected by duplicate ACKs or SACK: returns the new ssthresh (cwnd is set by the caller). */
  onCongestionEvent(flight: number, now: number): number;
  /** Retransmission timeout (RFC 5681 eq. 4; cwnd to the loss window). */
  onTimeout(flight: number, now: number): void;
  /** Leaving recovery (RFC 6582 3.2 step 3). */
  onRecoveryExit(flight: number): void;
}

/** RFC 5681 3.1: initial window, RFC 6928 raises it to 10 segments (as Linux does). */
export function initialWindow(mss: number): number {
  return 10 * mss;
}

export class NewReno implements CongestionControl {
  get name(): 'newreno' {
    return 'newreno';
  }
  cwnd: number;
  ssthresh = 0x7fffffff;
  private bytesAcked = 0;
  constructor(private mss: number) {
    this.cwnd = initialWindow(mss);
  }

  setMss(mss: number): void {
    this.mss = mss;
  }

  onAck(acked: number): void {
    if (this.cwnd < this.ssthresh) {
      // Slow start with appropriate byte counting (RFC 3465, L = 2*SMSS).
      this.cwnd += Math.min(acked, 2 * this.mss);
    } else {
      // Congestion avoidance: one MSS per cwnd of data acknowledged.
      this.bytesAcked += acked;
      if (this.bytesAcked >= this.cwnd) {
        this.bytesAcked -= this.cwnd;
        this.cwnd += this.mss;
      }
    }
  }

  onCongestionEvent(flight: number): number {
    this.ssthresh = Math.max(flight >> 1, 2 * this.mss);
    this.bytesAcked = 0;
    return this.ssthresh;
  }

  onTimeout(flight: number): void {
    this.ssthresh = Math.max(flight >> 1, 2 * this.mss);
    this.cwnd = this.mss;
    this.bytesAcked = 0;
  }

  onRecoveryExit(flight: number): void {
    this.cwnd = Math.min(this.ssthresh, Math.max(flight, this.mss) + this.mss);
  }
}

/** RFC 9438 constants. */
const CUBIC_C = 0.4;
const CUBIC_BETA = 0.7;

export class Cubic implements CongestionControl {
  get name(): 'cubic' {
    return 'cubic';
  }
  cwnd: number;
  ssthresh = 0x7fffffff;
  private wMax = 0; // segments
  private k = 0; // seconds
  private epochStart = -1; // ms
  private wEst = 0; // segments, Reno-friendly estimate (RFC 9438 4.3)
  private cwndSegsFrac = 0;
  constructor(private mss: number) {
    this.cwnd = initialWindow(mss);
  }

  setMss(mss: number): void {
    this.mss = mss;
  }

  onAck(acked: number, _flight: number, now: number, rttMs: number): void {
    if (this.cwnd < this.ssthresh) {
      this.cwnd += Math.min(acked, 2 * this.mss);
      return;
    }
    const cwndSegs = this.cwnd / this.mss;
    if (this.epochStart < 0) {
      this.epochStart = now;
      if (cwndSegs < this.wMax) this.k = Math.cbrt((this.wMax - cwndSegs) / CUBIC_C);
      else {
        this.k = 0;
        this.wMax = cwndSegs;
      }
      this.wEst = cwndSegs;
    }
    const t = (now - this.epochStart + rttMs) / 1000;
    const target = CUBIC_C * Math.pow(t - this.k, 3) + this.wMax;
    // Reno-friendly region (RFC 9438 4.3), alpha = 3(1-beta)/(1+beta).
    const alpha = (3 * (1 - CUBIC_BETA)) / (1 + CUBIC_BETA);
    this.wEst += (alpha * (acked / this.mss)) / cwndSegs;
    let next: number;
    if (this.wEst > target) next = this.wEst;
    else {
      const capped = Math.min(target, 1.5 * cwndSegs);
      next = cwndSegs + (Math.max(0, capped - cwndSegs) * (acked / this.mss)) / cwndSegs;
    }
    this.cwndSegsFrac = next;
    this.cwnd = Math.max(this.mss, Math.floor(this.cwndSegsFrac * this.mss));
  }

  onCongestionEvent(_flight: number, _now: number): number {
    const cwndSegs = this.cwnd / this.mss;
    // Fast convergence (RFC 9438 4.7).
    this.wMax = cwndSegs < this.wMax ? (cwndSegs * (1 + CUBIC_BETA)) / 2 : cwndSegs;
    this.epochStart = -1;
    this.ssthresh = Math.max(Math.floor(this.cwnd * CUBIC_BETA), 2 * this.mss);
    return this.ssthresh;
  }

  onTimeout(flight: number, now: number): void {
    this.onCongestionEvent(flight, now);
    this.cwnd = this.mss;
  }

  onRecoveryExit(): void {
    this.cwnd = this.ssthresh;
  }
}

export function makeCongestionControl(name: 'newreno' | 'cubic', mss: number): CongestionControl & { setMss(mss: number): void } {
  return name === 'cubic' ? new Cubic(mss) : new NewReno(mss);
}
