/**
 * `faultstack run --web [ADDR:]PORT`: the HTTP front of the control plane (the JSON API,
 * the event stream, /metrics and the web view), over the same handler table as the
 * control socket, for one thread and for --shards alike. On a loopback address no
 * token is needed unless --web-token gives one; off it, the token is --web-token's or a
 * fresh one, printed with the ready line.
 */
import * as path from 'node:path';
import type { ControlHandler } from '../control/server';
import { HttpControlServer, isLoopback, newToken } from '../control/http';
import type { Lifecycle } from './lifecycle';
import { metricsFrom } from './metrics';
import type { RuntimeOptions } from './options';

/** Where the build puts the page (esbuild, see the Makefile): dist/web next to dist/stack. */
export const WEB_ASSETS = path.join(__dirname, '..', '..', 'web');

export interface WebInfo {
  url: string;
  token: string | null;
}

export async function startWeb(opts: RuntimeOptions, handlers: Record<string, ControlHandler>, life: Lifecycle): Promise<WebInfo | null> {
  if (!opts.web) return null;
  const { host, port } = opts.web;
  const token = opts.web.token ?? (isLoopback(host) ? null : newToken());
  const server = await HttpControlServer.start({
    host,
    port,
    token,
    handlers,
    metrics: metricsFrom(handlers),
    staticDir: WEB_ASSETS,
  });
  life.defer(() => server.close());
  return { url: server.url, token };
}
