#!/usr/bin/env python3
"""Free loopback ports for daemons that are told a port and bind it later (Hadoop's, or a
server restarted on the same port after kill -9).

A port picked by binding port 0 and released stays free only by luck until the daemon binds
it, which can take minutes on a loaded machine: two picks may repeat, or another process may
take it meanwhile. So the ports of one call are held together (none repeats), drawn below
the kernel's ephemeral range (no port-0 socket or outgoing connection takes one), and marked
in a shared folder that other calls skip for 30 minutes (no concurrent start takes one).

    tools/free_ports.py N    prints N such ports, space-separated
"""
import os
import random
import socket
import sys
import time

MARKS = os.path.join("/tmp", f"strata-ports-{os.getuid()}")
RESERVED_SECONDS = 1800


def reserve(wanted):
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        ephemeral = int(f.read().split()[0])
    low, high = (10000, ephemeral) if ephemeral > 20000 else (ephemeral, 65536)
    os.makedirs(MARKS, exist_ok=True)
    pick = random.SystemRandom()  # never a caller's seeded generator
    held = []
    try:
        for _ in range(100000):
            if len(held) == wanted:
                return [s.getsockname()[1] for s in held]
            port = pick.randrange(low, high)
            mark = os.path.join(MARKS, str(port))
            try:
                if time.time() - os.stat(mark).st_mtime < RESERVED_SECONDS:
                    continue
                os.unlink(mark)
            except FileNotFoundError:
                pass
            s = socket.socket()
            try:
                s.bind(("127.0.0.1", port))
                os.close(os.open(mark, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except OSError:
                s.close()
                continue
            held.append(s)
        raise RuntimeError(f"no {wanted} free ports to reserve in {low}-{high - 1}")
    finally:
        for s in held:
            s.close()


if __name__ == "__main__":
    print(" ".join(map(str, reserve(int(sys.argv[1])))))
