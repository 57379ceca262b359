/**
 * strongSwan in the lab: a charon with kernel-libipsec (userspace ESP on its own TUN
 * device, ipsec0) in a namespace the lab created, with a private mount namespace so
 * that several run at once (each writes /run/charon.pid), driven with swanctl over
 * its own vici socket. See docs/lab.md for why each setting is there.
 *
 *   const sw = await StrongSwan.start(lab, 'client', dir, { ...swanctlOptions });
 *   await sw.initiate();          // swanctl --initiate --child t
 *   await sw.stop();
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Lab, LabProcess } from './lab';

export interface SwanctlOptions {
  /** Connection name (default lab); its child is named t, or `<name>-t` when a name is given. */
  name?: string;
  localAddr: string;
  /** Omitted on a responder: any peer. */
  remoteAddr?: string;
  id: string;
  /** Expected peer identity; omitted: any (then strongSwan sends no INITIAL_CONTACT). */
  remoteId?: string;
  psk: string;
  proposals?: string;
  espProposals?: string;
  localTs: string;
  remoteTs: string;
  mode?: 'tunnel' | 'transport';
  /** IKE and child rekey times (strongSwan notation: 10s, 1h); absent: strongSwan's defaults. */
  ikeRekeyTime?: string;
  childRekeyTime?: string;
  childLifeTime?: string;
  dpdDelay?: string;
  /** Authenticate with a certificate (auth = pubkey both ways) instead of the PSK: files copied into the charon's directory. */
  pubkey?: { cert: string; key: string; ca: string };
}

export interface CharonOptions {
  /** filelog levels (default: ike 1); 4 logs every key (used for the key-derivation fixture). */
  logLevel?: number;
  /** Extra lines inside charon { ... }. */
  charonExtra?: string[];
}

export function strongswanConf(dir: string, o: CharonOptions = {}): string {
  const lvl = o.logLevel ?? 1;
  return [
    'charon {',
    '  install_routes = yes',
    '  filelog {',
    '    main {',
    `      path = ${dir}/charon.log`,
    '      flush_line = yes',
    '      default = 1',
    `      ike = ${lvl}`,
    `      chd = ${lvl}`,
    `      knl = ${Math.min(lvl, 2)}`,
    `      net = ${Math.min(lvl, 2)}`,
    `      enc = ${Math.min(lvl, 1)}`,
    '      cfg = 1',
    '    }',
    '  }',
    ...(o.charonExtra ?? []).map((l) => `  ${l}`),
    '  plugins {',
    '    vici {',
    `      socket = unix://${dir}/charon.vici`,
    '    }',
    '    stroke {',
    '      load = no',
    '    }',
    '    kernel-libipsec {',
    '      load = yes',
    // The peer's own address may be the remote selector (host-to-host): keep IKE out of table 220 by fwmark.
    '      allow_peer_ts = yes',
    '    }',
    '    socket-default {',
    '      fwmark = 0x42',
    '    }',
    '    kernel-netlink {',
    '      fwmark = !0x42',
    '    }',
    '  }',
    '}',
    '',
  ].join('\n');
}

export function childName(o: SwanctlOptions): string {
  return o.name ? `${o.name}-t` : 't';
}

/** One swanctl.conf with these connections (each with its own secret section). */
export function swanctlConf(...conns: SwanctlOptions[]): string {
  const parts = conns.map((o) => connectionConf(o));
  return ['connections {', ...parts.map((p) => p.conn), '}', 'secrets {', ...parts.map((p) => p.secret), '}', ''].join('\n');
}

function connectionConf(o: SwanctlOptions): { conn: string; secret: string } {
  const lines = [
    `  ${o.name ?? 'lab'} {`,
    '    version = 2',
    `    local_addrs = ${o.localAddr}`,
    ...(o.remoteAddr ? [`    remote_addrs = ${o.remoteAddr}`] : []),
    ...(o.proposals ? [`    proposals = ${o.proposals}`] : []),
    ...(o.ikeRekeyTime ? [`    rekey_time = ${o.ikeRekeyTime}`] : []),
    ...(o.dpdDelay ? [`    dpd_delay = ${o.dpdDelay}`] : []),
    '    local {',
    `      auth = ${o.pubkey ? 'pubkey' : 'psk'}`,
    ...(o.pubkey ? [`      certs = ${path.basename(o.pubkey.cert)}`] : []),
    `      id = ${o.id}`,
    '    }',
    '    remote {',
    `      auth = ${o.pubkey ? 'pubkey' : 'psk'}`,
    ...(o.remoteId ? [`      id = ${o.remoteId}`] : []),
    '    }',
    '    children {',
    `      ${childName(o)} {`,
    `        mode = ${o.mode ?? 'tunnel'}`,
    `        local_ts = ${o.localTs}`,
    `        remote_ts = ${o.remoteTs}`,
    ...(o.espProposals ? [`        esp_proposals = ${o.espProposals}`] : []),
    ...(o.childRekeyTime ? [`        rekey_time = ${o.childRekeyTime}`] : []),
    ...(o.childLifeTime ? [`        life_time = ${o.childLifeTime}`, '        rand_time = 0'] : []),
    '      }',
    '    }',
    '  }',
  ];
  const secret = o.pubkey ? '' : [`  ike-${o.name ?? 'lab'} {`, `    secret = "${o.psk}"`, '  }'].join('\n');
  return { conn: lines.join('\n'), secret };
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export class StrongSwan {
  private constructor(
    readonly lab: Lab,
    readonly ns: string,
    readonly dir: string,
    readonly proc: LabProcess,
  ) {}

  get vici(): string {
    return `unix://${this.dir}/charon.vici`;
  }
  get logFile(): string {
    return path.join(this.dir, 'charon.log');
  }

  /** Starts charon in `ns` (config in `dir`, created), loads `swanctl` options. */
  static async start(lab: Lab, ns: string, dir: string, conn: SwanctlOptions | SwanctlOptions[], o: CharonOptions = {}): Promise<StrongSwan> {
    fs.mkdirSync(dir, { recursive: true });
    fs.writeFileSync(path.join(dir, 'strongswan.conf'), strongswanConf(dir, o));
    fs.writeFileSync(path.join(dir, 'swanctl.conf'), swanctlConf(...(Array.isArray(conn) ? conn : [conn])));
    for (const sub of ['x509', 'x509ca', 'private', 'rsa', 'ecdsa', 'pkcs8', 'pubkey']) fs.mkdirSync(path.join(dir, sub), { recursive: true });
    for (const c of Array.isArray(conn) ? conn : [conn]) {
      if (!c.pubkey) continue;
      // swanctl --load-all reads these directories next to swanctl.conf.
      fs.copyFileSync(c.pubkey.cert, path.join(dir, 'x509', path.basename(c.pubkey.cert)));
      fs.copyFileSync(c.pubkey.key, path.join(dir, 'private', path.basename(c.pubkey.key)));
      fs.copyFileSync(c.pubkey.ca, path.join(dir, 'x509ca', path.basename(c.pubkey.ca)));
    }
    // A private mount namespace with its own /run: charon writes /run/charon.pid.
    const proc = lab.spawn(ns, 'unshare', ['-m', 'sh', '-c', `mount -t tmpfs none /run && STRONGSWAN_CONF=${dir}/strongswan.conf exec /usr/lib/ipsec/charon`]);
    const sw = new StrongSwan(lab, ns, dir, proc);
    const deadline = Date.now() + 15_000;
    for (;;) {
      if (!proc.running) throw new Error(`charon in ${ns} exited: ${proc.output.slice(-2000)}`);
      if (fs.existsSync(path.join(dir, 'charon.vici'))) {
        const r = await sw.swanctl(['--stats'], 5000);
        if (r.code === 0) break;
      }
      if (Date.now() > deadline) throw new Error(`charon in ${ns} did not open its vici socket within 15 s: ${proc.output.slice(-2000)}`);
      await sleep(100);
    }
    await sw.swanctl(['--load-all', '-f', path.join(dir, 'swanctl.conf')], 10_000, true);
    return sw;
  }

  /** swanctl with this charon's vici socket. */
  async swanctl(args: string[], timeoutMs = 30_000, check = false) {
    const r = await this.lab.exec(null, 'swanctl', [...args, '-u', this.vici], { timeoutMs });
    if (check && r.code !== 0) throw new Error(`swanctl ${args.join(' ')} failed (${r.code}): ${r.stdout.slice(-1500)} ${r.stderr.slice(-500)}`);
    return r;
  }

  initiate(timeoutMs = 30_000, child = 't') {
    return this.swanctl(['--initiate', '--child', child, '--timeout', String(Math.ceil(timeoutMs / 1000))], timeoutMs + 5000);
  }
  rekeyChild() {
    return this.swanctl(['--rekey', '--child', 't'], 30_000, true);
  }
  rekeyIke() {
    return this.swanctl(['--rekey', '--ike', 'lab'], 30_000, true);
  }
  terminateChild() {
    return this.swanctl(['--terminate', '--child', 't'], 30_000, true);
  }
  terminateIke() {
    return this.swanctl(['--terminate', '--ike', 'lab'], 30_000, true);
  }
  async listSas(): Promise<string> {
    return (await this.swanctl(['--list-sas'], 10_000)).stdout;
  }

  log(): string {
    try {
      return fs.readFileSync(this.logFile, 'utf8');
    } catch {
      return '';
    }
  }

  /** Stops charon (SIGTERM to its process group; it removes its ipsec0). */
  async stop(): Promise<void> {
    await this.proc.kill(5000);
  }
}
