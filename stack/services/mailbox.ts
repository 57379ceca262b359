/**
 * The lab's sticky application for KB 972183: a small "mailbox" server that, like
 * Exchange behind NLB, expects one host per client. Every host of the cluster runs it on
 * TCP 6001 (the cluster address); the hosts share a session directory (the lab's
 * "mailbox server", lab/clients/mailbox-directory.cjs) that admits a client's logon at one
 * host at a time.
 *
 * Protocol (lines):  client: HELLO <name>      server: CONNECTED host=<n> identity=<id> via=<ipsec|login>
 *                                                       or REFUSED <reason>, then the server closes
 *                    client: PING              server: PONG host=<n>
 *
 * Who the client is, and how long its logon lasts, is the property that makes the
 * article's defect matter:
 * - a connection that came through an IPsec tunnel is the tunnel's peer identity (IKE's
 *   IDi): the server trusts the tunnel, as IPsec deployments of the time did, and the
 *   logon lasts as long as this host holds a tunnel of that identity (the security
 *   association is the authentication: when it goes, the logon goes);
 * - a connection in the clear (no IPsec, or an IPsec exception for this application, the
 *   article's two workarounds) is the name in its HELLO, and the logon lasts as long as
 *   the client keeps a connection open.
 * So a client that disconnects from the service and reconnects from another network
 * leaves no logon behind in the clear, but through IPsec its logon stays on the old host
 * for as long as the old tunnel's state does there: NLB without the hotfix keeps it, and the new host
 * is refused ("logged on at host 1") until IPsec's dead-peer detection gives up on the
 * old tunnel; the hotfix destroys that state when the new tunnel opens.
 *
 * The directory waits up to its grace period for a logon held elsewhere to go before it
 * refuses (a logon that is being released is not a conflict).
 */
import type { NetApi, TcpSocketLike } from '../api/net-api';
import { formatIpv4, parseIpv4 } from '../wire/addr';
import { PROTO_TCP } from '../wire/ipv4';

export const MAILBOX_PORT = 6001;

/** What the service needs from IPsec: the identity of a connection's tunnel, and the tunnels' comings and goings. */
export interface MailboxIpsec {
  childFor(protocol: number, local: number, localPort: number, remote: number, remotePort: number): { identity: { value: string }; ikeSaId: number } | null;
  sasByIdentity(): Map<string, { children: unknown[] }>;
  /** Tunnel events; the service acts on `child-sa-down` and `ike-sa-down` (the runtime passes the stack's Ipsec, which has this shape). */
  subscribe(fn: (e: { kind: string }) => void): () => void;
}

export interface MailboxOptions {
  api: NetApi;
  ipsec: MailboxIpsec | null;
  /** This host's NLB priority (the "host" clients see) and dedicated address. */
  host: number;
  localAddr: number;
  directory: { addr: number; port: number };
  port?: number;
  /** Something happened worth an event (a logon, a refusal). */
  onEvent?: (kind: 'mailbox-logon' | 'mailbox-logoff' | 'mailbox-refused', message: string, data: object) => void;
}

interface Logon {
  identity: string;
  via: 'ipsec' | 'login';
  since: number;
  conns: Set<TcpSocketLike>;
}

export function startMailbox(o: MailboxOptions) {
  const port = o.port ?? MAILBOX_PORT;
  const logons = new Map<string, Logon>();
  const counters = { connections: 0, connected: 0, refused: 0, logons: 0, logoffs: 0, directoryErrors: 0, pings: 0 };
  const emit = o.onEvent ?? (() => {});
  let closed = false;

  // ---------------------------------------------------------------- the directory connection
  let dir: TcpSocketLike | null = null;
  let dirReady = false;
  let dirBuf = '';
  let seq = 0;
  const waiting = new Map<number, (reply: string[]) => void>();
  let retry: NodeJS.Timeout | null = null;
  const dirAddr = `${formatIpv4(o.directory.addr)}:${o.directory.port}`;

  const connectDirectory = () => {
    if (closed) return;
    const s = o.api.connect({ host: formatIpv4(o.directory.addr), port: o.directory.port, localAddress: formatIpv4(o.localAddr) }, () => {
      dirReady = true;
      s.write(`FRONTEND ${o.host} ${formatIpv4(o.localAddr)}\n`);
      // Logons made while the directory was away (none: we refuse then), or kept across a reconnect.
      for (const l of logons.values()) s.write(`CLAIM ${encodeURIComponent(l.identity)} ${l.via}\n`);
    });
    dir = s;
    s.on('data', (d: Buffer) => {
      dirBuf += d.toString('utf8');
      let nl: number;
      while ((nl = dirBuf.indexOf('\n')) >= 0) {
        const line = dirBuf.slice(0, nl).trim();
        dirBuf = dirBuf.slice(nl + 1);
        const w = line.split(' ');
        const id = Number(w[1]);
        const cb = waiting.get(id);
        if (cb) {
          waiting.delete(id);
          cb(w);
        }
      }
    });
    const lost = () => {
      if (dir !== s) return;
      dir = null;
      dirReady = false;
      dirBuf = '';
      counters.directoryErrors++;
      for (const cb of waiting.values()) cb(['ERROR', '0', 'the session directory connection was lost']);
      waiting.clear();
      if (!closed && !retry)
        retry = setTimeout(() => {
          retry = null;
          connectDirectory();
        }, 500);
    };
    s.on('error', lost);
    s.on('close', lost);
  };
  connectDirectory();

  const askLogon = (identity: string, via: string): Promise<string[]> =>
    new Promise((resolve) => {
      if (!dir || !dirReady) {
        resolve(['ERROR', '0', `the session directory (${dirAddr}) is not reachable`]);
        return;
      }
      const id = ++seq;
      waiting.set(id, resolve);
      dir.write(`LOGON ${id} ${encodeURIComponent(identity)} ${via}\n`);
    });

  const logoff = (identity: string, why: string) => {
    const l = logons.get(identity);
    if (!l) return;
    logons.delete(identity);
    counters.logoffs++;
    dir?.write(`LOGOFF ${encodeURIComponent(identity)}\n`);
    for (const c of l.conns) c.destroy();
    emit('mailbox-logoff', `${identity} logged off (${why})`, { identity, via: l.via, why });
  };

  // An IPsec-bound logon ends when this host no longer holds a tunnel of its identity.
  const unsubscribe =
    o.ipsec?.subscribe((e) => {
      if (e.kind !== 'child-sa-down' && e.kind !== 'ike-sa-down') return;
      for (const l of [...logons.values()]) {
        if (l.via !== 'ipsec') continue;
        const sas = o.ipsec!.sasByIdentity().get(l.identity);
        if (!sas || sas.children.length === 0) logoff(l.identity, 'its tunnel to this host is gone');
      }
    }) ?? null;

  // ---------------------------------------------------------------- clients
  const server = o.api.createServer((sock) => {
    counters.connections++;
    sock.on('error', () => {});
    let buf = '';
    let logon: Logon | null = null;
    let busy = false;
    const onLine = async (line: string) => {
      const [verb, ...rest] = line.split(' ');
      if (verb === 'HELLO' && !logon && !busy) {
        busy = true;
        const remote = parseIpv4(sock.remoteAddress ?? '') ?? 0;
        const local = parseIpv4(sock.localAddress ?? '') ?? 0;
        const child = o.ipsec?.childFor(PROTO_TCP, local, sock.localPort ?? port, remote, sock.remotePort ?? 0) ?? null;
        const via: 'ipsec' | 'login' = child ? 'ipsec' : 'login';
        const identity = child ? child.identity.value : rest.join(' ') || `${formatIpv4(remote)}`;
        let l = logons.get(identity);
        if (!l) {
          const r = await askLogon(identity, via);
          if (r[0] !== 'OK') {
            counters.refused++;
            const reason =
              r[0] === 'HELD'
                ? `${identity} is logged on at host ${r[2]} (${r[3]}, through ${r[4] === 'ipsec' ? 'an IPsec tunnel' : 'a connection'}): this application serves a client from one host`
                : r.slice(2).join(' ');
            emit('mailbox-refused', `refused ${identity}: ${reason}`, { identity, via, reason });
            sock.end(`REFUSED ${reason}\n`);
            return;
          }
          // The directory admitted us while we waited: another connection of the same client may have too.
          l = logons.get(identity) ?? { identity, via, since: Date.now(), conns: new Set() };
          if (!logons.has(identity)) {
            logons.set(identity, l);
            counters.logons++;
            emit('mailbox-logon', `${identity} logged on (via ${via})`, { identity, via });
          }
        }
        logon = l;
        l.conns.add(sock);
        counters.connected++;
        busy = false;
        sock.write(`CONNECTED host=${o.host} identity=${encodeURIComponent(identity)} via=${l.via}\n`);
        return;
      }
      if (verb === 'PING' && logon) {
        counters.pings++;
        sock.write(`PONG host=${o.host}\n`);
        return;
      }
      if (verb === 'PING' || verb === 'HELLO') return; // a PING before CONNECTED, a second HELLO: ignored
      sock.end('ERROR unknown request\n');
    };
    sock.on('data', (d: Buffer) => {
      buf += d.toString('utf8');
      if (buf.length > 4096) {
        sock.destroy();
        return;
      }
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl).trim();
        buf = buf.slice(nl + 1);
        void onLine(line);
      }
    });
    sock.on('end', () => sock.end());
    sock.on('close', () => {
      if (!logon) return;
      logon.conns.delete(sock);
      // A logon in the clear lasts as long as the client keeps a connection.
      if (logon.via === 'login' && logon.conns.size === 0 && logons.get(logon.identity) === logon) logoff(logon.identity, 'its last connection closed');
    });
  });
  server.listen(port);

  return {
    port,
    stats: () => ({
      counters: { ...counters },
      directory: { address: dirAddr, connected: dirReady },
      logons: [...logons.values()].map((l) => ({ identity: l.identity, via: l.via, connections: l.conns.size, ageMs: Date.now() - l.since })),
    }),
    close(): Promise<void> {
      closed = true;
      if (retry) clearTimeout(retry);
      unsubscribe?.();
      dir?.destroy();
      return new Promise((r) => server.close(() => r()));
    },
  };
}

export type MailboxHandle = ReturnType<typeof startMailbox>;
