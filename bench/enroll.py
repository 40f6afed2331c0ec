#!/usr/bin/env python3
"""Registers N devices with a running otterd through the device API, the way agents do: each
device makes an Ed25519 key, authenticates with an enrollment token (auto-accepted), and checks
in once (so its installed set is stored). Writes one device token per line to OUT.

Usage: bench/enroll.py URL ADMIN_TOKEN N OUT [PROCESSES]"""
import base64
import ctypes
import ctypes.util
import http.client
import json
import multiprocessing
import sys
import time
import urllib.parse

CONTEXT = b"otter-device-auth-v1\0"
CHECKIN = (json.dumps({"device_type": "gw-1", "installed": {"rootfs": {
    "version": "1.0", "sha256": "5e" * 32}}, "provides": {}}, sort_keys=True,
    separators=(",", ":")) + "\n").encode()


def sodium():
    lib = ctypes.CDLL(ctypes.util.find_library("sodium") or "libsodium.so.23")
    assert lib.sodium_init() >= 0
    return lib


def worker(args):
    url, enroll, first, count = args
    lib = sodium()
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    pk, sk, sig = (ctypes.create_string_buffer(n) for n in (32, 64, 64))
    tokens = []
    for i in range(first, first + count):
        assert lib.crypto_sign_keypair(pk, sk) == 0
        body = (json.dumps({"device_type": "gw-1", "enrollment_token": enroll,
                            "identity": {"serial": f"bench-{i:08d}"},
                            "public_key": base64.b64encode(pk.raw).decode()},
                           sort_keys=True, separators=(",", ":")) + "\n").encode()
        msg = CONTEXT + body
        assert lib.crypto_sign_detached(sig, None, msg, ctypes.c_ulonglong(len(msg)), sk) == 0
        conn.request("POST", "/api/device/v1/auth", body,
                     {"X-Otter-Signature": base64.b64encode(sig.raw).decode()})
        r = conn.getresponse()
        data = r.read()
        if r.status != 200:
            raise SystemExit(f"auth of device {i}: {r.status} {data[:200]!r}")
        token = json.loads(data)["token"]
        conn.request("POST", "/api/device/v1/checkin", CHECKIN,
                     {"Authorization": f"Bearer {token}"})
        r = conn.getresponse()
        data = r.read()
        if r.status != 200:
            raise SystemExit(f"check-in of device {i}: {r.status} {data[:200]!r}")
        tokens.append(token)
    return tokens


def main():
    url, admin, n, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    procs = int(sys.argv[5]) if len(sys.argv) > 5 else 4
    u = urllib.parse.urlsplit(url)
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    c.request("POST", "/api/v1/tokens", json.dumps({"name": "bench-enroll",
                                                    "scopes": ["devices:enroll"]}),
              {"Authorization": f"Bearer {admin}"})
    r = c.getresponse()
    enroll = json.loads(r.read())["token"]
    start = time.monotonic()
    share = (n + procs - 1) // procs
    jobs = [(url, enroll, k * share, min(share, n - k * share)) for k in range(procs)
            if k * share < n]
    with multiprocessing.Pool(len(jobs)) as pool:
        results = pool.map(worker, jobs)
    with open(out, "w") as f:
        for tokens in results:
            f.write("".join(t + "\n" for t in tokens))
    took = time.monotonic() - start
    print(f"  registered {n} devices (auth + first check-in each) in {took:.1f} s "
          f"({n / took:.0f} devices/s)")


if __name__ == "__main__":
    main()
