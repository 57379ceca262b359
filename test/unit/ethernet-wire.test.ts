/**
 * Ethernet II, ARP and IGMPv2 against frames captured from Linux 6.18 with
 * `tcpdump -i <veth> -xx -n -e` between two network namespaces (veth MACs set to
 * 02:00:c6:12:00:01 and 52:54:00:12:34:56; a Linux bridge with mcast_querier 1 for the
 * query). Each vector is parsed, its fields checked, and emitted again from its
 * representation: the bytes must come out the same.
 */
import { describe, expect, test } from 'vitest';
import { ARP_OP_REPLY, ARP_OP_REQUEST, ArpError, emitArp, isGratuitous, isProbe, newArpRepr, parseArp } from '../../stack/wire/arp';
import {
  BROADCAST_MAC,
  ETHERNET_HEADER_LEN,
  ETHERTYPE_ARP,
  ETHERTYPE_IPV4,
  EthernetError,
  emitEthernet,
  formatMac,
  ipv4MulticastMac,
  isLocallyAdministered,
  isMulticastMac,
  macFromIpv4,
  newEthernetRepr,
  parseEthernet,
  parseMac,
  readMac,
  writeMac,
} from '../../stack/wire/ethernet';
import {
  IGMP_LEAVE_GROUP,
  IGMP_MEMBERSHIP_QUERY,
  IGMP_V2_MEMBERSHIP_REPORT,
  IgmpError,
  buildIgmpDatagram,
  emitIgmp,
  newIgmpRepr,
  parseIgmp,
} from '../../stack/wire/igmp';
import { parseIpv4 } from '../../stack/wire/addr';
import { Ipv4Error, newIpv4Repr, parseIpv4Header } from '../../stack/wire/ipv4';

const hex = (s: string) => Buffer.from(s.replace(/\s+/g, ''), 'hex');
const ip = (s: string) => parseIpv4(s)!;
const mac = (s: string) => parseMac(s)!;

// 02:00:c6:12:00:01 > ff:ff:ff:ff:ff:ff, ARP, Request who-has 198.18.0.2 tell 198.18.0.1 (ping's resolution)
const ARP_REQUEST = hex(`ffff ffff ffff 0200 c612 0001 0806 0001 0800 0604 0001 0200 c612 0001 c612 0001 0000 0000 0000 c612 0002`);
// 52:54:00:12:34:56 > 02:00:c6:12:00:01, ARP, Reply 198.18.0.2 is-at 52:54:00:12:34:56
const ARP_REPLY = hex(`0200 c612 0001 5254 0012 3456 0806 0001 0800 0604 0002 5254 0012 3456 c612 0002 0200 c612 0001 c612 0001`);
// The kernel's own gratuitous ARP (arp_notify, link up): Request who-has 198.18.0.1 tell 198.18.0.1, tha 0
const ARP_ANNOUNCE = hex(`ffff ffff ffff 0200 c612 0001 0806 0001 0800 0604 0001 0200 c612 0001 c612 0001 0000 0000 0000 c612 0001`);
// arping -U (Habets' arping): Request who-has 198.18.0.2 (ff:ff:ff:ff:ff:ff) tell 198.18.0.2, padded to 58 bytes
const ARPING_U = hex(`ffff ffff ffff 5254 0012 3456 0806 0001 0800 0604 0001 5254 0012 3456 c612 0002 ffff ffff ffff c612 0002
  0000 0000 0000 0000 0000 0000 0000 0000`);
// 02:00:c6:12:00:01 > 52:54:00:12:34:56, IPv4, 198.18.0.1 > 198.18.0.2: ICMP echo request, id 18116, seq 1, length 32
const ICMP_FRAME = hex(`5254 0012 3456 0200 c612 0001 0800 4500 0034 7121 4000 4001 3d80 c612 0001 c612 0002 0800 4a8b 46c4 0001
  c1d1 0e6b 0000 0000 4522 0500 0000 0000 1011 1213 1415 1617`);
// 52:54:00:12:34:56 > 01:00:5e:01:02:03, 198.18.0.2 > 239.1.2.3: igmp v2 report 239.1.2.3 (ip addr add ... autojoin)
const IGMP_REPORT = hex(`0100 5e01 0203 5254 0012 3456 0800 46c0 0020 0000 4000 0102 2cff c612 0002 ef01 0203 9404 0000 1600 f8fa ef01 0203`);
// 52:54:00:12:34:56 > 01:00:5e:00:00:02, 198.18.0.2 > 224.0.0.2: igmp leave 239.1.2.3
const IGMP_LEAVE = hex(`0100 5e00 0002 5254 0012 3456 0800 46c0 0020 0000 4000 0102 3e01 c612 0002 e000 0002 9404 0000 1700 f7fa ef01 0203`);
// 52:54:00:aa:bb:cc > 01:00:5e:00:00:01, 0.0.0.0 > 224.0.0.1: igmp query v2 (Linux bridge querier, max resp 10 s)
const IGMP_QUERY = hex(`0100 5e00 0001 5254 00aa bbcc 0800 46c0 0020 0000 4000 0102 0417 0000 0000 e000 0001 9404 0000 1164 ee9b 0000 0000`);

describe('MAC addresses', () => {
  test('read, write, format and parse agree', () => {
    const m = readMac(ARP_REPLY, 6);
    expect(formatMac(m)).toBe('52:54:00:12:34:56');
    expect(m).toBe(0x525400123456);
    const b = Buffer.alloc(6);
    writeMac(b, 0, m);
    expect(b).toEqual(hex('525400123456'));
    expect(parseMac('52-54-00-12-34-56')).toBe(m);
    expect(parseMac('52:54:00:12:34:5G')).toBeNull();
    expect(parseMac('52:54:00:12:34')).toBeNull();
    expect(parseMac('52:54-00:12:34:56')).toBeNull();
    writeMac(b, 0, BROADCAST_MAC);
    expect(b).toEqual(hex('ffffffffffff'));
  });

  test('group and locally administered bits (IEEE 802, RFC 7042 2.1)', () => {
    expect(isMulticastMac(BROADCAST_MAC)).toBe(true);
    expect(isMulticastMac(mac('01:00:5e:01:02:03'))).toBe(true);
    expect(isMulticastMac(mac('03:bf:c6:12:00:0a'))).toBe(true); // NLB multicast mode
    expect(isMulticastMac(mac('02:bf:c6:12:00:0a'))).toBe(false); // NLB unicast mode
    expect(isMulticastMac(mac('52:54:00:12:34:56'))).toBe(false);
    expect(isLocallyAdministered(mac('02:00:c6:12:00:02'))).toBe(true);
    expect(isLocallyAdministered(mac('00:16:3e:00:00:01'))).toBe(false);
  });

  test('RFC 1112 6.4 mapping: the low 23 bits of the group', () => {
    expect(formatMac(ipv4MulticastMac(ip('239.1.2.3')))).toBe('01:00:5e:01:02:03');
    expect(formatMac(ipv4MulticastMac(ip('224.0.0.1')))).toBe('01:00:5e:00:00:01');
    // 32 groups share one MAC: the high bit of the second octet is dropped.
    expect(ipv4MulticastMac(ip('239.129.2.3'))).toBe(ipv4MulticastMac(ip('224.1.2.3')));
    expect(readMac(IGMP_REPORT, 0)).toBe(ipv4MulticastMac(ip('239.1.2.3')));
  });

  test('the default MAC: 02:00 and the IPv4 address, unicast and locally administered', () => {
    const m = macFromIpv4(ip('198.18.0.2'));
    expect(formatMac(m)).toBe('02:00:c6:12:00:02');
    expect(isMulticastMac(m)).toBe(false);
    expect(isLocallyAdministered(m)).toBe(true);
    expect(macFromIpv4(ip('255.255.255.255'))).toBe(0x0200ffffffff);
  });
});

describe('Ethernet II', () => {
  test('parses a captured IPv4 frame and emits the same header', () => {
    const r = newEthernetRepr();
    expect(parseEthernet(ICMP_FRAME, 0, ICMP_FRAME.length, r)).toBe(EthernetError.None);
    expect(r).toEqual({ dst: mac('52:54:00:12:34:56'), src: mac('02:00:c6:12:00:01'), etherType: ETHERTYPE_IPV4 });
    const out = Buffer.alloc(ETHERNET_HEADER_LEN);
    expect(emitEthernet(out, 0, r)).toBe(14);
    expect(out).toEqual(ICMP_FRAME.subarray(0, 14));
    // The payload is the IPv4 packet, a valid header.
    const ipr = newIpv4Repr();
    expect(parseIpv4Header(ICMP_FRAME, 14, ICMP_FRAME.length - 14, ipr)).toBe(Ipv4Error.None);
    expect(ipr.src).toBe(ip('198.18.0.1'));
    expect(ipr.totalLength).toBe(ICMP_FRAME.length - 14);
  });

  test('refuses a frame shorter than its header, at every length below 14', () => {
    const r = newEthernetRepr();
    for (let n = 0; n < 14; n++) expect(parseEthernet(ICMP_FRAME, 0, n, r)).toBe(EthernetError.Truncated);
    expect(parseEthernet(ICMP_FRAME, 0, 14, r)).toBe(EthernetError.None);
  });

  test('refuses an IEEE 802.3 length field (type < 0x0600)', () => {
    const f = Buffer.from(ARP_REQUEST);
    const r = newEthernetRepr();
    for (const v of [0x0000, 0x002e, 0x05dc, 0x05ff]) {
      f.writeUInt16BE(v, 12);
      expect(parseEthernet(f, 0, f.length, r)).toBe(EthernetError.NotEthernetII);
    }
    f.writeUInt16BE(0x0600, 12);
    expect(parseEthernet(f, 0, f.length, r)).toBe(EthernetError.None);
  });
});

describe('ARP (RFC 826)', () => {
  const cases: [string, Buffer, object][] = [
    [
      'request',
      ARP_REQUEST,
      {
        operation: ARP_OP_REQUEST,
        senderHardwareAddr: mac('02:00:c6:12:00:01'),
        senderProtocolAddr: ip('198.18.0.1'),
        targetHardwareAddr: 0,
        targetProtocolAddr: ip('198.18.0.2'),
      },
    ],
    [
      'reply',
      ARP_REPLY,
      {
        operation: ARP_OP_REPLY,
        senderHardwareAddr: mac('52:54:00:12:34:56'),
        senderProtocolAddr: ip('198.18.0.2'),
        targetHardwareAddr: mac('02:00:c6:12:00:01'),
        targetProtocolAddr: ip('198.18.0.1'),
      },
    ],
    [
      'kernel announcement',
      ARP_ANNOUNCE,
      {
        operation: ARP_OP_REQUEST,
        senderHardwareAddr: mac('02:00:c6:12:00:01'),
        senderProtocolAddr: ip('198.18.0.1'),
        targetHardwareAddr: 0,
        targetProtocolAddr: ip('198.18.0.1'),
      },
    ],
  ];
  for (const [name, frame, want] of cases) {
    test(`${name}: parse, then emit the same 28 bytes`, () => {
      const r = newArpRepr();
      expect(parseArp(frame, 14, frame.length - 14, r)).toBe(ArpError.None);
      expect(r).toEqual(want);
      const out = Buffer.alloc(28);
      expect(emitArp(out, 0, r)).toBe(28);
      expect(out).toEqual(frame.subarray(14, 42));
    });
  }

  test('gratuitous forms: the kernel announcement and arping -U; an RFC 5227 probe', () => {
    const r = newArpRepr();
    parseArp(ARP_ANNOUNCE, 14, ARP_ANNOUNCE.length - 14, r);
    expect(isGratuitous(r)).toBe(true);
    parseArp(ARPING_U, 14, ARPING_U.length - 14, r); // padding after byte 28 is ignored
    expect(isGratuitous(r)).toBe(true);
    expect(r.targetHardwareAddr).toBe(BROADCAST_MAC);
    parseArp(ARP_REQUEST, 14, 28, r);
    expect(isGratuitous(r)).toBe(false);
    expect(isProbe(r)).toBe(false);
    const probe = Buffer.from(ARP_REQUEST);
    probe.fill(0, 14 + 14, 14 + 18); // sender protocol address 0.0.0.0
    parseArp(probe, 14, 28, r);
    expect(isProbe(r)).toBe(true);
    expect(isGratuitous(r)).toBe(false);
  });

  test('lengths are checked before anything is read', () => {
    const body = ARP_REQUEST.subarray(14);
    const r = newArpRepr();
    for (let n = 0; n < 8; n++) expect(parseArp(body, 0, n, r)).toBe(ArpError.Truncated);
    for (let n = 8; n < 28; n++) expect(parseArp(body, 0, n, r)).toBe(ArpError.Truncated);
    expect(parseArp(body, 0, 28, r)).toBe(ArpError.None);
    const bad = (edit: (b: Buffer) => void) => {
      const b = Buffer.from(body);
      edit(b);
      return parseArp(b, 0, b.length, r);
    };
    expect(
      bad((b) => {
        b[4] = 8;
      }),
    ).toBe(ArpError.BadLengths);
    expect(
      bad((b) => {
        b[5] = 16;
      }),
    ).toBe(ArpError.BadLengths);
    expect(
      bad((b) => {
        b[4] = 0;
        b[5] = 0;
      }),
    ).toBe(ArpError.BadLengths);
    expect(
      bad((b) => {
        b.writeUInt16BE(6, 0);
      }),
    ).toBe(ArpError.UnsupportedType); // IEEE 802 hardware
    expect(
      bad((b) => {
        b.writeUInt16BE(0x86dd, 2);
      }),
    ).toBe(ArpError.UnsupportedType);
    expect(
      bad((b) => {
        b.writeUInt16BE(3, 6);
      }),
    ).toBe(ArpError.BadOperation); // RARP request
    expect(
      bad((b) => {
        b.writeUInt16BE(0, 6);
      }),
    ).toBe(ArpError.BadOperation);
  });
});

describe('IGMPv2 (RFC 2236)', () => {
  test('a Linux report: IP header with Router Alert, then the message', () => {
    const ipr = newIpv4Repr();
    const pkt = IGMP_REPORT.subarray(14);
    expect(parseIpv4Header(pkt, 0, pkt.length, ipr)).toBe(Ipv4Error.None);
    expect(ipr).toMatchObject({ headerLength: 24, ttl: 1, protocol: 2, tos: 0xc0, dontFragment: true, dst: ip('239.1.2.3') });
    const r = newIgmpRepr();
    expect(parseIgmp(pkt, 24, 8, r)).toBe(IgmpError.None);
    expect(r).toEqual({ type: IGMP_V2_MEMBERSHIP_REPORT, maxRespTime: 0, group: ip('239.1.2.3') });
    const out = Buffer.alloc(8);
    emitIgmp(out, 0, r);
    expect(out).toEqual(pkt.subarray(24));
  });

  test('we build the datagrams Linux builds, byte for byte (report and leave)', () => {
    const src = ip('198.18.0.2');
    expect(buildIgmpDatagram(src, ip('239.1.2.3'), { type: IGMP_V2_MEMBERSHIP_REPORT, maxRespTime: 0, group: ip('239.1.2.3') })).toEqual(
      IGMP_REPORT.subarray(14),
    );
    expect(buildIgmpDatagram(src, ip('224.0.0.2'), { type: IGMP_LEAVE_GROUP, maxRespTime: 0, group: ip('239.1.2.3') })).toEqual(IGMP_LEAVE.subarray(14));
  });

  test('a general query from a Linux bridge querier', () => {
    const pkt = IGMP_QUERY.subarray(14);
    const r = newIgmpRepr();
    expect(parseIgmp(pkt, 24, 8, r)).toBe(IgmpError.None);
    expect(r).toEqual({ type: IGMP_MEMBERSHIP_QUERY, maxRespTime: 100, group: 0 });
  });

  test('short messages and bad checksums are refused', () => {
    const pkt = IGMP_QUERY.subarray(14);
    const r = newIgmpRepr();
    for (let n = 0; n < 8; n++) expect(parseIgmp(pkt, 24, n, r)).toBe(IgmpError.Truncated);
    const bad = Buffer.from(pkt);
    bad[24 + 1] ^= 1;
    expect(parseIgmp(bad, 24, 8, r)).toBe(IgmpError.BadChecksum);
  });

  test('the ARP EtherType constant matches the captured frames', () => {
    expect(ARP_REQUEST.readUInt16BE(12)).toBe(ETHERTYPE_ARP);
  });
});
