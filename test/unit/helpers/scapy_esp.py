"""ESP with scapy's independent implementation (scapy.layers.ipsec.SecurityAssociation).

Reads one JSON object on stdin: {"ops": [op, ...]}; writes {"results": [...]} on stdout.
An op is {"op": "encrypt"|"decrypt", "crypt": "AES-GCM"|"AES-CBC", "cryptKey": hex,
"auth": "NULL"|"SHA2-256-128"|..., "authKey": hex, "spi": int, "seq": int, "esn": int|null,
"tunnel": {"src","dst"}|null, "natt": bool, "packet": hex}. encrypt takes an IPv4 packet
and returns the protected IPv4 packet; decrypt the reverse. Used by test/unit/ipsec-esp.test.ts.
"""
import json
import sys

from scapy.layers.inet import IP, UDP
from scapy.layers.ipsec import ESP, SecurityAssociation


def sa_for(op):
    kw = dict(
        crypt_algo=op["crypt"], crypt_key=bytes.fromhex(op["cryptKey"]),
        auth_algo=op["auth"], auth_key=bytes.fromhex(op["authKey"]) if op["authKey"] else None,
    )
    if op.get("tunnel"):
        kw["tunnel_header"] = IP(src=op["tunnel"]["src"], dst=op["tunnel"]["dst"])
    if op.get("natt"):
        kw["nat_t_header"] = UDP(sport=4500, dport=4500)
    if op.get("esn") is not None:
        kw["esn_en"] = True
        kw["esn"] = op["esn"]
    return SecurityAssociation(ESP, spi=op["spi"], seq_num=op.get("seq", 1), **kw)


def run(op):
    sa = sa_for(op)
    pkt = IP(bytes.fromhex(op["packet"]))
    if op["op"] == "encrypt":
        out = sa.encrypt(pkt, seq_num=op.get("seq"))
        return {"packet": bytes(out).hex()}
    out = sa.decrypt(pkt)
    return {"packet": bytes(out).hex()}


def main():
    req = json.load(sys.stdin)
    results = []
    for op in req["ops"]:
        try:
            results.append(run(op))
        except Exception as e:  # a wrong ICV raises: the test expects that for tampered packets
            results.append({"error": f"{type(e).__name__}: {e}"})
    json.dump({"results": results}, sys.stdout)


main()
