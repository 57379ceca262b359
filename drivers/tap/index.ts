/**
 * TAP devices and Linux bridges: the stack as a port of a bridge, like a VM's NIC.
 *
 * A TAP device is the same native addon as TUN (drivers/tun): IFF_TAP instead of
 * IFF_TUN, so each read and write is one Ethernet II frame (no FCS). Everything of the
 * TUN driver holds: the virtio-net header and the same offload probe (a GSO frame carries
 * the Ethernet header in front; csum_start and hdr_len count from the frame's first
 * byte), multi-queue, bursts, zero-copy claim. Writes go out with the Ethernet header in
 * front of the packet in one writev (`sendWithHeader`), so a 64 KiB TSO segment is not
 * copied to prepend 14 bytes.
 *
 * The kernel side of a TAP device has a MAC of its own (random) that we never use: the
 * stack is the far end of the wire and has its own MAC (the EthernetInterface's). Frames
 * the stack writes enter the kernel as if received on the TAP interface; as a bridge port
 * the bridge forwards them to the other ports (veths into namespaces, a VXLAN device,
 * another TAP).
 *
 * Bridges are managed with iproute2, as an administrator would: `ensureBridge` uses an
 * existing bridge or creates one (and says whether it did, so that `faultstack run`
 * removes only what it made), `attachToBridge` enslaves the TAP and brings it up. A new
 * bridge keeps Linux's defaults (STP off, so ports forward at once; ageing 300 s;
 * multicast snooping on).
 */
import { execFileSync } from 'node:child_process';
import { TunDevice, TunError, TunOpenOptions } from '../tun/index';

export type TapOpenOptions = Omit<TunOpenOptions, 'mode'>;

/** Opens (or creates) a TAP device: a TunDevice in 'tap' mode, linkType 'ethernet'. */
export function openTap(opts: TapOpenOptions): TunDevice {
  return TunDevice.open({ ...opts, mode: 'tap' });
}

function ip(args: string[], what: string): string {
  try {
    return execFileSync('ip', args, { stdio: ['ignore', 'pipe', 'pipe'], encoding: 'utf8', timeout: 10_000 });
  } catch (e) {
    const err = e as NodeJS.ErrnoException & { stderr?: string; status?: number | null };
    if (err.code === 'ENOENT') throw new TunError('ERR_IP_COMMAND', `${what}: 'ip' not found (install iproute2)`);
    const stderr = (err.stderr ?? '').toString().trim().split('\n')[0] || `exit status ${err.status ?? '?'}`;
    throw new TunError('ERR_IP_COMMAND', `${what}: 'ip ${args.join(' ')}' failed: ${stderr}`);
  }
}

/** The kind of link `name` is ('bridge', 'veth', 'tun', '' for a plain device), or null when there is none. */
export function linkKind(name: string): string | null {
  let out: string;
  try {
    out = execFileSync('ip', ['-j', '-d', 'link', 'show', 'dev', name], { stdio: ['ignore', 'pipe', 'pipe'], encoding: 'utf8', timeout: 10_000 });
  } catch (e) {
    const err = e as NodeJS.ErrnoException & { stderr?: string };
    if (err.code === 'ENOENT') throw new TunError('ERR_IP_COMMAND', `'ip' not found (install iproute2)`);
    if (/does not exist/.test(String(err.stderr ?? ''))) return null;
    throw new TunError(
      'ERR_IP_COMMAND',
      `'ip link show dev ${name}' failed: ${
        String(err.stderr ?? err.message)
          .trim()
          .split('\n')[0]
      }`,
    );
  }
  const rows = JSON.parse(out) as { linkinfo?: { info_kind?: string } }[];
  return rows[0]?.linkinfo?.info_kind ?? '';
}

/** Uses bridge `name`, or creates it (up). Throws when `name` exists and is not a bridge. */
export function ensureBridge(name: string): { created: boolean } {
  const kind = linkKind(name);
  if (kind === 'bridge') {
    ip(['link', 'set', 'dev', name, 'up'], `bridge ${name}`);
    return { created: false };
  }
  if (kind !== null) {
    throw new TunError(
      'EINVAL',
      `--bridge ${name}: a device of that name exists and is not a bridge (it is ${kind ? `a ${kind} device` : 'a plain device'}); pick another name or remove it`,
    );
  }
  ip(['link', 'add', 'name', name, 'type', 'bridge'], `create bridge ${name}`);
  try {
    ip(['link', 'set', 'dev', name, 'up'], `bridge ${name}`);
  } catch (e) {
    try {
      ip(['link', 'del', 'dev', name], `remove bridge ${name}`);
    } catch {
      /* best effort */
    }
    throw e;
  }
  return { created: true };
}

/** Makes `dev` a port of `bridge` and brings it up. */
export function attachToBridge(dev: string, bridge: string): void {
  ip(['link', 'set', 'dev', dev, 'master', bridge], `attach ${dev} to bridge ${bridge}`);
  ip(['link', 'set', 'dev', dev, 'up'], `bring ${dev} up`);
}

/** Removes a bridge (its ports stay, detached). Absent already: nothing to do. */
export function removeBridge(name: string): void {
  if (linkKind(name) === null) return;
  ip(['link', 'del', 'dev', name], `remove bridge ${name}`);
}
