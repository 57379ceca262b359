/**
 * The lab most integration tests start from: one namespace with the kernel's tools, and a
 * stack on a TUN device in it at 198.18.0.2/24 (the kernel's side 198.18.0.1/24), its
 * control socket in a temporary directory of its own. `cleanup()` removes the namespace,
 * the device and the directory. Under CI=true, as everywhere, a missing tool is a
 * failure: `needTools` throws, naming what to install.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Lab, type StackProcess } from '../../../lab/lab';

export const STACK = '198.18.0.2';
export const HOST = '198.18.0.1';
/** The system Python, which has scapy (python3-scapy). */
export const PY = '/usr/bin/python3';

export interface TunLab {
  lab: Lab;
  ns: string;
  stack: StackProcess;
  /** The lab's temporary directory (the control socket is in it). */
  tmp: string;
  cleanup(): Promise<void>;
}

/** Throws unless every command is on the PATH (and, with `scapy`, the system Python has scapy). */
export function needTools(...names: string[]): void {
  for (const name of names) {
    if (name === 'scapy') {
      if (spawnSync(PY, ['-c', 'import scapy.all']).status !== 0) throw new Error(`${PY} has no scapy (make deps installs python3-scapy)`);
    } else if (spawnSync('sh', ['-c', `command -v ${name}`]).status !== 0) throw new Error(`${name} is not installed (make deps installs it)`);
  }
}

export interface TunLabOptions {
  /** `--services`. */
  services: string;
  /** More `faultstack run` arguments, after the common ones. */
  args?: string[];
  /** false: no `--host-addr` (the test gives the kernel's side its address itself). */
  hostAddr?: boolean;
  /** The stack's environment. */
  env?: NodeJS.ProcessEnv;
  /**
   * Runs before the stack starts (a sysctl, a route, another namespace, a file in `tmp`);
   * what it returns goes on the stack's command line after `args` (e.g. `--ipsec FILE`).
   */
  prepare?: (lab: Lab, ns: string, tmp: string) => Promise<string[] | void>;
}

export async function startTunLab(tag: string, o: TunLabOptions): Promise<TunLab> {
  const lab = await Lab.create(tag);
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), `fs-${tag}-`));
  const cleanup = async () => {
    await lab.cleanup();
    fs.rmSync(tmp, { recursive: true, force: true });
  };
  try {
    const ns = await lab.addNamespace('k');
    const more = (o.prepare ? await o.prepare(lab, ns, tmp) : undefined) ?? [];
    const stack = await lab.startStack(
      ns,
      [
        '--tun',
        lab.ifname('t'),
        '--addr',
        `${STACK}/24`,
        ...(o.hostAddr === false ? [] : ['--host-addr', `${HOST}/24`]),
        '--services',
        o.services,
        '--control',
        path.join(tmp, 'ctl.sock'),
        ...(o.args ?? []),
        ...more,
      ],
      o.env ? { env: o.env } : {},
    );
    return { lab, ns, stack, tmp, cleanup };
  } catch (e) {
    await cleanup();
    throw e;
  }
}

/**
 * Runs a scapy client script (scapyPrelude and what follows it) in the lab's namespace and
 * waits for the JSON line it prints; `stop()` ends it (the script keeps its connection open
 * until then, while the test looks at the stack).
 */
export async function runScapyClient<T>(t: TunLab, script: string): Promise<{ out: T; stop: () => Promise<void> }> {
  const p = t.lab.spawn(t.ns, PY, ['-c', script]);
  const m = await p.waitFor(/^\{.*\}$/m, { timeoutMs: 60_000, stream: 'stdout' });
  return {
    out: JSON.parse(m[0]) as T,
    stop: async () => {
      await p.kill(2000);
    },
  };
}

/**
 * The Python prelude of the scapy clients (tcp-timestamps, tcp-recovery): a kernel socket
 * bound to HOST (optionally with TCP_MAXSEG), an AsyncSniffer on the TUN device for its
 * port, and helpers: `echo(data)` sends and reads back through the stack's echo service;
 * `segs(frm)` the sniffed TCP segments from an address; `wait(cond, secs)` polls until
 * cond() is truthy; `last_data(frm, payload)` the (seq, len, window, Timestamp) of the
 * last segment from `frm` that ends with `payload`. The caller connects `sock`.
 */
export function scapyPrelude(iface: string, opts: { mss?: number } = {}): string {
  return `
import json, socket, subprocess, sys, time
from scapy.all import AsyncSniffer, IP, TCP, send, conf
conf.verb = 0
S, H, IFACE = '${STACK}', '${HOST}', '${iface}'
sock = socket.socket()
${opts.mss ? `sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, ${opts.mss})` : ''}
sock.bind((H, 0)); lport = sock.getsockname()[1]
seen = []
sn = AsyncSniffer(iface=IFACE, filter=f'tcp port {lport}', store=False, prn=seen.append); sn.start(); time.sleep(0.5)
sock.settimeout(5)
def echo(data):
    sock.sendall(data); got = b''
    while len(got) < len(data):
        chunk = sock.recv(65536)
        if not chunk: break
        got += chunk
    return got == data
def segs(frm):
    return [p for p in list(seen) if p.haslayer(TCP) and p[IP].src == frm]
def wait(cond, secs=5):
    for _ in range(int(secs / 0.05)):
        r = cond()
        if r: return r
        time.sleep(0.05)
    return None
def last_data(frm, payload):
    # The sniffer may lag: wait until it has the segment that carried \`payload\`.
    p = wait(lambda: ([p for p in segs(frm) if bytes(p[TCP].payload).endswith(payload)] or [None])[-1])
    return p[TCP].seq, len(p[TCP].payload), p[TCP].window, dict(p[TCP].options).get('Timestamp')
`;
}
