/**
 * The stack under test, for the benchmarks: `faultstack run`'s runtime started in
 * this process (so that the runner can ask for heap and RSS after a full GC without
 * a stats reply that lists 100k connections), driven by JSON commands on stdin:
 *   {"cmd":"mem"}      heap/RSS after GC, connections in the table, TcpCurrEstab
 *   {"cmd":"stats"}    the stack's counters and the device's
 *   {"cmd":"iperf3", "host":..., "parallel":N, "durationSec":S, "reverse":bool}
 *                      the stack as the client of a kernel iperf3 server
 *   {"cmd":"quit"}
 *   node dist/bench/tools/stack-server.js --tun NAME [--offloads on|off] [--gro on|off] [--queues N]
 *        [--shards [--shard-steer client|kernel]] [--services echo,discard,http,iperf3]
 *        [--addr 198.18.0.2/24] [--host-addr 198.18.0.1/24]
 */
import { startStackRuntime } from '../../stack/runtime/run';
import { parseCidr } from '../../stack/wire/addr';
import { runIperf3Client } from '../../stack/services/iperf3-client';
import type { ServiceName } from '../../stack/runtime/options';
import { flags, memoryAfterGc, say, serveCommands } from './common';

async function main(): Promise<void> {
  const f = flags(
    'stack-server',
    process.argv.slice(2),
    ['tun', 'addr', 'host-addr', 'mtu', 'services', 'control', 'profile', 'offloads', 'gro', 'tx-thread', 'queues', 'cc', 'shard-steer'],
    ['shards', 'busy-poll'],
  );
  const steer = f.get('shard-steer') ?? 'client';
  if (steer !== 'client' && steer !== 'kernel') throw new Error(`stack-server: --shard-steer must be client or kernel, got "${steer}"`);
  const tun = f.get('tun') ?? 'fsbench0';
  const addr = parseCidr(f.get('addr') ?? '198.18.0.2/24')!;
  const hostAddr = parseCidr(f.get('host-addr') ?? '198.18.0.1/24')!;
  const services = (f.get('services') ?? 'echo,discard,http,iperf3').split(',').filter(Boolean) as ServiceName[];
  const h = await startStackRuntime({
    tun,
    addr,
    hostAddr,
    hostAddrDefaulted: false,
    mtu: Number(f.get('mtu') ?? 1500),
    services,
    control: f.get('control') ?? `/run/faultstack/${tun}.sock`,
    faults: [],
    params: [],
    profile: f.get('profile'),
    offloads: (f.get('offloads') ?? 'on') !== 'off',
    ...(f.get('gro') === 'off' ? { gro: false } : {}),
    ...(f.get('tx-thread') === 'off' ? { txThread: false } : {}),
    queues: Number(f.get('queues') ?? 1),
    shards: f.get('shards') === 'true',
    ...(f.get('shards') === 'true' ? { shardSteer: steer } : {}),
    ...(f.get('busy-poll') === 'true' ? { busyPoll: true } : {}),
    cc: (f.get('cc') ?? 'cubic') as 'cubic' | 'newreno',
    json: true,
  });
  const { runtime: rt, api } = h;
  if (!rt || !api) {
    // Shard mode: the stacks live in worker threads; this tool only starts and stops them.
    say({
      ready: true,
      line: h.readyLine,
      offloads: /offloads ([a-z0-9,]+)/.exec(h.readyLine)?.[1]?.split(',') ?? [],
      queues: Number(f.get('queues') ?? 1),
      pid: process.pid,
    });
    serveCommands(
      async (cmd) => {
        if (cmd.cmd === 'quit') {
          setImmediate(() => {
            void h.shutdown().then(() => process.exit(0));
          });
          return { quitting: true };
        }
        throw new Error(`${String(cmd.cmd)}: not available in shard mode`);
      },
      () => h.shutdown(),
    );
    return;
  }
  say({ ready: true, line: h.readyLine, offloads: rt.tun.offloads.names, queues: rt.tun.queueCount, pid: process.pid });
  serveCommands(
    async (cmd) => {
      switch (cmd.cmd) {
        case 'mem': {
          const m = memoryAfterGc();
          return { ...m, connections: rt.stack.tcp.table.size, established: rt.stack.counters.TcpCurrEstab };
        }
        case 'stats': {
          const listeners = { droppedSyns: 0, refusedSyns: 0, droppedAcks: 0, synQueue: 0 };
          for (const l of rt.stack.tcp.listeners.values()) {
            listeners.droppedSyns += l.droppedSyns;
            listeners.refusedSyns += l.refusedSyns;
            listeners.droppedAcks += l.droppedAcks;
            listeners.synQueue += l.synQueue.size;
          }
          return { counters: { ...rt.stack.counters }, device: rt.device.stats(), listeners, timeWait: rt.stack.tcp.timeWaitCount };
        }
        case 'iperf3': {
          const r = await runIperf3Client(api, {
            host: String(cmd.host),
            port: Number(cmd.port ?? 5201),
            durationSec: Number(cmd.durationSec ?? 2),
            parallel: Number(cmd.parallel ?? 1),
            reverse: cmd.reverse === true,
            graceMs: 20_000,
          });
          return {
            bitsPerSecond: r.bitsPerSecond,
            receiverBitsPerSecond: r.receiverBitsPerSecond,
            seconds: r.seconds,
            sentBytes: r.sentBytes,
            receivedBytes: r.receivedBytes,
          };
        }
        case 'quit':
          setImmediate(() => {
            void h.shutdown().then(() => process.exit(0));
          });
          return { quitting: true };
        default:
          throw new Error(`unknown command ${String(cmd.cmd)}`);
      }
    },
    () => h.shutdown(),
  );
}

main().catch((e: Error) => {
  say({ error: e.message });
  process.exit(1);
});
