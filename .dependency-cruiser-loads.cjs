/**
 * What a process loads at run time: the imports left after TypeScript erased the
 * type-only ones (.dependency-cruiser.cjs checks the layers, type imports included).
 * Run by `make lint-deps` with the layer rules.
 */

/** @type {import('dependency-cruiser').IConfiguration} */
module.exports = {
  forbidden: [
    {
      name: 'no-circular-at-load',
      severity: 'error',
      comment: 'No cycle of run-time imports anywhere: with CommonJS a cycle hands one module a half-initialised other.',
      from: {},
      to: { circular: true },
    },
    {
      name: 'shard-worker-is-one-stack',
      severity: 'error',
      comment: 'A --shards worker runs one stack (stack/runtime/shard.ts): it never loads the one-thread runtime, the sharded main thread, the control plane or its server, captures, impairments, Ethernet or IPsec.',
      from: { path: '^stack/runtime/shard-worker\\.ts$' },
      to: {
        reachable: true,
        path: '^stack/runtime/(run|sharded|control|ethernet|ipsec-setup|impair-control)\\.ts$|^stack/control/server\\.ts$|^stack/(ipsec|impair)/|^drivers/(pcap|tap/)',
      },
    },
    {
      name: 'control-commands-stay-light',
      severity: 'error',
      comment: 'A control command (faultstack stats, fault, events ...) talks to a running stack over its socket: it never loads the stack. Only `run` loads the runtime, with require() when it runs (bin/cli/commands/run.ts).',
      from: { path: '^bin/cli/', pathNot: '^bin/cli/commands/run\\.ts$' },
      to: { reachable: true, path: '^stack/(stack\\.ts|tcp/|iface/|runtime/(run|sharded|shard)\\.ts)' },
    },
    {
      name: 'run-loads-the-runtime-on-use',
      severity: 'error',
      comment: '`faultstack run` requires the runtime when it starts one, so that parsing its flags (and --help) stays quick.',
      from: { path: '^bin/cli/' },
      to: { path: '^stack/runtime/(run|sharded|shard|shard-worker)\\.ts$', dependencyTypesNot: ['require'] },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    exclude: { path: '^(dist|node_modules)/|(^|/)build/' },
    tsPreCompilationDeps: false,
    tsConfig: { fileName: 'tsconfig.json' },
  },
};
