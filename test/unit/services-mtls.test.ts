/**
 * The mtls service (KB 903927's application) written against the net-api only: mutual
 * TLS on faultstack's sockets over the memory link, and unchanged on Node's own net.
 * Its per-connection negotiation state is declared through the server option
 * `connectionState`: the server allocates it when the application is told of a
 * connection (here: at accept) and releases it when the socket closes. The listen
 * backlog follows MtlsListenBacklog live through the optional `setBacklog`.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as tls from 'node:tls';
import { afterAll, describe, expect, test } from 'vitest';
import { kernelNet } from '../../stack/api/kernel-net';
import type { TcpSocketLike } from '../../stack/api/net-api';
import { buildFaultConfig } from '../../stack/faults/config';
import { makeCerts, type CertFiles } from '../../stack/services/certs';
import { MTLS_PORT, NegotiationState, startMtls } from '../../stack/services/mtls';
import { B_ADDR, makePair, runUntil } from './helpers/pair';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fs-mtls-'));
const certs: CertFiles = makeCerts(dir);
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

/** A mutual-TLS client over `raw`: the lines the server sends, and whether it closed. */
function client(raw: TcpSocketLike) {
  const t = tls.connect({
    socket: raw,
    ca: fs.readFileSync(certs.ca),
    key: fs.readFileSync(certs.clientKey),
    cert: fs.readFileSync(certs.clientCert),
    checkServerIdentity: () => undefined,
  });
  const r = { t, text: '', error: null as Error | null, closed: false };
  t.on('data', (d: Buffer) => {
    r.text += d.toString();
  });
  t.on('error', (e) => {
    r.error = e;
  });
  t.on('close', () => {
    r.closed = true;
  });
  return r;
}

describe('mtls on the net-api', () => {
  test("on faultstack's sockets: handshake, greeting with the client's CN, echo; the state lives as long as the socket", async () => {
    const p = makePair();
    const cfg = buildFaultConfig({ profile: 'linux', faults: [], params: ['MtlsAcceptIntervalMs=0'] });
    const live0 = NegotiationState.live;
    const h = startMtls(p.netB, { faults: cfg, certs });
    let ready = false;
    void h.ready.then(() => {
      ready = true;
    });
    expect(await runUntil(p.clock, () => ready, 100)).toBe(true);
    expect(h.port()).toBe(MTLS_PORT);

    const c = client(p.netA.connect({ host: B_ADDR, port: MTLS_PORT }));
    expect(await runUntil(p.clock, () => c.text.includes('\n') || c.error !== null, 5_000)).toBe(true);
    expect(c.error).toBeNull();
    expect(c.text).toBe('hello faultstack-client\n');
    c.t.write('ping over mutual TLS\n');
    expect(await runUntil(p.clock, () => c.text.endsWith('ping over mutual TLS\n'), 5_000)).toBe(true);
    expect(h.stats()).toMatchObject({ accepted: 1, handshakes: 1, handshakeErrors: 0 });
    // Allocated when the server took the connection, held while it is open.
    expect(NegotiationState.live - live0).toBe(1);

    c.t.end();
    expect(await runUntil(p.clock, () => c.closed && h.connections() === 0 && NegotiationState.live === live0, 5_000)).toBe(true);

    // The listen backlog follows the parameter.
    cfg.setParam('MtlsListenBacklog', 3);
    expect(p.b.tcp.listeners.get(MTLS_PORT)!.backlog).toBe(3);
    let closed = false;
    void h.close().then(() => {
      closed = true;
    });
    expect(await runUntil(p.clock, () => closed, 100)).toBe(true);
    expect(p.b.tcp.listeners.has(MTLS_PORT)).toBe(false);
  });

  test("unchanged on Node's net (the kernel's TCP on 127.0.0.1): the same service, the same state accounting", async () => {
    const cfg = buildFaultConfig({ faults: [], params: [] });
    const live0 = NegotiationState.live;
    const h = startMtls(kernelNet, { faults: cfg, certs, port: 0 });
    await h.ready;
    const c = client(kernelNet.connect({ host: '127.0.0.1', port: h.port() }));
    await new Promise<void>((resolve, reject) => {
      c.t.on('data', () => {
        if (c.text.includes('\n')) resolve();
      });
      c.t.once('error', reject);
    });
    expect(c.text).toBe('hello faultstack-client\n');
    expect(NegotiationState.live - live0).toBe(1);
    c.t.end();
    await new Promise<void>((resolve) => {
      const poll = () => (NegotiationState.live === live0 ? resolve() : setTimeout(poll, 5));
      poll();
    });
    await h.close();
    expect(h.stats()).toMatchObject({ accepted: 1, handshakes: 1, handshakeErrors: 0 });
  });
});
