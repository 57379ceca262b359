/**
 * `faultstack run --ipsec`: attaches IPsec to a running stack, writes its events to
 * the event log, serves `faultstack ipsec` on the control socket and keeps the
 * Wireshark key tables (--ipsec-keylog).
 */
import type { RuntimeOptions } from './options';
import type { ControlHandler } from '../control/server';
import type { EventLog } from '../faults/events';
import { Ipsec } from '../ipsec/ipsec';
import type { IpsecEvent } from '../ipsec/ike/engine';
import { KeyLog } from '../ipsec/keylog';
import { hex32 } from '../ipsec/sad';
import type { Stack } from '../stack';
import { formatIpv4 } from '../wire/addr';

/** Event kinds in the event log (`faultstack events`). */
export const IpsecEventKind = {
  'ike-sa-up': 'ipsec-ike-sa-up',
  'ike-sa-rekeyed': 'ipsec-ike-sa-rekeyed',
  'ike-sa-down': 'ipsec-ike-sa-down',
  'child-sa-up': 'ipsec-child-sa-up',
  'child-sa-rekeyed': 'ipsec-child-sa-rekeyed',
  'child-sa-down': 'ipsec-child-sa-down',
  'auth-failed': 'ipsec-auth-failed',
} as const;

function logged(e: IpsecEvent): { kind: string; message: string; data: object } {
  const kind = IpsecEventKind[e.kind];
  switch (e.kind) {
    case 'ike-sa-up':
    case 'ike-sa-down':
    case 'ike-sa-rekeyed': {
      const s = e.ike;
      const who = `${s.identity?.value ?? '?'} from ${formatIpv4(s.remote.addr)}:${s.remote.port}`;
      const data = {
        ikeSa: s.id,
        identity: s.identity?.value ?? null,
        remote: `${formatIpv4(s.remote.addr)}:${s.remote.port}`,
        spiI: s.spiI.toString('hex'),
        spiR: s.spiR.toString('hex'),
      };
      if (e.kind === 'ike-sa-up') return { kind, message: `IKE SA ${s.id} up: ${who}`, data };
      if (e.kind === 'ike-sa-rekeyed') return { kind, message: `IKE SA ${e.old.id} rekeyed into ${s.id}: ${who}`, data: { ...data, old: e.old.id } };
      return { kind, message: `IKE SA ${s.id} down (${e.reason}): ${who}`, data: { ...data, reason: e.reason } };
    }
    case 'child-sa-up':
    case 'child-sa-rekeyed':
    case 'child-sa-down': {
      const c = e.child;
      const data = { child: c.id, ikeSa: c.ikeSaId, identity: c.identity.value, spiIn: hex32(c.inbound.spi), spiOut: hex32(c.outbound.spi), mode: c.mode };
      const spis = `${hex32(c.inbound.spi)}_i ${hex32(c.outbound.spi)}_o`;
      if (e.kind === 'child-sa-up') return { kind, message: `child SA ${c.id} up for ${c.identity.value} (${c.mode}, SPIs ${spis})`, data };
      if (e.kind === 'child-sa-rekeyed')
        return { kind, message: `child SA ${e.old.id} rekeyed into ${c.id} for ${c.identity.value} (SPIs ${spis})`, data: { ...data, old: e.old.id } };
      return { kind, message: `child SA ${c.id} down (${e.reason}) for ${c.identity.value}`, data: { ...data, reason: e.reason } };
    }
    case 'auth-failed':
      return {
        kind,
        message: `IKE_AUTH refused for ${e.identity} from ${e.remote}: ${e.reason} (AUTHENTICATION_FAILED sent)`,
        data: { identity: e.identity, remote: e.remote, reason: e.reason },
      };
  }
}

export interface IpsecRuntime {
  ipsec: Ipsec;
  handlers: Record<string, ControlHandler>;
  close(): void;
}

/** Null when the run has no IPsec configuration. */
export function attachIpsec(stack: Stack, opts: RuntimeOptions, events: EventLog): IpsecRuntime | null {
  if (!opts.ipsec) return null;
  const keylog = opts.ipsecKeylog ? new KeyLog(opts.ipsecKeylog) : null;
  const ipsec = new Ipsec(stack, opts.ipsec, { keylog, wallClock: () => Date.now() });
  stack.ipsec = ipsec;
  ipsec.start(stack.now);
  const unsub = ipsec.subscribe((e) => {
    try {
      events.emit(logged(e));
    } catch {
      /* the log is closed at shutdown */
    }
  });
  return {
    ipsec,
    handlers: { ipsec: () => ipsec.describe(stack.now) },
    close: () => {
      unsub();
      ipsec.close();
      stack.ipsec = null;
    },
  };
}
