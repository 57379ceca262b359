/**
 * Host group membership with IGMPv2 (RFC 2236 section 6, the host state diagram):
 * which IPv4 groups this interface joined, when it reports them, and when it stays quiet.
 *
 *   join            -> report now, once more within unsolicited_report_interval (10 s,
 *                      RFC 2236 8.10; one repeat: Linux sends robustness(2) reports in all),
 *                      Delaying Member, "last reporter" flag set
 *   query heard     -> Idle: start a timer at a random time within Max Resp Time;
 *                      Delaying: restart it only if Max Resp Time is sooner than what is left
 *   report heard    -> Delaying: stop the timer, clear the flag (someone else answered)
 *   timer expires   -> report, set the flag, Idle Member
 *   leave           -> a Leave Group to 224.0.0.2 if we sent the last report of the group
 *
 * 224.0.0.1 (all systems) is joined on every interface, never reported, never left
 * (RFC 2236 6). A query with Max Resp Time 0 comes from an IGMPv1 router: RFC 2236 4 says
 * 10 s then, and that a host should report in version 1 until it has heard no v1 query for
 * 400 s; we keep answering in version 2 (the version 1 compatibility timer is not modelled).
 *
 * Time is passed in and the timers live in the TimerQueue given (the interface runs it).
 */
import { Timer, TimerQueue } from '../timers';
import { formatIpv4 } from '../wire/addr';
import { ALL_SYSTEMS } from '../wire/igmp';

export interface IgmpParams {
  /** RFC 2236 8.10: the delay within which an unsolicited report is repeated. */
  unsolicitedReportIntervalMs: number;
  /** Reports sent on join, the first at once (RFC 2236 3 "repeated once or twice"). */
  unsolicitedReports: number;
}

export const DEFAULT_IGMP_PARAMS: Readonly<IgmpParams> = Object.freeze({ unsolicitedReportIntervalMs: 10_000, unsolicitedReports: 2 });

/** A v1 query (Max Resp Time 0) means 10 s (RFC 2236 4: 100 in tenths of a second). */
const V1_MAX_RESP_TENTHS = 100;

export interface IgmpHost {
  sendReport(group: number, now: number): void;
  sendLeave(group: number, now: number): void;
}

class Group {
  /** RFC 2236 6: whether our report was the last one for the group. */
  lastReporter = false;
  /** Unsolicited reports still to send after the first. */
  unsolicitedLeft = 0;
  readonly timer: Timer;
  constructor(
    readonly addr: number,
    fire: (g: Group, now: number) => void,
  ) {
    this.timer = new Timer((t) => fire(this, t));
  }
}

export interface IgmpGroupRow {
  group: string;
  state: 'delaying' | 'idle';
  lastReporter: boolean;
  /** ms until the pending report, when delaying. */
  reportInMs: number | null;
}

export class IgmpMembership {
  readonly params: IgmpParams;
  private readonly groups = new Map<number, Group>();

  constructor(
    private readonly host: IgmpHost,
    private readonly timers: TimerQueue,
    params: Partial<IgmpParams> = {},
    private readonly random: () => number = Math.random,
  ) {
    this.params = { ...DEFAULT_IGMP_PARAMS, ...params };
  }

  has(group: number): boolean {
    return group === ALL_SYSTEMS || this.groups.has(group);
  }

  /** Groups joined explicitly (not 224.0.0.1). */
  joined(): number[] {
    return [...this.groups.keys()];
  }

  /** Returns false if already a member. */
  join(group: number, now: number): boolean {
    if (group === ALL_SYSTEMS || this.groups.has(group)) return false;
    const g = new Group(group, (x, t) => this.onTimer(x, t));
    this.groups.set(group, g);
    this.report(g, now);
    g.unsolicitedLeft = Math.max(0, this.params.unsolicitedReports - 1);
    if (g.unsolicitedLeft > 0) this.timers.arm(g.timer, now + this.randomDelay(this.params.unsolicitedReportIntervalMs));
    return true;
  }

  /** Returns false if not a member. */
  leave(group: number, now: number): boolean {
    const g = this.groups.get(group);
    if (!g) return false;
    this.timers.disarm(g.timer);
    this.groups.delete(group);
    if (g.lastReporter) this.host.sendLeave(group, now);
    return true;
  }

  /** A membership query: `group` 0 for a general query, else group-specific. */
  query(maxRespTenths: number, group: number, now: number): void {
    const max = (maxRespTenths === 0 ? V1_MAX_RESP_TENTHS : maxRespTenths) * 100;
    const answer = (g: Group) => {
      g.unsolicitedLeft = 0; // a router asks: its query schedules the answer from now on
      const at = now + this.randomDelay(max);
      if (g.timer.index < 0 || at < g.timer.at) this.timers.arm(g.timer, at);
    };
    if (group === 0) {
      for (const g of this.groups.values()) answer(g);
    } else {
      const g = this.groups.get(group);
      if (g) answer(g);
    }
  }

  /** Another host reported `group` (v1 or v2): our pending report is suppressed. */
  heardReport(group: number): void {
    const g = this.groups.get(group);
    if (!g || g.timer.index < 0) return;
    this.timers.disarm(g.timer);
    g.unsolicitedLeft = 0;
    g.lastReporter = false;
  }

  rows(now: number): IgmpGroupRow[] {
    return [...this.groups.values()].map((g) => ({
      group: formatIpv4(g.addr),
      state: g.timer.index >= 0 ? ('delaying' as const) : ('idle' as const),
      lastReporter: g.lastReporter,
      reportInMs: g.timer.index >= 0 ? Math.max(0, Math.round(g.timer.at - now)) : null,
    }));
  }

  private report(g: Group, now: number): void {
    g.lastReporter = true;
    this.host.sendReport(g.addr, now);
  }

  private onTimer(g: Group, now: number): void {
    this.report(g, now);
    if (g.unsolicitedLeft > 0 && --g.unsolicitedLeft > 0) {
      this.timers.arm(g.timer, now + this.randomDelay(this.params.unsolicitedReportIntervalMs));
    }
  }

  /** Uniform in (0, maxMs]: never 0, so a report is never sent inside the query's own burst. */
  private randomDelay(maxMs: number): number {
    return Math.max(1, Math.ceil(this.random() * maxMs));
  }
}
