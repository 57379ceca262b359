/**
 * Queue steering for a multi-queue TUN device (`--shards`): an eBPF program, attached with
 * TUNSETSTEERINGEBPF, that picks the queue of every packet the kernel sends us. Without one
 * the kernel picks by its flow hash, and a flow stays on one queue; but several connections
 * of one client (iperf3's control and data connections), the ICMP errors a router sends
 * about a flow (fragmentation needed: PMTU discovery) and the replies to our own active
 * opens each hash differently and land on other shards than the state they need.
 *
 * `client` steering keeps everything of one peer address on one queue:
 *   - an ICMP destination unreachable, time exceeded or parameter problem goes by the
 *     destination of the packet it quotes (our packet's peer: the flow it is about);
 *   - every other packet goes by its source address;
 *   - the queue is clientQueue(address, queues), the same function here in TypeScript, so
 *     the control plane opens a connection to a peer from the shard its replies reach.
 *
 * The program (a socket filter: the kernel runs it on the packet from its IP header, with
 * LD_ABS/LD_IND loads that return fields in host order and end the program with 0 when
 * they fall outside the packet, so a runt goes to queue 0):
 *
 *      r6 = r1                     ctx, as LD_ABS/LD_IND want it
 *      r0 = u8 [9]                 protocol
 *      if r0 != 1 goto addr        not ICMP
 *      r0 = u8 [0]; r0 &= 15; r0 <<= 2; r7 = r0      header length
 *      r0 = u8 [r7 + 0]            ICMP type
 *      if r0 == 3 or 11 or 12 goto quoted; goto addr
 *   quoted: r0 = u32 [r7 + 24]     the quoted header's destination (8 + 16)
 *      goto hash
 *   addr: r0 = u32 [12]            source address
 *   hash: r0 *= 0x9e3779b1; r1 = r0 >> 16; r0 ^= r1; r0 %= queues; exit   (32-bit ALU)
 *
 * The instruction encoding is the kernel's struct bpf_insn (include/uapi/linux/bpf.h):
 * opcode, dst and src register nibbles, a 16-bit offset, a 32-bit immediate, little-endian.
 */

/** Steering policies: the kernel's own flow hash, or ours by peer address. */
export const STEERINGS = ['client', 'kernel'] as const;
export type Steering = (typeof STEERINGS)[number];

/** Fibonacci hashing's multiplier (2^32 / golden ratio), mixed down once. */
const MIX = 0x9e3779b1;

/** The queue `client` steering gives a peer address (host order), as the program computes it. */
export function clientQueue(addr: number, queues: number): number {
  let h = Math.imul(addr | 0, MIX) >>> 0;
  h = (h ^ (h >>> 16)) >>> 0;
  return h % queues;
}

// Opcode parts (uapi/linux/bpf_common.h, bpf.h).
const LD = 0x00,
  ALU = 0x04,
  JMP = 0x05,
  ALU64 = 0x07;
const W = 0x00,
  B = 0x10;
const ABS = 0x20,
  IND = 0x40;
const K = 0x00,
  X = 0x08;
const MUL = 0x20,
  AND = 0x50,
  LSH = 0x60,
  RSH = 0x70,
  MOD = 0x90,
  XOR = 0xa0,
  MOV = 0xb0;
const JA = 0x00,
  JEQ = 0x10,
  JNE = 0x50,
  EXIT = 0x90;

/** One instruction; `off` is a jump's distance in instructions after the next one. */
interface Insn {
  code: number;
  dst: number;
  src: number;
  off: number;
  imm: number;
}

const insn = (code: number, dst = 0, src = 0, off = 0, imm = 0): Insn => ({ code, dst, src, off, imm });

/** Encodes instructions as struct bpf_insn[]. */
export function encodeBpf(prog: readonly Insn[]): Buffer {
  const b = Buffer.alloc(prog.length * 8);
  prog.forEach((x, i) => {
    b[i * 8] = x.code;
    b[i * 8 + 1] = (x.dst & 15) | ((x.src & 15) << 4);
    b.writeInt16LE(x.off, i * 8 + 2);
    b.writeInt32LE(x.imm | 0, i * 8 + 4);
  });
  return b;
}

/** The `client` steering program for `queues` queues (see the top of this file). */
export function clientSteeringProgram(queues: number): Buffer {
  if (!Number.isInteger(queues) || queues < 1 || queues > 256) throw new RangeError(`queues must be 1..256, got ${queues}`);
  // Labels by index: quoted = 12, addr = 14, hash = 15.
  const at = (target: number, pc: number) => target - (pc + 1);
  const prog: Insn[] = [
    /* 0 */ insn(ALU64 | MOV | X, 6, 1),
    /* 1 */ insn(LD | B | ABS, 0, 0, 0, 9),
    /* 2 */ insn(JMP | JNE | K, 0, 0, at(14, 2), 1),
    /* 3 */ insn(LD | B | ABS, 0, 0, 0, 0),
    /* 4 */ insn(ALU | AND | K, 0, 0, 0, 15),
    /* 5 */ insn(ALU | LSH | K, 0, 0, 0, 2),
    /* 6 */ insn(ALU64 | MOV | X, 7, 0),
    /* 7 */ insn(LD | B | IND, 0, 7, 0, 0),
    /* 8 */ insn(JMP | JEQ | K, 0, 0, at(12, 8), 3),
    /* 9 */ insn(JMP | JEQ | K, 0, 0, at(12, 9), 11),
    /* 10 */ insn(JMP | JEQ | K, 0, 0, at(12, 10), 12),
    /* 11 */ insn(JMP | JA, 0, 0, at(14, 11)),
    /* 12 */ insn(LD | W | IND, 0, 7, 0, 24),
    /* 13 */ insn(JMP | JA, 0, 0, at(15, 13)),
    /* 14 */ insn(LD | W | ABS, 0, 0, 0, 12),
    /* 15 */ insn(ALU | MUL | K, 0, 0, 0, MIX),
    /* 16 */ insn(ALU | MOV | X, 1, 0),
    /* 17 */ insn(ALU | RSH | K, 1, 0, 0, 16),
    /* 18 */ insn(ALU | XOR | X, 0, 1),
    /* 19 */ insn(ALU | MOD | K, 0, 0, 0, queues),
    /* 20 */ insn(JMP | EXIT),
  ];
  return encodeBpf(prog);
}
