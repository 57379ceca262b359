/**
 * The mutual-TLS service of KB 903927 (an LCS/SIP-like server on TCP 5061): `node:tls`
 * on the stack's own sockets, client certificates required, a small listen backlog
 * and a slow accept pace (MtlsListenBacklog, MtlsAcceptIntervalMs), so that a burst
 * of clients overflows the backlog.
 *
 * When the stack tells the server of a connection, the server allocates its
 * per-connection negotiation state (the article's "stacks": record buffers for the
 * TLS handshake and a session object). On the KB 903927 reset path that state is
 * what leaks in buggy mode and is released in hotfixed mode.
 *
 * Protocol after the handshake: the server greets with "hello <client CN>\n" and then
 * echoes lines back, so a client can check the whole path.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tls from 'node:tls';
import type { FsServer, FsSocket } from '../api/net';
import type { createNetApi } from '../api/net';
import type { FaultConfig } from '../faults/catalogue';
import type { TcpConnection } from '../tcp/connection';
import { makeCerts, CertFiles } from './certs';

export const MTLS_PORT = 5061;
/** Size of one TLS record buffer; a negotiation holds one in and one out. */
const RECORD_BUFFER = 16 * 1024 + 512;

/** Per-connection server state allocated at indication time. */
export class NegotiationState {
  readonly inbound = Buffer.alloc(RECORD_BUFFER);
  readonly outbound = Buffer.alloc(RECORD_BUFFER);
  readonly session = { createdAt: Date.now(), peer: '', transcript: [] as Buffer[] };
  released = false;
  static live = 0;
  constructor(peer: string) { this.session.peer = peer; NegotiationState.live++; }
  get bytes(): number { return this.inbound.length + this.outbound.length + 256; }
  release(): void { if (!this.released) { this.released = true; NegotiationState.live--; } }
}

export interface MtlsOptions {
  port?: number;
  certs?: CertFiles;
  /** Where to create throwaway certificates when none are given. */
  certDir?: string;
  faults: FaultConfig;
  log?: (line: string) => void;
}

export interface MtlsHandle {
  readonly name: 'mtls';
  readonly ready: Promise<void>;
  port(): number;
  connections(): number;
  stats(): { accepted: number; handshakes: number; handshakeErrors: number; liveStates: number };
  close(): Promise<void>;
}

/** Finds or makes the certificates the service needs. */
export function ensureCerts(dir: string): CertFiles {
  const files: CertFiles = {
    dir, ca: path.join(dir, 'ca.pem'), serverKey: path.join(dir, 'server.key'), serverCert: path.join(dir, 'server.pem'),
    clientKey: path.join(dir, 'client.key'), clientCert: path.join(dir, 'client.pem'),
  };
  if ([files.ca, files.serverKey, files.serverCert].every((f) => fs.existsSync(f))) return files;
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  return makeCerts(dir);
}

export function startMtls(api: ReturnType<typeof createNetApi>, opts: MtlsOptions): MtlsHandle {
  const p = opts.faults.params;
  const certs = opts.certs ?? ensureCerts(opts.certDir ?? '/run/faultstack/certs');
  const context = tls.createSecureContext({
    key: fs.readFileSync(certs.serverKey), cert: fs.readFileSync(certs.serverCert), ca: fs.readFileSync(certs.ca),
  });
  let accepted = 0, handshakes = 0, handshakeErrors = 0;
  const open = new Set<tls.TLSSocket>();
  const server = api.createServer(undefined, { acceptIntervalMs: p.MtlsAcceptIntervalMs }) as FsServer;
  server.on('connection', (raw: FsSocket) => {
    accepted++;
    const conn = raw.conn as (TcpConnection & { appState: unknown }) | null;
    const state = (conn?.appState as NegotiationState | null) ?? new NegotiationState(`${raw.remoteAddress}:${raw.remotePort}`);
    raw.on('error', () => {});
    const t = new tls.TLSSocket(raw, { isServer: true, secureContext: context, requestCert: true, rejectUnauthorized: true });
    open.add(t);
    t.on('secure', () => {
      handshakes++;
      const cert = t.getPeerCertificate();
      t.write(`hello ${cert && cert.subject ? cert.subject.CN : 'unknown'}\n`);
    });
    t.on('data', (d: Buffer) => t.write(d));
    t.on('end', () => t.end());
    t.on('error', () => { handshakeErrors++; t.destroy(); });
    t.on('close', () => { open.delete(t); state.release(); });
  });
  const ready = new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ port: opts.port ?? MTLS_PORT, backlog: p.MtlsListenBacklog }, () => {
      const l = server.listener!;
      // Told of a connection: allocate its negotiation state (what KB 903927 leaks).
      l.onIndicate = (conn) => new NegotiationState(`${conn.remoteAddr}:${conn.remotePort}`);
      resolve();
    });
  });
  // Backlog and pace follow the parameters live.
  const unsub = opts.faults.onChange((ch) => {
    if (ch.kind !== 'param') return;
    if (ch.name === 'MtlsListenBacklog' && server.listener) server.listener.backlog = p.MtlsListenBacklog;
    if (ch.name === 'MtlsAcceptIntervalMs') server.opts.acceptIntervalMs = p.MtlsAcceptIntervalMs;
  });
  return {
    name: 'mtls',
    ready,
    port: () => server.address()?.port ?? 0,
    connections: () => open.size,
    stats: () => ({ accepted, handshakes, handshakeErrors, liveStates: NegotiationState.live }),
    close: () => new Promise<void>((resolve) => {
      unsub();
      for (const t of open) t.destroy();
      server.close(() => resolve());
    }),
  };
}
