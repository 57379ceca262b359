/**
 * The layer rules of faultstack (docs/design.md, "The layer rules"), checked by
 * dependency-cruiser on every `make test` (`make lint-deps`, which CI runs through
 * .ci/run). Type-only imports count here: a layer that names another's types depends on
 * it. What a process loads at run time (type-only imports erased) has its own rules in
 * .dependency-cruiser-loads.cjs.
 *
 *   stack/wire       packet formats: nothing but wire/ and util/
 *   stack core       stack.ts, counters, timers, iface/, tcp/, udp/: never a fault, a
 *                    service, the runtime, the control plane, the CLI, the lab or the tests
 *   stack/services   applications: the socket interface (api/net-api.ts), util/, wire/
 *   drivers/         devices: from stack/ at most wire/ and util/
 *   product code     stack/, drivers/, bin/, bench/ (and lab/) never import test/; only
 *                    bench/, bin/demo.ts and `faultstack lab` use the lab (lab/)
 *   everything       no import cycles
 *
 * The rules say where the code is going. `knownViolations` (at the end, temporary) lists
 * what breaks them today only because work on other branches is not merged yet.
 */

/** The core's folders and files (a path regex). */
const CORE = '^stack/(stack|counters|timers)\\.ts$|^stack/(iface|tcp|udp)/';
const NPM = ['npm', 'npm-dev', 'npm-optional', 'npm-peer', 'npm-bundled', 'npm-no-pkg'];

const rules = [
  {
    name: 'no-circular',
    severity: 'error',
    comment: 'Dependencies point one way; a cycle means two modules are one module in two files. The files of stack/tcp/ are one protocol split by concern (connection, send, receive, recovery, handshake, listener): they may name each other\'s types, so a cycle that stays inside that folder is allowed here; .dependency-cruiser-loads.cjs still forbids any cycle of run-time imports, there too.',
    from: {},
    to: { circular: true, via: { pathNot: '^stack/tcp/' } },
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
    to: { dependencyTypesNot: ['core', ...NPM], pathNot: '^stack/services/|^stack/api/net-api\\.ts$|^stack/(util|wire)/' },
  },
  {
    name: 'drivers-are-devices',
    severity: 'error',
    comment: 'drivers/ holds devices (the Device contract and what implements it); from stack/ they may use wire/ and util/ only.',
    from: { path: '^drivers/' },
    to: { path: '^stack/', pathNot: '^stack/(wire|util)/' },
  },
  {
    name: 'drivers-stand-alone',
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
    comment: 'The lab (namespaces, routers, clients, traffic generators) serves the tests, the demo (bin/demo.ts), `faultstack lab` (bin/cli/commands/lab.ts, the front of the lab) and the benchmarks (bench/); the product never uses it.',
    from: { path: '^(stack|drivers|bin)/', pathNot: '^bin/(demo|cli/commands/lab)\\.ts$' },
    to: { path: '^lab/' },
  },
];

// ------------------------------------------------------------------------------------------
// knownViolations: TEMPORARY. Each entry exempts the imports from the files `from` to the
// files `to` from one rule, because another branch of issue 9 that removes them has not
// been merged yet. While an entry is still needed, every run prints it as
// `info known-violation/<rule>`; an entry that prints nothing is stale: delete it. Once the
// branch named in `pending` is merged, delete its entries (and this section when it is
// empty): the rule then holds there too.
// ------------------------------------------------------------------------------------------
/** Exemptions from the rules while other work is unmerged: none today (see withKnownViolations). */
const knownViolations = [];

/** Each rule with its known violations taken out, and one `info` rule per entry that reports them. */
function withKnownViolations(all, known) {
  const exact = (p) => `^${p.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`;
  const list = (x) => (x === undefined ? [] : Array.isArray(x) ? x : [x]);
  const out = [];
  for (const rule of all) {
    const mine = known.filter((k) => k.rule === rule.name);
    if (mine.length === 0) { out.push(rule); continue; }
    // The rule as it is, for every file without a known violation ...
    out.push({ ...rule, from: { ...rule.from, pathNot: [...list(rule.from.pathNot), ...mine.flatMap((k) => k.from.map(exact))] } });
    const { pathNot, ...to } = rule.to;
    for (const k of mine) {
      // ... for the files of an entry, the rule for every other import ...
      out.push({ ...rule, from: { ...rule.from, path: k.from.map(exact) }, to: { ...rule.to, pathNot: [...list(pathNot), ...k.to.map(exact)] } });
      // ... and the known imports themselves, reported but not failing.
      out.push({
        name: `known-violation/${rule.name}`, severity: 'info',
        comment: `temporary (knownViolations in .dependency-cruiser.cjs), pending ${k.pending}`,
        from: { path: k.from.map(exact) }, to: { ...to, path: k.to.map(exact) },
      });
    }
  }
  return out;
}

/** @type {import('dependency-cruiser').IConfiguration} */
module.exports = {
  forbidden: withKnownViolations(rules, knownViolations),
  options: {
    doNotFollow: { path: 'node_modules' },
    exclude: { path: '^(dist|node_modules)/|(^|/)build/' },
    // Type-only imports are dependencies too (a type names the layer it comes from); they
    // are marked 'type-only'.
    tsPreCompilationDeps: 'specify',
    tsConfig: { fileName: 'tsconfig.json' },
    // require() inside a function (a module loaded on use) is a dependency like any other.
    reporterOptions: { text: { highlightFocused: true } },
  },
};
