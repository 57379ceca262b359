#!/usr/bin/env node
/**
 * The session directory of the NLB lab's sticky application (stack/services/mailbox.ts):
 * the "mailbox server" behind the cluster, as Exchange's mailbox servers stand behind
 * its NLB-balanced front ends. Every front end (a cluster host) keeps one connection to
 * it; a client's logon is held by one front end at a time.
 *
 *   front end: FRONTEND <host> <addr>
 *              LOGON <seq> <identity> <via>    -> OK <seq> | HELD <seq> <host> <addr> <via>
 *              CLAIM <identity> <via>          (after a reconnect: logons it still holds)
 *              LOGOFF <identity>
 * A LOGON for an identity another front end holds waits up to GRACE ms (argv[3],
 * default 2000) for it to be released before it is answered HELD: a logon on its way
 * out is not a conflict. A front end's logons are released when its connection closes
 * (the host died or stopped).
 *
 * argv: PORT [GRACE_MS]. Prints "listening PORT" once ready; one JSON line per logon
 * change on stdout (the lab reads them).
 */
'use strict';
const net = require('net');

const port = Number(process.argv[2] || 6100);
const grace = Number(process.argv[3] || 2000);
/** identity -> { fe, via, since } */
const held = new Map();

function log(o) { process.stdout.write(JSON.stringify({ t: Date.now(), ...o }) + '\n'); }

const server = net.createServer((sock) => {
  const fe = { sock, host: '?', addr: sock.remoteAddress, identities: new Set() };
  let buf = '';
  sock.setNoDelay(true);
  sock.on('error', () => {});
  const tryLogon = (seq, id, via, deadline) => {
    const h = held.get(id);
    if (!h || h.fe === fe) {
      held.set(id, { fe, via, since: Date.now() });
      fe.identities.add(id);
      log({ event: 'logon', identity: decodeURIComponent(id), host: fe.host, via });
      sock.write(`OK ${seq}\n`);
      return;
    }
    if (Date.now() < deadline) { setTimeout(() => tryLogon(seq, id, via, deadline), 50); return; }
    log({ event: 'held', identity: decodeURIComponent(id), host: fe.host, holder: h.fe.host, via: h.via });
    sock.write(`HELD ${seq} ${h.fe.host} ${h.fe.addr} ${h.via}\n`);
  };
  sock.on('data', (d) => {
    buf += d.toString('utf8');
    let nl;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const w = buf.slice(0, nl).trim().split(' ');
      buf = buf.slice(nl + 1);
      if (w[0] === 'FRONTEND') { fe.host = w[1]; fe.addr = w[2]; }
      else if (w[0] === 'LOGON') tryLogon(w[1], w[2], w[3], Date.now() + grace);
      else if (w[0] === 'CLAIM' && !held.has(w[1])) { held.set(w[1], { fe, via: w[2], since: Date.now() }); fe.identities.add(w[1]); }
      else if (w[0] === 'LOGOFF') {
        const h = held.get(w[1]);
        if (h && h.fe === fe) { held.delete(w[1]); fe.identities.delete(w[1]); log({ event: 'logoff', identity: decodeURIComponent(w[1]), host: fe.host }); }
      }
    }
  });
  sock.on('close', () => {
    for (const id of fe.identities) {
      const h = held.get(id);
      if (h && h.fe === fe) { held.delete(id); log({ event: 'logoff', identity: decodeURIComponent(id), host: fe.host, why: 'front end gone' }); }
    }
  });
});
server.listen(port, () => process.stdout.write(`listening ${port}\n`));
process.on('SIGTERM', () => process.exit(0));
