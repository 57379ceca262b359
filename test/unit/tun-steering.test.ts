/**
 * The queue-steering program's encoding (drivers/tun/steering.ts) against struct bpf_insn
 * as include/uapi/linux/bpf.h lays it out, and clientQueue(): the same address always on
 * the same queue, addresses spread over the queues. Whether the kernel runs the program as
 * intended is the integration test's (test/integration/shards.test.ts, real TUN queues).
 */
import { describe, expect, test } from 'vitest';
import { clientQueue, clientSteeringProgram } from '../../drivers/tun/steering';

const insns = (b: Buffer) => Array.from({ length: b.length / 8 }, (_, i) => b.subarray(i * 8, i * 8 + 8).toString('hex'));

describe('client steering program', () => {
  test('encodes as struct bpf_insn: opcode, dst|src<<4, off (LE 16), imm (LE 32)', () => {
    const p = insns(clientSteeringProgram(2));
    expect(p).toHaveLength(21);
    expect(p[0]).toBe('bf16000000000000'); // r6 = r1 (BPF_ALU64|BPF_MOV|BPF_X)
    expect(p[1]).toBe('3000000009000000'); // r0 = u8 skb[9] (BPF_LD|BPF_B|BPF_ABS)
    expect(p[2]).toBe('55000b0001000000'); // if r0 != 1 goto +11 (to 14)
    expect(p[7]).toBe('5070000000000000'); // r0 = u8 skb[r7 + 0] (BPF_LD|BPF_B|BPF_IND, src r7)
    expect(p[12]).toBe('4070000018000000'); // r0 = u32 skb[r7 + 24]
    expect(p[14]).toBe('200000000c000000'); // r0 = u32 skb[12]
    expect(p[15]).toBe('24000000b179379e'); // r0 *= 0x9e3779b1 (32-bit)
    expect(p[19]).toBe('9400000002000000'); // r0 %= 2
    expect(p[20]).toBe('9500000000000000'); // exit
    expect(insns(clientSteeringProgram(8))[19]).toBe('9400000008000000');
  });

  test('jumps land on the labels: ICMP errors on the quoted destination, everything else on the source', () => {
    const p = clientSteeringProgram(2);
    const off = (i: number) => p.readInt16LE(i * 8 + 2);
    for (const i of [8, 9, 10]) expect(i + 1 + off(i)).toBe(12); // types 3, 11, 12
    expect(11 + 1 + off(11)).toBe(14);
    expect(13 + 1 + off(13)).toBe(15);
    expect([8, 9, 10].map((i) => p.readInt32LE(i * 8 + 4))).toEqual([3, 11, 12]);
  });

  test('refuses a queue count the device cannot have', () => {
    for (const n of [0, 257, 1.5]) expect(() => clientSteeringProgram(n)).toThrow(/queues must be 1\.\.256/);
  });

  test('clientQueue: stable per address, every queue used, roughly even over a /16', () => {
    for (const q of [2, 3, 4, 8]) {
      const counts = new Array<number>(q).fill(0);
      for (let a = 0; a < 65536; a++) {
        const addr = (0xc6120000 + a) >>> 0; // 198.18.0.0/16
        const k = clientQueue(addr, q);
        expect(k).toBe(clientQueue(addr, q));
        counts[k]!++;
      }
      for (const c of counts) expect(Math.abs(c - 65536 / q)).toBeLessThan(65536 / q / 10);
    }
  });
});
