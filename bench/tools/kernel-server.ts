/**
 * The baseline's server: the same services (echo, discard, http, iperf3) on the
 * kernel's TCP/IP (kernelNet), in a lab namespace at the far end of a veth pair.
 * JSON commands on stdin: {"cmd":"mem"} (heap/RSS after GC, TcpCurrEstab of this
 * namespace), {"cmd":"stats"} (the namespace's /proc/net/snmp and netstat), {"cmd":"quit"}.
 *   node dist/bench/tools/kernel-server.js [--services echo,discard,http] [--host 198.18.1.2]
 * A process holds at most 20,000 descriptors here (no CAP_SYS_RESOURCE): the memory
 * benchmark runs one per server address.
 */
import { kernelNet } from '../../stack/api/kernel-net';
import { startServices } from '../../stack/services/index';
import { flags, kernelCounters, memoryAfterGc, say, serveCommands } from './common';

async function main(): Promise<void> {
  const f = flags('kernel-server', process.argv.slice(2), ['services', 'host']);
  const names = (f.get('services') ?? 'echo,discard,http').split(',').filter(Boolean);
  const host = f.get('host');
  const handles = await startServices(kernelNet, names, { udpEcho: false, ...(host ? { host } : {}) });
  say({ ready: true, services: names, pid: process.pid });
  const close = async () => {
    for (const h of handles) await h.close();
  };
  serveCommands(async (cmd) => {
    switch (cmd.cmd) {
      case 'mem': {
        const m = memoryAfterGc();
        return { ...m, established: kernelCounters()['Tcp.CurrEstab'] ?? 0 };
      }
      case 'stats':
        return { counters: kernelCounters() };
      case 'quit':
        setImmediate(() => {
          void close().then(() => process.exit(0));
        });
        return { quitting: true };
      default:
        throw new Error(`unknown command ${String(cmd.cmd)}`);
    }
  }, close);
}

main().catch((e: Error) => {
  say({ error: e.message });
  process.exit(1);
});
