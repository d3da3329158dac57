#!/usr/bin/python3
"""The clients of bench/admin-port.sh, one role per run (the script runs each as its uid).

  idle API N             opens N TCP connections to the API port from 127.0.3.x (250 each,
                         under the per-address cap), says "ready", holds them until stdin ends
  health ADMIN N SECS    up to N sequential GET /health (a new connection each, as curl does)
                         within SECS; prints "p50 p99 max timeouts count" in ms
  flood ADMIN SECS       GET /health in a loop for SECS; prints the answers' statuses
  stall ADMIN N SECS     holds N uploads that announce 1,000 bytes and send 16, opening a new
                         one as each is cut, for SECS; prints how many were cut and how
  refused ADMIN N SECS   up to N sequential connections within SECS, each one request read to
                         its answer; prints "count seconds ms_each statuses"

Every loop is bounded by a count and a time; everything is on loopback.
"""

import collections
import socket
import sys
import time

HEALTH = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
STALL = (b"PUT /snapshots/2024-01-01 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
         b"Content-Length: 1000\r\n\r\n0123456789abcdef")
TIMEOUT = 8.0


def addr(text):
    host, port = text.rsplit(":", 1)
    return host, int(port)


def exchange(target, request, timeout=TIMEOUT):
    """One request on a new connection; its status ("none" if no answer came in time)."""
    try:
        with socket.create_connection(target, timeout=timeout) as s:
            s.sendall(request)
            data = b""
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
                if b"\r\n\r\n" in data and data.startswith(b"HTTP/"):
                    break
            return data.split(b" ")[1].decode() if data.startswith(b"HTTP/") else "none"
    except socket.timeout:
        return "timeout"
    except OSError:
        return "error"


def idle(target, n):
    held = []
    for i in range(n):
        s = socket.socket()
        s.bind(("127.0.3.%d" % (1 + i // 250), 0))
        s.connect(target)
        held.append(s)
    print("ready", flush=True)
    sys.stdin.read()


def percentile(sorted_values, p):
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * p))]


def health(target, n, secs):
    took, timeouts = [], 0
    end = time.time() + secs
    for _ in range(n):
        if time.time() > end:
            break
        started = time.perf_counter()
        status = exchange(target, HEALTH)
        ms = (time.perf_counter() - started) * 1000
        if status != "200":
            timeouts += 1
        took.append(ms)
        time.sleep(0.005)
    took.sort()
    print("%.2f %.2f %.2f %d %d" % (percentile(took, 0.5), percentile(took, 0.99),
                                    took[-1] if took else float("nan"), timeouts, len(took)),
          flush=True)


def flood(target, secs):
    counts = collections.Counter()
    end = time.time() + secs
    print("ready", flush=True)
    while time.time() < end:
        counts[exchange(target, HEALTH)] += 1
    print(dict(counts), flush=True)


def stall(target, n, secs):
    end = time.time() + secs
    open_ = []
    outcomes = collections.Counter()

    def new():
        s = socket.create_connection(target, timeout=TIMEOUT)
        s.sendall(STALL)
        s.setblocking(False)
        return s

    for _ in range(n):
        open_.append(new())
    print("ready", flush=True)
    while time.time() < end:
        for i, s in enumerate(open_):
            try:
                data = s.recv(4096)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            status = data.split(b" ")[1].decode() if data.startswith(b"HTTP/") else "closed"
            outcomes[status] += 1
            s.close()
            open_[i] = new()
        time.sleep(0.05)
    print(dict(outcomes), flush=True)


def refused(target, n, secs):
    counts = collections.Counter()
    started = time.perf_counter()
    end = time.time() + secs
    done = 0
    for _ in range(n):
        if time.time() > end:
            break
        counts[exchange(target, HEALTH)] += 1
        done += 1
    took = time.perf_counter() - started
    print("%d %.2f %.2f %s" % (done, took, took * 1000 / max(done, 1), dict(counts)), flush=True)


def main():
    role, target = sys.argv[1], addr(sys.argv[2])
    args = [float(a) for a in sys.argv[3:]]
    if role == "idle":
        idle(target, int(args[0]))
    elif role == "health":
        health(target, int(args[0]), args[1])
    elif role == "flood":
        flood(target, args[0])
    elif role == "stall":
        stall(target, int(args[0]), args[1])
    elif role == "refused":
        refused(target, int(args[0]), args[1])
    else:
        sys.exit("unknown role " + role)


if __name__ == "__main__":
    main()
