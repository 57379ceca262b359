/**
 * The stack's counters, named as Linux's `nstat` names them where one exists
 * (Ip*, Icmp*, Tcp*, TcpExt*, Udp*), plus faultstack's own (Fs*). A plain object
 * of numbers: incrementing one is a property write on the hot path. Every counter here
 * is counted somewhere; a mechanism the stack does not have (tail loss probes, header
 * prediction, receive coalescing) has no counter rather than one that stays at zero.
 */
export function newCounters() {
  return {
    IpInReceives: 0, IpInHdrErrors: 0, IpInAddrErrors: 0, IpInUnknownProtos: 0, IpInDiscards: 0,
    IpInDelivers: 0, IpOutRequests: 0, IpOutDiscards: 0,
    IpReasmReqds: 0, IpReasmOKs: 0, IpReasmFails: 0, IpReasmTimeout: 0,
    IpFragOKs: 0, IpFragFails: 0, IpFragCreates: 0,
    IcmpInMsgs: 0, IcmpInErrors: 0, IcmpInCsumErrors: 0, IcmpInDestUnreachs: 0, IcmpInTimeExcds: 0,
    IcmpInEchos: 0, IcmpInEchoReps: 0, IcmpOutMsgs: 0, IcmpOutDestUnreachs: 0, IcmpOutEchoReps: 0,
    IcmpOutRateLimited: 0,
    TcpActiveOpens: 0, TcpPassiveOpens: 0, TcpAttemptFails: 0, TcpEstabResets: 0, TcpCurrEstab: 0,
    TcpInSegs: 0, TcpOutSegs: 0, TcpRetransSegs: 0, TcpInErrs: 0, TcpOutRsts: 0, TcpInCsumErrors: 0,
    TcpExtListenOverflows: 0, TcpExtListenDrops: 0, TcpExtTCPChallengeACK: 0, TcpExtPAWSEstab: 0,
    TcpExtTCPSackRecovery: 0, TcpExtTCPRenoRecovery: 0, TcpExtTCPTimeouts: 0, TcpExtTCPFastRetrans: 0,
    TcpExtTCPSlowStartRetrans: 0, TcpExtSyncookiesSent: 0, TcpExtSyncookiesRecv: 0,
    TcpExtSyncookiesFailed: 0, TcpExtTCPSynRetrans: 0, TcpExtDelayedACKs: 0,
    TcpExtTCPOFOQueue: 0, TcpExtTCPOFODrop: 0, TcpExtTCPKeepAlive: 0, TcpExtTCPAbortOnTimeout: 0,
    TcpExtTCPAbortOnData: 0, TcpExtTCPAbortOnClose: 0,
    TcpExtTCPWinProbe: 0, TcpExtTCPPureAcks: 0, TcpExtTCPSACKDiscard: 0,
    TcpExtTW: 0, TcpExtTCPDSACKRecv: 0, TcpExtTCPGSOSegsIn: 0, TcpExtTCPGSOSegsOut: 0,
    TcpExtPMTUFragNeeded: 0,
    UdpInDatagrams: 0, UdpNoPorts: 0, UdpInErrors: 0, UdpOutDatagrams: 0, UdpInCsumErrors: 0,
    // faultstack's own
    FsIpv6Ignored: 0,
    FsSynProtectTriggered: 0, FsSynAckRetrans: 0, FsHalfOpenRecycled: 0, FsBacklogResets: 0, FsLeakedConnections: 0, FsLeakedBytes: 0,
    FsConnTableLockedDrops: 0,
    FsHostRoutesCreated: 0, FsHostRoutesUpdated: 0, FsHostRoutesRemoved: 0, FsIcmpIgnoredAtLimit: 0,
    FsPmtuBlackHoleDetected: 0,
    /** ACKs of new data whose TSecr this connection could not have sent (no RTT sample taken, RFC 7323 4.1). */
    FsTsEcrImplausible: 0,
  };
}
export type Counters = ReturnType<typeof newCounters>;
