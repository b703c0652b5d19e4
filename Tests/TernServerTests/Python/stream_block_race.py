"""A blocked XREADGROUP whose stream another connection turns into a set (MULTI DEL SADD EXEC)
just as the blocked command parks, over and over (Redis's suite, "Blocking XREADGROUP: key type
changed with transaction"): every blocked read must be answered (UNBLOCKED, or WRONGTYPE when the
set came first) and the key must stay served. A wake-up that ran the first take again instead of
the parked look made the take wake itself without end (Blocking.swift).

Usage: stream_block_race.py PORT [ROUNDS]; prints "stream block race: OK" and exits 0."""
import socket
import sys
import time

import redis


def main():
    port = int(sys.argv[1])
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 40
    r = redis.Redis(port=port, socket_timeout=10)
    answers = {}
    for i in range(rounds):
        r.delete("race")
        r.xadd("race", {"f": "v"}, id="666")
        r.xgroup_create("race", "g", "$")
        s = socket.create_connection(("127.0.0.1", port))
        args = [b"XREADGROUP", b"GROUP", b"g", b"Alice", b"BLOCK", b"0", b"STREAMS", b"race", b">"]
        s.sendall(b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args))
        time.sleep(0.0005 * (i % 8))
        p = r.pipeline(transaction=True)
        p.delete("race")
        p.sadd("race", "e1")
        assert p.execute() == [1, 1]
        s.settimeout(3)
        try:
            got = s.recv(1000).split(b" ")[0].decode()
        except socket.timeout:
            got = "no answer within 3 s"
        answers[got] = answers.get(got, 0) + 1
        s.close()
        if got.startswith("no answer"):
            break
    print("answers:", answers)
    assert set(answers) <= {"-UNBLOCKED", "-WRONGTYPE"}, answers
    assert r.type("race") == b"set"
    print("stream block race: OK")


main()
