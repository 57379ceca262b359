/**
 * The firewall lab (KB 319381): faultstack as a firewall between an internal host and an
 * external media server, each a kernel in a namespace of its own, reachable only
 * through the firewall's two TUN devices.
 *
 *   ns "in" (the internal host)          ns "fw" (faultstack)                     ns "out" (media server)
 *   198.18.1.2/24  ==TUN fwin==  198.18.1.1 [Firewall: filter, SecureNAT,  198.19.0.1 ==TUN fwex==  198.19.0.2/24
 *   default via 198.18.1.1                  Firewall Client on 1745]                                  no route back
 *
 * The TUN devices are opened by faultstack in "fw" and their kernel sides moved into "in"
 * and "out" (--host-netns, --external-host-netns). With `kernelPath`, a second, plain
 * kernel route joins "in" and "out" through a namespace "kr" that forwards (the bench's
 * baseline): 198.18.2.0/24 and 198.19.2.0/24, masqueraded as SecureNAT is.
 *
 * The lab's media server (lab/media/mms-server.ts) runs in "out" on kernel sockets, the
 * player (lab/media/mms-player.ts) in "in". Everything goes with cleanup().
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Lab, LabProcess, StackProcess, repoRoot } from './lab';
import type { PlayResult } from './media/mms-player';

export const FW_IN = '198.18.1.1';
export const HOST_IN = '198.18.1.2';
export const FW_EXT = '198.19.0.1';
export const MEDIA = '198.19.0.2';
/** The kernel baseline's addresses (kernelPath). */
export const KIN = '198.18.2.2';
export const KOUT = '198.19.2.2';

export interface FirewallLabOptions {
  tag?: string;
  /** Build the kernel-forwarding baseline path through namespace "kr" too. */
  kernelPath?: boolean;
}

export interface FirewallConfig {
  mode?: 'off' | 'buggy' | 'hotfixed';
  params?: Record<string, number | string>;
  rules?: string[];
  externalMtu?: number;
  offloads?: boolean;
  eventsFile?: string;
  pcap?: string;
  externalPcap?: string;
  /** More `faultstack run` flags (a scenario's --impair, say). */
  extraArgs?: string[];
}

export interface LabEvent {
  seq?: number;
  fault?: string;
  kind: string;
  message?: string;
  data?: Record<string, unknown>;
}

export class FirewallLab {
  stack: StackProcess | null = null;
  private server: LabProcess | null = null;
  /** The kernel baseline's veths (kernelPath): the end in "in" and the end in "out". */
  kernelDevs: { in: string; out: string } | null = null;

  private constructor(
    readonly lab: Lab,
    readonly ns: { fw: string; in: string; out: string; kr: string | null },
    readonly tmp: string,
  ) {}

  get controlPath(): string {
    return path.join(this.tmp, 'fw.sock');
  }
  get tunIn(): string {
    return this.lab.ifname('i');
  }
  get tunOut(): string {
    return this.lab.ifname('e');
  }

  static async create(opts: FirewallLabOptions = {}): Promise<FirewallLab> {
    const lab = await Lab.create(opts.tag ?? 'fwl');
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fs-fw-'));
    let kernelDevs: { in: string; out: string } | null = null;
    try {
      const ns = { fw: await lab.addNamespace('fw'), in: await lab.addNamespace('in'), out: await lab.addNamespace('out'), kr: null as string | null };
      if (opts.kernelPath) {
        ns.kr = await lab.addNamespace('kr');
        const vin = await lab.veth(ns.in, ns.kr, { addrA: `${KIN}/24`, addrB: '198.18.2.1/24' });
        const vout = await lab.veth(ns.kr, ns.out, { addrA: '198.19.2.1/24', addrB: `${KOUT}/24` });
        kernelDevs = { in: vin.devA, out: vout.devB };
        await lab.sysctl(ns.kr, 'net.ipv4.ip_forward', 1);
        await lab.ip(ns.in, 'route', 'add', '198.19.2.0/24', 'via', '198.18.2.1');
        // The kernel's SecureNAT: source NAT to its external address, as the firewall does.
        await lab.exec(ns.kr, 'nft', ['-f', '-'], {
          input:
            'add table ip fsnat\nadd chain ip fsnat post { type nat hook postrouting priority 100 ; }\n' +
            'add rule ip fsnat post ip saddr 198.18.2.0/24 oifname != "lo" masquerade\n',
          check: true,
          timeoutMs: 10_000,
        });
      }
      const fl = new FirewallLab(lab, ns, tmp);
      fl.kernelDevs = kernelDevs;
      return fl;
    } catch (e) {
      await lab.cleanup().catch(() => {});
      fs.rmSync(tmp, { recursive: true, force: true });
      throw e;
    }
  }

  /** (Re)starts the firewall; the internal host's default route goes through it. */
  async startFirewall(cfg: FirewallConfig = {}): Promise<StackProcess> {
    await this.stopFirewall();
    const args = [
      '--tun',
      this.tunIn,
      '--addr',
      `${FW_IN}/24`,
      '--host-addr',
      `${HOST_IN}/24`,
      '--host-netns',
      this.ns.in,
      '--external-tun',
      this.tunOut,
      '--external-addr',
      `${FW_EXT}/24`,
      '--external-host-addr',
      `${MEDIA}/24`,
      '--external-host-netns',
      this.ns.out,
      '--services',
      'none',
      '--control',
      this.controlPath,
      '--fault',
      `kb319381=${cfg.mode ?? 'hotfixed'}`,
      '--offloads',
      cfg.offloads === false ? 'off' : 'on',
    ];
    if (cfg.externalMtu) args.push('--external-mtu', String(cfg.externalMtu));
    for (const [k, v] of Object.entries(cfg.params ?? {})) args.push('--param', `${k}=${v}`);
    for (const r of cfg.rules ?? []) args.push('--fw-rule', r);
    if (cfg.eventsFile) args.push('--events', cfg.eventsFile);
    if (cfg.pcap) args.push('--pcap', cfg.pcap);
    if (cfg.externalPcap) args.push('--external-pcap', cfg.externalPcap);
    args.push(...(cfg.extraArgs ?? []));
    this.stack = await this.lab.startStack(this.ns.fw, args);
    await this.lab.ip(this.ns.in, 'route', 'replace', 'default', 'via', FW_IN);
    return this.stack;
  }

  async stopFirewall(): Promise<void> {
    const s = this.stack;
    this.stack = null;
    if (s) await s.kill(5000);
  }

  /** The media server in "out", listening on `listen` (default: every address). */
  async startMediaServer(args: string[] = []): Promise<LabProcess> {
    await this.stopMediaServer();
    const p = this.lab.spawn(this.ns.out, process.execPath, [path.join(repoRoot(), 'dist', 'lab', 'media', 'mms-server.js'), ...args]);
    await p.waitFor(/mms-server ready/, { timeoutMs: 15_000 });
    this.server = p;
    return p;
  }

  async stopMediaServer(): Promise<void> {
    const s = this.server;
    this.server = null;
    if (s) await s.kill(3000);
  }

  /** Runs the player in "in" to the end; its summary. */
  async play(args: string[], timeoutMs = 60_000): Promise<PlayResult & { stdout: string }> {
    const r = await this.lab.exec(this.ns.in, process.execPath, [path.join(repoRoot(), 'dist', 'lab', 'media', 'mms-player.js'), ...args], { timeoutMs });
    const line = r.stdout.split('\n').find((l) => l.startsWith('{"summary"'));
    if (!line) throw new Error(`mms-player ${args.join(' ')} printed no summary (exit ${r.code}${r.timedOut ? ', timed out' : ''}):\n${r.stdout}\n${r.stderr}`);
    return { ...(JSON.parse(line) as { summary: PlayResult }).summary, stdout: r.stdout };
  }

  /** `faultstack ARGS --control <the firewall>`. */
  async cli(args: string[], check = true): Promise<{ code: number | null; stdout: string; stderr: string }> {
    const r = await this.lab.cli(this.ns.fw, [...args, '--control', this.controlPath], { timeoutMs: 20_000 });
    if (check && r.code !== 0) throw new Error(`faultstack ${args.join(' ')} failed (${r.code}): ${r.stderr}`);
    return r;
  }

  async fw<T = Record<string, unknown>>(view: 'summary' | 'sessions' | 'bindings' | 'rules'): Promise<T> {
    return JSON.parse((await this.cli(['fw', view, '--json'])).stdout) as T;
  }

  async events(): Promise<LabEvent[]> {
    return (await this.cli(['events', '--json'])).stdout
      .split('\n')
      .filter((l) => l.trim())
      .map((l) => JSON.parse(l) as LabEvent);
  }

  /** Packets a device has received and sent, and what it dropped (ip -s link). */
  async linkStats(ns: string, dev: string): Promise<{ rxPackets: number; txPackets: number; txDropped: number }> {
    const out = await this.lab.exec(ns, 'ip', ['-s', '-j', 'link', 'show', 'dev', dev], { check: true, timeoutMs: 10_000 });
    const st = (JSON.parse(out.stdout) as { stats64: { rx: { packets: number }; tx: { packets: number; dropped: number } } }[])[0]!.stats64;
    return { rxPackets: st.rx.packets, txPackets: st.tx.packets, txDropped: st.tx.dropped };
  }

  async setMode(mode: 'off' | 'buggy' | 'hotfixed'): Promise<void> {
    await this.cli(['fault', 'set', 'kb319381', mode]);
  }
  async setParam(name: string, value: number | string): Promise<void> {
    await this.cli(['param', 'set', name, String(value)]);
  }

  async cleanup(): Promise<void> {
    try {
      await this.lab.cleanup();
    } finally {
      fs.rmSync(this.tmp, { recursive: true, force: true });
    }
  }
}
