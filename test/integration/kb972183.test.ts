/**
 * KB 972183 with real strongSwan clients (charon + kernel-libipsec) moving between two
 * client networks behind Linux routers, against an NLB cluster of two faultstack hosts
 * running the sticky application (lab/nlb-lab.ts builds it all):
 *   buggy: after the move each client's old tunnel stays on its old host, its logon with
 *     it, and the new host refuses the client ("logged on at host N") until the old
 *     host's dead-peer detection gives up on the tunnel;
 *   hotfixed: the old host destroys the old tunnel's state when the new one opens: no
 *     refusal, every client on one host at once;
 *   the article's workarounds, in buggy mode: an IPsec exception for the application,
 *     and no IPsec: no refusal.
 * One lab (namespaces, routers, directory) serves the four runs; each run starts fresh
 * hosts and clients.
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { NlbLab, type ScenarioResult } from '../../lab/nlb-lab';

let lab: NlbLab;
const results: ScenarioResult[] = [];
// Dead-peer detection after 4 s of silence, then 2 unanswered checks: an abandoned tunnel lives about 5.5 s.
const DPD = '4s';

beforeAll(async () => {
  lab = await NlbLab.create({ hosts: 2, clients: 3, tag: 'kbn' });
}, 60_000);

afterAll(async () => {
  await lab?.cleanup();
  for (const r of results)
    console.log(`${r.label}: served ${r.served}/${r.clients}, on >1 host ${r.spanning}, refusals ${r.refusals}, one host after ${r.timeToOneHostMs} ms`);
});

describe('KB 972183: strongSwan clients that move to another network', () => {
  test('faultstack lab nlb and faultstack nlb refuse bad input in one line, exit 2', async () => {
    const cli = (...a: string[]) => lab.lab.cli(null, ['lab', 'nlb', ...a], { timeoutMs: 20_000 });
    const bad = await cli('--fault', 'kb972183=off');
    expect(bad.code).toBe(2);
    expect(bad.stderr.trim()).toBe('faultstack lab nlb: --fault must be kb972183=buggy or kb972183=hotfixed, got "kb972183=off"');
    const many = await cli('--hosts', '9');
    expect(many.code).toBe(2);
    expect(many.stderr).toMatch(/^faultstack lab nlb: --hosts must be an integer from 1 to 8/);
    const sub = await lab.lab.cli(null, ['nlb', 'drain'], { timeoutMs: 20_000 });
    expect(sub.code).toBe(2);
    expect(sub.stderr.trim()).toBe('faultstack nlb: unknown subcommand "drain"; valid: query, display, params, drainstop, stop, start');
  });

  test('buggy: the old host keeps the old tunnel and the logon; the new host refuses the client until the old tunnel dies', async () => {
    const r = await lab.runScenario({ fault: 'buggy', variant: 'ipsec', moves: 1, dpd: DPD, watchMs: 15_000 });
    results.push(r);
    expect(r.served).toBe(3);
    expect(r.spanning).toBe(3);
    for (const c of r.reports) {
      expect(c.hostA).not.toBe(c.hostB);
      expect(c.refusals, c.identity).toBeGreaterThan(0);
      const refusal = c.events.find((e) => e.state === 'refused')!;
      expect(refusal.reason).toBe(
        `${c.identity} is logged on at host ${c.hostA} (198.18.70.${10 + c.hostA}, through an IPsec tunnel): this application serves a client from one host`,
      );
      // Trying, refused, trying... then connected to the new host once the old tunnel is gone.
      const last = c.events[c.events.length - 1]!;
      expect(last).toMatchObject({ state: 'connected', host: c.hostB, via: 'ipsec' });
      expect(c.oneHostMs[0]).not.toBeNull();
      expect(c.oneHostMs[0]!).toBeGreaterThan(2000);
    }
    // The hosts say why: the old host kept the tunnel, and dead-peer detection ended it.
    const kept = r.hostEvents.flat().filter((e) => e.kind === 'nlb-tunnel-state-kept');
    expect(kept).toHaveLength(3);
    expect(kept[0]!.message).toMatch(/the hotfix is not installed, so the client now has state on more than one host/);
    expect(
      r.hostEvents.flat().filter((e) => e.kind === 'ipsec-ike-sa-down' && /peer did not answer liveness check/.test(e.message)).length,
    ).toBeGreaterThanOrEqual(3);
    expect(r.hostEvents.flat().some((e) => e.kind === 'nlb-tunnel-state-dropped')).toBe(false);
  }, 120_000);

  test("hotfixed: the old host destroys the old tunnel's state when the new one opens; no refusal, one host at once", async () => {
    const r = await lab.runScenario({ fault: 'hotfixed', variant: 'ipsec', moves: 1, dpd: DPD, watchMs: 15_000 });
    results.push(r);
    expect(r.served).toBe(3);
    expect(r.refusals).toBe(0);
    expect(r.timeToOneHostMs).not.toBeNull();
    expect(r.timeToOneHostMs!).toBeLessThan(1500);
    for (const c of r.reports) expect(c.events[c.events.length - 1]).toMatchObject({ state: 'connected', host: c.hostB, via: 'ipsec' });
    const dropped = r.hostEvents.flat().filter((e) => e.kind === 'nlb-tunnel-state-dropped');
    expect(dropped).toHaveLength(3);
    expect(dropped[0]!.message).toMatch(
      /opened a new tunnel for client\d@lab from 198\.18\.61\.\d+ \(bucket \d+\), a bucket this host does not own: DropStateIfNotBucketOwner/,
    );
  }, 120_000);

  test('workaround: an IPsec exception for the application (buggy NLB): no refusal; the application is in the clear, on one host', async () => {
    const r = await lab.runScenario({ fault: 'buggy', variant: 'ipsec-exception', moves: 1, dpd: DPD, watchMs: 15_000 });
    results.push(r);
    expect(r.served).toBe(3);
    expect(r.refusals).toBe(0);
    for (const c of r.reports) {
      const connected = c.events.filter((e) => e.state === 'connected');
      expect(connected.every((e) => e.via === 'login')).toBe(true);
      expect(connected[connected.length - 1]!.host).toBe(c.hostB);
    }
    // NLB itself still keeps the old tunnels (buggy): the exception only keeps the application out of them.
    expect(r.hostEvents.flat().filter((e) => e.kind === 'nlb-tunnel-state-kept')).toHaveLength(3);
  }, 120_000);

  test('workaround: no IPsec: no refusal, every client on its new host at once', async () => {
    const r = await lab.runScenario({ fault: 'buggy', variant: 'no-ipsec', moves: 1, dpd: DPD, watchMs: 15_000 });
    results.push(r);
    expect(r.served).toBe(3);
    expect(r.refusals).toBe(0);
    expect(r.spanning).toBe(0);
    for (const c of r.reports) expect(c.events[c.events.length - 1]).toMatchObject({ state: 'connected', host: c.hostB, via: 'login' });
  }, 120_000);
});
