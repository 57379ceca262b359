/**
 * Opens `count` idle TCP connections (to a discard port, spread over several server
 * addresses so that one client address has enough ports) and holds them until stdin
 * closes or says {"cmd":"close"}. Progress and the result are JSON lines on stdout.
 *   node dist/bench/tools/conn-holder.js --addrs 198.18.0.2,198.18.0.3 --count 10000
 *        [--port 9] [--concurrency 512]
 * Needs a file-descriptor limit above `count`: the runner starts several holders of at
 * most 16,000 connections each.
 */
import * as net from 'node:net';
import { flags, say, serveCommands } from './common';

async function main(): Promise<void> {
  const f = flags('conn-holder', process.argv.slice(2), ['addrs', 'count', 'port', 'concurrency']);
  const addrs = (f.get('addrs') ?? '198.18.0.2').split(',');
  const count = Number(f.get('count') ?? 1000);
  const port = Number(f.get('port') ?? 9);
  const concurrency = Number(f.get('concurrency') ?? 512);
  const socks: net.Socket[] = [];
  let started = 0;
  let open = 0;
  let failed = 0;
  let lastError = '';
  const t0 = Date.now();
  let lastReport = t0;
  await new Promise<void>((resolve) => {
    const next = () => {
      while (started < count && started - open - failed < concurrency) {
        const host = addrs[started % addrs.length]!;
        started++;
        const s = net.connect({ host, port });
        let settled = false;
        s.once('connect', () => {
          settled = true;
          open++;
          socks.push(s);
          progress();
          next();
        });
        s.on('error', (e) => {
          if (!settled) {
            settled = true;
            failed++;
            lastError = e.message;
            progress();
            next();
          }
        });
      }
      if (open + failed >= count) resolve();
    };
    const progress = () => {
      const now = Date.now();
      if (now - lastReport >= 1000) {
        lastReport = now;
        say({ progress: true, open, failed });
      }
    };
    next();
  });
  say({ done: true, open, failed, lastError, ms: Date.now() - t0 });
  const closeAll = () => {
    for (const s of socks) s.destroy();
    socks.length = 0;
  };
  serveCommands((cmd) => {
    if (cmd.cmd === 'close') {
      closeAll();
      return { closed: true };
    }
    if (cmd.cmd === 'count') return { open: socks.filter((s) => !s.destroyed).length };
    throw new Error(`unknown command ${String(cmd.cmd)}`);
  }, closeAll);
}

main().catch((e: Error) => {
  say({ error: e.message });
  process.exit(1);
});
