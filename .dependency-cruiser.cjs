/**
 * The layer rules of faultstack (docs/design.md, "Layers and the rules that hold them"),
 * checked by dependency-cruiser on every `make test` (`make lint-deps`). Type-only imports
 * count: a layer that names another's types depends on it.
 *
 *   stack/wire         packet formats: nothing but wire/ and util/
 *   stack core         stack.ts, counters, timers, iface/, tcp/, udp/ (and wire/, util/):
 *                      never a fault, a service, the runtime, the control plane, the CLI,
 *                      the lab or the tests
 *   stack/services     written against the socket interface (api/net-api.ts) only
 *   drivers/           devices: from stack/ at most wire/ and util/
 *   product code       (stack/, drivers/, bin/, bench/) never imports test/; only bench/
 *                      and bin/demo.ts use the lab (lab/)
 *   everything         no import cycles
 *
 * The rules say where the code is going; `knownViolations` at the end lists, for the lead
 * to delete once the branches that remove them are merged, what breaks them today.
 */

/** The core's folders and files (a path regex). */
const CORE = '^stack/(stack|counters|timers)\\.ts$|^stack/(iface|tcp|udp)/';

/** @type {import('dependency-cruiser').IConfiguration} */
module.exports = {
  forbidden: [
    {
      name: 'no-circular',
      severity: 'error',
      comment: 'Dependencies point one way; a cycle means two modules are one module in two files.',
      from: {},
      to: { circular: true },
    },
    {
      name: 'wire-is-formats-only',
      severity: 'error',
      comment: 'stack/wire/ holds packet formats (views, representations, checksums, addresses): it imports nothing but wire/ and util/.',
      from: { path: '^stack/wire/' },
      to: { dependencyTypesNot: ['core'], pathNot: '^stack/(wire|util)/' },
    },
    {
      name: 'core-points-down',
      severity: 'error',
      comment: 'The core (IP, ICMP, TCP, UDP, interfaces) never knows a fault, a service, the runtime, the control plane, the CLI, the lab or the tests: they attach to it through hooks.',
      from: { path: CORE },
      to: { path: '^stack/(faults|services|runtime|control)/|^bin/|^lab/|^test/' },
    },
    {
      name: 'services-on-the-net-api',
      severity: 'error',
      comment: 'A service is an application: it sees the socket interface (stack/api/net-api.ts), util/ and wire/ (addresses), never the stack\'s internals.',
      from: { path: '^stack/services/' },
      to: { dependencyTypesNot: ['core', 'npm', 'npm-dev', 'npm-optional', 'npm-peer', 'npm-bundled'], pathNot: '^stack/services/|^stack/api/net-api\\.ts$|^stack/(util|wire)/' },
    },
    {
      name: 'drivers-are-devices',
      severity: 'error',
      comment: 'drivers/ holds devices (the Device contract and what implements it); from stack/ they may use wire/ and util/ only.',
      from: { path: '^drivers/' },
      to: { path: '^stack/', pathNot: '^stack/(wire|util)/' },
    },
    {
      name: 'drivers-not-lab-or-tests',
      severity: 'error',
      comment: 'A device never depends on the lab, the tests, the CLI or the benchmarks.',
      from: { path: '^drivers/' },
      to: { path: '^(lab|test|bin|bench)/' },
    },
    {
      name: 'product-never-imports-tests',
      severity: 'error',
      comment: 'Product code (stack/, drivers/, bin/, bench/) and the lab never import test/.',
      from: { path: '^(stack|drivers|bin|bench|lab)/' },
      to: { path: '^test/' },
    },
    {
      name: 'lab-only-for-demo-and-bench',
      severity: 'error',
      comment: 'The lab (namespaces, routers, clients, traffic generators) is for the tests, the demo (bin/demo.ts) and the benchmarks (bench/); the product never uses it.',
      from: { path: '^(stack|drivers|bin)/', pathNot: '^bin/demo\\.ts$' },
      to: { path: '^lab/' },
    },
    {
      name: 'shard-worker-is-one-stack',
      severity: 'error',
      comment: 'A --shards worker runs one stack (stack/runtime/shard.ts): it never loads the one-thread runtime, the sharded main thread, the control plane or server, captures, impairments, Ethernet or IPsec.',
      from: { path: '^stack/runtime/shard-worker\\.ts$' },
      to: {
        reachable: true,
        path: '^stack/runtime/(run|sharded|control|ethernet|ipsec-setup|impair-control)\\.ts$|^stack/control/server\\.ts$|^stack/(ipsec|impair)/|^drivers/(pcap|impair|tap/)',
      },
    },
    {
      name: 'cli-commands-load-lazily',
      severity: 'error',
      comment: 'bin/cli/main.ts requires each command when it runs, so `faultstack stats` never loads the stack: a static import of the runtime from the CLI would.',
      from: { path: '^bin/cli/' },
      to: { path: '^stack/runtime/(run|sharded|shard|shard-worker)\\.ts$', dependencyTypesNot: ['require'] },
    },
  ],

  options: {
    doNotFollow: { path: 'node_modules' },
    exclude: { path: '^(dist|node_modules)/|(^|/)build/' },
    // Type-only imports are dependencies too (a type names the layer it comes from).
    tsPreCompilationDeps: 'specify',
    tsConfig: { fileName: 'tsconfig.json' },
    enhancedResolveOptions: { exportsFields: ['exports'], conditionNames: ['import', 'require', 'node', 'default'], extensions: ['.ts', '.js', '.cjs', '.json'] },
    // `require('../services/index')` inside functions (loaded on use) is a dependency like any other.
    exoticRequireStrings: [],
    reporterOptions: { text: { highlightFocused: true } },
  },
};
