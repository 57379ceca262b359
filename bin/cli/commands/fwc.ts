/**
 * `faultstack fwc`: the Firewall Client from a shell on the internal network
 * (stack/firewall/client.ts over the control channel, TCP 1745; docs/fwc.md).
 *
 *   faultstack fwc hello   --firewall IP                      a session: the firewall's external address
 *   faultstack fwc connect --firewall IP HOST:PORT            like nc: stdin to the connection the firewall makes, its data to stdout
 *   faultstack fwc udp     --firewall IP [--bind PORT] [--send HOST:PORT --data TEXT] [--count N] [--wait SEC]
 *                                                            bind a port on the external address, send, print what arrives
 *   faultstack fwc raw     --firewall IP HEX                 send raw bytes on the control channel, print the replies
 */
import * as net from 'node:net';
import { FirewallClient, FwcRefusedError } from '../../../stack/firewall/client';
import { formatIpv4 } from '../../../stack/wire/addr';
import { FWC_ERROR_TEXT, FWC_PORT, nextFwc } from '../../../stack/wire/fwc';
import {
  InvalidValue,
  decimal,
  defineCommand,
  integer,
  parseArgs,
  printHelp,
  requiredFlag,
  switchFlag,
  text,
  usageError,
  valueFlag,
  type Validator,
} from '../args';
import { hostAddress } from '../value-flags';
import { subcommand } from '../subcommand';

const SUBS = ['hello', 'connect', 'udp', 'raw'] as const;

const endpoint: Validator<{ host: string; port: number }> = {
  valid: 'HOST:PORT with an IPv4 address, e.g. 198.19.0.2:1755',
  parse(raw) {
    const m = /^(\d{1,3}(?:\.\d{1,3}){3}):(\d{1,5})$/.exec(raw.trim());
    const port = m ? Number(m[2]) : NaN;
    if (!m || port < 1 || port > 65535) throw new InvalidValue(`must be ${endpoint.valid}`);
    hostAddress.parse(m[1]!);
    return { host: m[1]!, port };
  },
};

const common = {
  firewall: requiredFlag(valueFlag({ valueName: 'IP', help: "the firewall's internal address", ...hostAddress })),
  port: valueFlag({ valueName: 'N', help: 'the control channel port', ...integer(1, 65535), default: FWC_PORT }),
  json: switchFlag('print results as JSON lines'),
};

const SPECS = {
  hello: defineCommand({ name: 'fwc hello', summary: 'Open a Firewall Client session and show what the firewall answers.', flags: { ...common } }),
  connect: defineCommand({
    name: 'fwc connect',
    summary: 'Connect to HOST:PORT through the Firewall Client; stdin goes there, what comes back to stdout.',
    args: 'HOST:PORT',
    minArgs: 1,
    maxArgs: 1,
    flags: { ...common },
  }),
  udp: defineCommand({
    name: 'fwc udp',
    summary: "Bind a UDP port on the firewall's external address; send and print datagrams through it.",
    flags: {
      ...common,
      bind: valueFlag({ valueName: 'PORT', help: 'the port to bind (0: any)', ...integer(0, 65535), default: 0 }),
      send: valueFlag({ valueName: 'HOST:PORT', help: 'send --data there once bound', ...endpoint }),
      data: valueFlag({ valueName: 'TEXT', help: 'what --send sends', ...text('any text') }),
      count: valueFlag({ valueName: 'N', help: 'stop after N datagrams', ...integer(1, 1_000_000) }),
      wait: valueFlag({ valueName: 'SEC', help: 'stop after SEC seconds', ...decimal(0.1, 3600, 's'), default: 5 }),
    },
  }),
  raw: defineCommand({
    name: 'fwc raw',
    summary: 'Send raw bytes (hex) on the control channel and print each reply decoded.',
    args: 'HEX',
    minArgs: 1,
    maxArgs: 1,
    flags: { ...common, wait: valueFlag({ valueName: 'SEC', help: 'how long to wait for replies', ...decimal(0.1, 60, 's'), default: 1 }) },
  }),
};

function refusal(e: unknown): never {
  if (e instanceof FwcRefusedError) throw Object.assign(new Error(`faultstack fwc: refused by the firewall: ${e.message}`), { code: e.code });
  throw e;
}

async function open(f: { firewall: number; port: number }): Promise<FirewallClient> {
  try {
    return await FirewallClient.open({ firewall: formatIpv4(f.firewall), port: f.port, application: 'faultstack-fwc' });
  } catch (e) {
    if (e instanceof FwcRefusedError) refusal(e);
    throw new Error(`faultstack fwc: cannot reach the Firewall Client service at ${formatIpv4(f.firewall)}:${f.port}: ${(e as Error).message}`, { cause: e });
  }
}

export async function run(argv: string[]): Promise<number> {
  const rest = subcommand('fwc', argv, SUBS, SPECS.hello);
  if (rest === null) {
    for (const s of SUBS) printHelp(SPECS[s]);
    return 0;
  }
  const sub = argv[0] as (typeof SUBS)[number];
  if (sub === 'hello') {
    const p = parseArgs(SPECS.hello, rest);
    if (p.help) return printHelp(SPECS.hello);
    const c = await open(p.flags);
    const r = { session: c.serverId, externalAddress: c.externalAddress };
    process.stdout.write(
      p.flags.json ? `${JSON.stringify(r)}\n` : `Firewall Client session ${r.session}; the firewall's external address is ${r.externalAddress}\n`,
    );
    await c.close();
    return 0;
  }
  if (sub === 'connect') {
    const p = parseArgs(SPECS.connect, rest);
    if (p.help) return printHelp(SPECS.connect);
    const dst = endpoint.parse(p.args[0]!);
    const c = await open(p.flags);
    const s = await c.connect(dst.host, dst.port).catch(refusal);
    await new Promise<void>((resolve) => {
      process.stdin.pipe(s);
      s.pipe(process.stdout);
      s.on('close', () => resolve());
      s.on('error', () => resolve());
    });
    process.stdin.unpipe(s);
    process.stdin.pause();
    await c.close();
    return 0;
  }
  if (sub === 'udp') {
    const p = parseArgs(SPECS.udp, rest);
    if (p.help) return printHelp(SPECS.udp);
    const f = p.flags;
    if ((f.data === undefined) !== (f.send === undefined)) throw usageError(SPECS.udp, '--send HOST:PORT and --data TEXT go together');
    const c = await open(f);
    const u = await c.bindUdp(f.bind).catch(refusal);
    const a = u.address();
    process.stdout.write(
      f.json
        ? `${JSON.stringify({ bound: `${a.address}:${a.port}`, bindId: u.bindId, localPort: u.localPort })}\n`
        : `bound ${a.address}:${a.port} (binding ${u.bindId}, local port ${u.localPort})\n`,
    );
    let n = 0;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, f.wait * 1000);
      u.on('message', (d: Buffer, r: { address: string; port: number }) => {
        n++;
        const printable = /^[\x20-\x7e]*$/.test(d.toString('latin1'));
        process.stdout.write(
          f.json
            ? `${JSON.stringify({ from: `${r.address}:${r.port}`, bytes: d.length, data: printable ? d.toString('latin1') : d.toString('hex') })}\n`
            : `${r.address}:${r.port} ${d.length} bytes: ${printable ? d.toString('latin1') : d.toString('hex')}\n`,
        );
        if (f.count !== undefined && n >= f.count) {
          clearTimeout(timer);
          resolve();
        }
      });
      if (f.send && f.data !== undefined) u.send(Buffer.from(f.data), f.send.port, f.send.host);
    });
    await new Promise<void>((r) => u.close(() => r()));
    await c.close();
    return 0;
  }
  const p = parseArgs(SPECS.raw, rest);
  if (p.help) return printHelp(SPECS.raw);
  const hex = p.args[0]!.replace(/\s+/g, '');
  if (!/^([0-9a-fA-F]{2})+$/.test(hex)) throw usageError(SPECS.raw, 'HEX must be an even number of hex digits, e.g. 00000000...');
  const sock = net.connect({ host: formatIpv4(p.flags.firewall), port: p.flags.port });
  await new Promise<void>((resolve, reject) => {
    sock.once('connect', () => resolve());
    sock.once('error', (e) => reject(new Error(`faultstack fwc raw: ${e.message}`)));
  });
  let rx = Buffer.alloc(0);
  let closed = false;
  sock.on('data', (d: Buffer) => {
    rx = Buffer.concat([rx, d]);
  });
  sock.on('close', () => {
    closed = true;
  });
  sock.on('error', () => {
    closed = true;
  });
  sock.write(Buffer.from(hex, 'hex'));
  await new Promise((r) => setTimeout(r, p.flags.wait * 1000));
  let off = 0;
  while (off < rx.length) {
    const r = nextFwc(rx, off, rx.length - off);
    if (r === null) break;
    if (r.length === 0 || !r.repr) {
      process.stdout.write(`malformed reply: ${FWC_ERROR_TEXT[r.error]}\n`);
      break;
    }
    process.stdout.write(`${JSON.stringify(r.repr.message)}\n`);
    off += r.length;
  }
  process.stdout.write(
    p.flags.json ? `${JSON.stringify({ closedByFirewall: closed })}\n` : `control channel ${closed ? 'closed by the firewall' : 'still open'}\n`,
  );
  sock.destroy();
  return 0;
}
