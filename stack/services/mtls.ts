/**
 * The mutual-TLS service of KB 903927 (an LCS/SIP-like server on TCP 5061): `node:tls`
 * on the stack's own sockets, client certificates required, a small listen backlog
 * and a slow accept pace (MtlsListenBacklog, MtlsAcceptIntervalMs), so that a burst
 * of clients overflows the backlog.
 *
 * When the stack tells the server of a connection, the server allocates its
 * per-connection negotiation state (the article's "stacks": record buffers for the
 * TLS handshake and a session object). The service only says how (the net-api's
 * `connectionState` server option); the server allocates it when the application is
 * told of a connection and releases it when the socket closes. On KB 903927's reset
 * path that state is what leaks in buggy mode and is released in hotfixed mode
 * (stack/faults/kb903927/).
 *
 * Written against the net-api only (stack/api/net-api.ts): the accept pace and the
 * live backlog change are the optional server calls faultstack's sockets offer.
 *
 * Protocol after the handshake: the server greets with "hello <client CN>\n" and then
 * echoes lines back, so a client can check the whole path.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tls from 'node:tls';
import type { NetApi, TcpSocketLike } from '../api/net-api';
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
  constructor(peer: string) {
    this.session.peer = peer;
    NegotiationState.live++;
  }
  get bytes(): number {
    return this.inbound.length + this.outbound.length + 256;
  }
  release(): void {
    if (!this.released) {
      this.released = true;
      NegotiationState.live--;
    }
  }
}

/**
 * The two parameters the service follows live (the emulated system's listen backlog and
 * accept pace). The runtime passes its fault configuration, which has this shape; the
 * service knows nothing else of the faults.
 */
export interface MtlsSettings {
  readonly params: { readonly MtlsListenBacklog: number; readonly MtlsAcceptIntervalMs: number };
  onChange(listener: (change: { kind: string; name?: string }) => void): () => void;
}

export interface MtlsOptions {
  port?: number;
  certs?: CertFiles;
  /** Where to create throwaway certificates when none are given. */
  certDir?: string;
  faults: MtlsSettings;
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
    dir,
    ca: path.join(dir, 'ca.pem'),
    serverKey: path.join(dir, 'server.key'),
    serverCert: path.join(dir, 'server.pem'),
    clientKey: path.join(dir, 'client.key'),
    clientCert: path.join(dir, 'client.pem'),
  };
  if ([files.ca, files.serverKey, files.serverCert].every((f) => fs.existsSync(f))) return files;
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  return makeCerts(dir);
}

export function startMtls(api: NetApi, opts: MtlsOptions): MtlsHandle {
  const p = opts.faults.params;
  const certs = opts.certs ?? ensureCerts(opts.certDir ?? '/run/faultstack/certs');
  const context = tls.createSecureContext({
    key: fs.readFileSync(certs.serverKey),
    cert: fs.readFileSync(certs.serverCert),
    ca: fs.readFileSync(certs.ca),
  });
  let accepted = 0,
    handshakes = 0,
    handshakeErrors = 0;
  const open = new Set<tls.TLSSocket>();
  const server = api.createServer(undefined, {
    acceptIntervalMs: p.MtlsAcceptIntervalMs,
    // Told of a connection: allocate its negotiation state (what KB 903927 leaks).
    connectionState: (peer) => new NegotiationState(`${peer.remoteAddress}:${peer.remotePort}`),
  });
  server.on('connection', (raw: TcpSocketLike) => {
    accepted++;
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
    t.on('error', () => {
      handshakeErrors++;
      t.destroy();
    });
    t.on('close', () => {
      open.delete(t);
    });
  });
  const ready = new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ port: opts.port ?? MTLS_PORT, backlog: p.MtlsListenBacklog }, () => resolve());
  });
  // Backlog and pace follow the parameters live.
  const unsub = opts.faults.onChange((ch) => {
    if (ch.kind !== 'param') return;
    if (ch.name === 'MtlsListenBacklog') server.setBacklog?.(p.MtlsListenBacklog);
    if (ch.name === 'MtlsAcceptIntervalMs') server.setAcceptInterval?.(p.MtlsAcceptIntervalMs);
  });
  const port = () => {
    const a = server.address();
    return a !== null && typeof a === 'object' ? a.port : 0;
  };
  return {
    name: 'mtls',
    ready,
    port,
    connections: () => open.size,
    stats: () => ({ accepted, handshakes, handshakeErrors, liveStates: NegotiationState.live }),
    close: () =>
      new Promise<void>((resolve) => {
        unsub();
        for (const t of open) t.destroy();
        server.close(() => resolve());
      }),
  };
}
