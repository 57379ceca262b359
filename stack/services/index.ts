/**
 * Starts faultstack's network services on any NetApi (the kernel's or the
 * userspace stack's).
 *
 *   const handles = await startServices(api, ['echo', 'http'], { ports: { http: 8080 } });
 *   ...
 *   await Promise.all(handles.map((h) => h.close()));
 */
import type { NetApi } from '../api/net-api';
import { startChargen } from './chargen';
import { startDiscard } from './discard';
import { startEcho, type LogFn, type ServiceHandle } from './echo';
import { startHttp, type StatusProvider } from './http';
import { startIperf3Server, type Iperf3ServerStats } from './iperf3';

export type { ServiceHandle } from './echo';
export { setStatusProvider } from './http';

export const SERVICE_NAMES = ['echo', 'discard', 'chargen', 'http', 'iperf3'] as const;
export type ServiceName = (typeof SERVICE_NAMES)[number];

/** Well-known ports, used when `ports` does not say otherwise. */
export const DEFAULT_PORTS: Readonly<Record<ServiceName, number>> = {
  echo: 7,
  discard: 9,
  chargen: 19,
  http: 80,
  iperf3: 5201,
};

export function isServiceName(name: string): name is ServiceName {
  return (SERVICE_NAMES as readonly string[]).includes(name);
}

export interface StartServicesOptions {
  /** Address to bind (default: all). */
  host?: string;
  /** Per-service port overrides (0 = ephemeral). */
  ports?: Partial<Record<ServiceName, number>>;
  log?: LogFn;
  /** Status-page provider for the http service. */
  statusProvider?: StatusProvider;
  /** Serve UDP echo next to TCP echo (default true). */
  udpEcho?: boolean;
  /**
   * The runtime passes its fault registry and event log along; the services
   * here do not use them (yet) and accept them so callers need not filter.
   */
  faults?: unknown;
  events?: unknown;
}

/** A started service; `stats()` gives its counters (shape depends on the service). */
export interface RunningService extends ServiceHandle {
  readonly name: ServiceName;
  stats(): unknown;
}

function startOne(api: NetApi, name: ServiceName, opts: StartServicesOptions): RunningService {
  const port = opts.ports?.[name] ?? DEFAULT_PORTS[name];
  const base = { port, host: opts.host, log: opts.log };
  switch (name) {
    case 'echo': {
      const h = startEcho(api, { ...base, udp: opts.udpEcho !== false });
      return { ...h, name, stats: h.stats };
    }
    case 'discard': {
      const h = startDiscard(api, base);
      return { ...h, name, stats: h.stats };
    }
    case 'chargen': {
      const h = startChargen(api, base);
      return { ...h, name, stats: h.stats };
    }
    case 'http': {
      const h = startHttp(api, { ...base, ...(opts.statusProvider ? { statusProvider: opts.statusProvider } : {}) });
      return { ...h, name, stats: h.stats };
    }
    case 'iperf3': {
      const h = startIperf3Server(api, base);
      return {
        name,
        ready: h.ready,
        port: h.port,
        connections: (): number => (h.stats().running ? 1 : 0),
        close: h.close,
        stats: (): Iperf3ServerStats => h.stats(),
      };
    }
  }
}

/**
 * Starts the named services and waits until all listen. Unknown names throw
 * before anything starts; if one service fails to listen, the others are
 * closed again and the error is thrown. Duplicate names start once.
 */
export async function startServices(api: NetApi, names: readonly string[], opts: StartServicesOptions = {}): Promise<RunningService[]> {
  const bad = names.filter((n) => !isServiceName(n));
  if (bad.length > 0) {
    throw new Error(`unknown service(s): ${bad.join(', ')} (known: ${SERVICE_NAMES.join(', ')})`);
  }
  const unique = [...new Set(names)] as ServiceName[];
  const handles = unique.map((n) => startOne(api, n, opts));
  const results = await Promise.allSettled(handles.map((h) => h.ready));
  const failed = results
    .map((r, i) => (r.status === 'rejected' ? `${unique[i]}: ${(r.reason as Error).message}` : null))
    .filter((x): x is string => x !== null);
  if (failed.length > 0) {
    await Promise.all(handles.map((h) => h.close()));
    throw new Error(`could not start service(s): ${failed.join('; ')}`);
  }
  return handles;
}

/** Closes all handles (convenience for shutdown paths). */
export async function closeServices(handles: readonly ServiceHandle[]): Promise<void> {
  await Promise.all(handles.map((h) => h.close()));
}
