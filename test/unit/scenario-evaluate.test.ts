/**
 * The verdicts of a scenario's expectations (lab/scenario/evaluate.ts) from given
 * measurements: counter deltas over the part and over one step, a counter the stack does
 * not have (fails, so a misspelt name cannot pass a max), stats paths, event counts, step
 * values and a failed step, throughput ratios, and when: skipping. No lab, no clock.
 */
import { describe, expect, it } from 'vitest';
import { evaluate, type Measurements, type StepResult } from '../../lab/scenario/evaluate';
import { parseScenario } from '../../lab/scenario/format';

const FILE = `
stack: { faults: { kb898060: buggy } }
steps:
  - { name: base, iperf3: {} }
  - { name: lossy, iperf3: {} }
  - { name: p, ping: {} }
  - { name: broken, curl: {} }
expect:
  - { counter: TcpRetransSegs, min: 5 }
  - { counter: TcpRetransSegs, during: lossy, max: 3 }
  - { counter: TcpRetransSgs, max: 0 }
  - { stat: leak.connections, equals: 0 }
  - { stat: leak.nothere, equals: 0 }
  - { event: icmp-ignored-at-limit, min: 2 }
  - { event: hostroute-limit-reached, max: 0 }
  - { step: p, value: received, equals: 5 }
  - { step: p }
  - { step: broken, value: httpCode, equals: 200 }
  - { throughput: lossy, baseline: base, max: 0.5 }
  - { throughput: broken, baseline: base, min: 0.1 }
  - { step: p, value: received, equals: 0, when: { kb898060: hotfixed } }
  - { step: p, value: avgMs, min: 0.1, max: 2 }
`;

const step = (name: string, kind: string, values: StepResult['values'], ok = true, error?: string): StepResult => ({
  name,
  kind,
  startMs: 0,
  endMs: 1,
  ok,
  values,
  figure: '',
  ...(error ? { error } : {}),
});

function measured(): Measurements {
  return {
    startCounters: { TcpRetransSegs: 10 },
    endCounters: { TcpRetransSegs: 17 },
    during: new Map([['lossy', { before: { TcpRetransSegs: 11 }, after: { TcpRetransSegs: 15 } }]]),
    stats: { leak: { connections: 0 } },
    events: [{ kind: 'icmp-ignored-at-limit' }, { kind: 'icmp-ignored-at-limit' }, { kind: 'other' }],
    steps: [
      step('base', 'iperf3', { bitsPerSecond: 1e9 }),
      step('lossy', 'iperf3', { bitsPerSecond: 2e8 }),
      step('p', 'ping', { sent: 5, received: 4, avgMs: 1.5 }, false),
      step('broken', 'curl', {}, false, 'curl is not installed'),
    ],
  };
}

describe('scenario expectations: verdicts from measurements', () => {
  const part = parseScenario(FILE, 'e.yaml').parts[0]!;
  const r = evaluate(part, measured());

  it('one verdict per expectation, in file order', () => {
    expect(r.map((x) => [x.text, x.result, x.actual])).toEqual([
      ['counter TcpRetransSegs', 'pass', 7],
      ['counter TcpRetransSegs', 'FAIL', 4],
      ['counter TcpRetransSgs', 'FAIL', null],
      ['stat leak.connections', 'pass', 0],
      ['stat leak.nothere', 'FAIL', null],
      ['event icmp-ignored-at-limit', 'pass', 2],
      ['event hostroute-limit-reached', 'pass', 0],
      ['step p received', 'FAIL', 4],
      ['step p ok', 'FAIL', false],
      ['step broken httpCode', 'FAIL', null],
      ['throughput lossy / base', 'pass', 0.2],
      ['throughput broken / base', 'FAIL', null],
      ['step p received', 'skipped', null],
      ['step p avgMs', 'pass', 1.5],
    ]);
  });

  it('says why a value is missing', () => {
    expect(r[2]!.note).toBe('the stack has no counter TcpRetransSgs (faultstack stats --json lists them)');
    expect(r[4]!.note).toBe('faultstack stats --json has no leak.nothere');
    expect(r[9]!.note).toBe('the step failed: curl is not installed');
    expect(r[10]!.note).toBe('200.0 Mbit/s / 1000.0 Mbit/s');
    expect(r[11]!.note).toBe('no throughput measured (curl is not installed)');
    expect(r[12]!.note).toBe('when kb898060=hotfixed');
    expect(r.map((x) => x.expected).slice(0, 3)).toEqual(['>= 5', '<= 3', '<= 0']);
  });

  it('counters that could not be read around a step fail its during', () => {
    const m = measured();
    m.during.set('lossy', {});
    expect(evaluate(part, m)[1]).toMatchObject({ result: 'FAIL', actual: null, note: 'counters could not be read' });
  });

  it('equals compares a string result, a number and a boolean exactly', () => {
    const p = parseScenario(
      'steps:\n  - { name: c, connect: { to: 198.18.0.99:80 } }\nexpect:\n  - { step: c, value: outcome, equals: timeout }\n  - { step: c, equals: false }\n',
      'c.yaml',
    ).parts[0]!;
    const got = (outcome: string, ok: boolean) => evaluate(p, { ...measured(), steps: [step('c', 'connect', { outcome }, ok)] }).map((x) => x.result);
    expect(got('timeout', false)).toEqual(['pass', 'pass']);
    expect(got('no-outcome', true)).toEqual(['FAIL', 'FAIL']);
  });
});
