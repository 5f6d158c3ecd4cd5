#!/usr/bin/env python3
"""Free loopback ports for daemons that are told a port and bind it later (Hadoop's, or a
server restarted on the same port after kill -9).

A port picked by binding port 0 and released stays free only by luck until the daemon binds
it, which can take minutes on a loaded machine: two picks may repeat, or another process may
take it meanwhile. So the ports of one call are held together (none repeats), drawn outside
the kernel's ephemeral range (no port-0 socket or outgoing connection takes one), and marked
in a shared folder that other calls skip for 30 minutes (no concurrent start takes one);
calls take turns on a lock. A daemon that binds its port again later (a restart) renews its
marks first.

    tools/free_ports.py N            prints N such ports, space-separated
    tools/free_ports.py --renew P..  marks ports P.. as reserved for another 30 minutes
"""
import fcntl
import os
import random
import socket
import sys
import time

MARKS = os.path.join("/tmp", f"strata-ports-{os.getuid()}")
RESERVED_SECONDS = 1800


def _range():
    """Ports to draw from: below the ephemeral range, or above it when it starts low."""
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        first, last = map(int, f.read().split())
    return (10000, first) if first > 20000 else (last + 1, 65536)


def _turn():
    """The shared lock, held until the returned file is closed."""
    os.makedirs(MARKS, exist_ok=True)
    lock = open(os.path.join(MARKS, ".lock"), "w")
    fcntl.flock(lock, fcntl.LOCK_EX)
    return lock


def reserve(wanted):
    low, high = _range()
    if high - low < 100:
        raise RuntimeError(f"no port range outside the ephemeral one ({low}-{high - 1})")
    pick = random.SystemRandom()  # never a caller's seeded generator
    held = []
    with _turn():
        try:
            for _ in range(100000):
                if len(held) == wanted:
                    for s in held:
                        _mark(s.getsockname()[1])
                    return [s.getsockname()[1] for s in held]
                port = pick.randrange(low, high)
                try:
                    if time.time() - os.stat(os.path.join(MARKS, str(port))).st_mtime < RESERVED_SECONDS:
                        continue
                except FileNotFoundError:
                    pass
                s = socket.socket()
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    s.close()
                    continue
                held.append(s)
            raise RuntimeError(f"no {wanted} free ports to reserve in {low}-{high - 1}")
        finally:
            for s in held:
                s.close()


def renew(ports):
    with _turn():
        for port in ports:
            _mark(port)


def _mark(port):
    path = os.path.join(MARKS, str(port))
    with open(path, "a"):
        pass
    os.utime(path)


if __name__ == "__main__":
    if sys.argv[1] == "--renew":
        renew(int(p) for p in sys.argv[2:])
    else:
        print(" ".join(map(str, reserve(int(sys.argv[1])))))
