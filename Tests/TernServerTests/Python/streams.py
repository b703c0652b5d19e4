#!/usr/bin/env python3
"""redis-py drives Tern's Streams commands (docs/QUEUE.md): the reply shapes must be what
redis-py's parsers expect, in RESP2 and RESP3. Usage: streams.py PORT1 PORT2 [BACKLOG_LIMIT].
Prints one line per check and "streams redis-py: OK" at the end; exits 1 on the first failure."""
import sys
import threading
import time

import redis

port1, port2 = int(sys.argv[1]), int(sys.argv[2])
limit = int(sys.argv[3]) if len(sys.argv) > 3 else 0


def check(name, cond, detail=""):
    if not cond:
        print(f"FAIL {name}: {detail}")
        sys.exit(1)
    print(f"ok {name}")


for proto in (2, 3):
    r = redis.Redis(port=port1, protocol=proto)
    other = redis.Redis(port=port2, protocol=proto)
    key = f"jobs:{proto}:{time.time_ns()}"

    # XADD with explicit and generated ids, XLEN, XRANGE / XREVRANGE.
    check("xadd explicit", r.xadd(key, {"task": "a"}, id="1-1") == b"1-1")
    generated = r.xadd(key, {"task": "b", "n": "2"})
    ms, seq = generated.split(b"-")
    check("xadd * from the clock", int(ms) > 1_600_000_000_000 and seq == b"0", generated)
    check("xlen", other.xlen(key) == 2)
    rng = other.xrange(key)
    check("xrange shape", rng == [(b"1-1", {b"task": b"a"}), (generated, {b"task": b"b", b"n": b"2"})], rng)
    check("xrevrange count", r.xrevrange(key, count=1) == [(generated, {b"task": b"b", b"n": b"2"})])
    check("xrange exclusive", r.xrange(key, min="(1-1") == [(generated, {b"task": b"b", b"n": b"2"})])
    try:
        r.xadd(key, {"x": "y"}, id="1-1")
        check("xadd smaller id refused", False)
    except redis.ResponseError as e:
        check("xadd smaller id refused", "equal or smaller than the target stream top item" in str(e), e)

    # XREAD.
    got = other.xread({key: "0-0"}, count=1)
    if proto == 2:
        check("xread shape", got == [[key.encode(), [(b"1-1", {b"task": b"a"})]]], got)
    else:
        check("xread shape", got == {key.encode(): [[(b"1-1", {b"task": b"a"})]]}, got)
    check("xread nothing new", r.xread({key: "$"}) in (None, [], {}))

    # A group, two workers, pending entries.
    check("xgroup create", r.xgroup_create(key, "g", id="0") is True)
    got = r.xreadgroup("g", "w1", {key: ">"}, count=1)
    entries = got[0][1] if proto == 2 else got[key.encode()][0]
    check("xreadgroup delivers", entries == [(b"1-1", {b"task": b"a"})], got)
    got = other.xreadgroup("g", "w2", {key: ">"})
    entries = got[0][1] if proto == 2 else got[key.encode()][0]
    check("xreadgroup second worker", [e[0] for e in entries] == [generated], got)
    check("xreadgroup nothing new", r.xreadgroup("g", "w1", {key: ">"}) in (None, [], {}))
    summary = r.xpending(key, "g")
    check(
        "xpending summary",
        summary["pending"] == 2 and summary["min"] == b"1-1" and summary["max"] == generated
        and summary["consumers"] == [{"name": b"w1", "pending": 1}, {"name": b"w2", "pending": 1}],
        summary,
    )
    ext = r.xpending_range(key, "g", min="-", max="+", count=10)
    check(
        "xpending_range",
        [(p["message_id"], p["consumer"], p["times_delivered"]) for p in ext]
        == [(b"1-1", b"w1", 1), (generated, b"w2", 1)]
        and all(p["time_since_delivered"] >= 0 for p in ext),
        ext,
    )
    only = r.xpending_range(key, "g", min="-", max="+", count=10, consumername="w2")
    check("xpending_range consumer", [p["message_id"] for p in only] == [generated], only)

    # w1 dies: w2 claims its entry (XCLAIM), then XAUTOCLAIM moves everything to w3.
    time.sleep(0.05)
    claimed = other.xclaim(key, "g", "w2", min_idle_time=10, message_ids=["1-1"])
    check("xclaim", claimed == [(b"1-1", {b"task": b"a"})], claimed)
    ids = r.xclaim(key, "g", "w2", min_idle_time=0, message_ids=["1-1"], justid=True)
    check("xclaim justid", ids == [b"1-1"], ids)
    auto = r.xautoclaim(key, "g", "w3", min_idle_time=0, start_id="0-0", count=10)
    check(
        "xautoclaim",
        auto[0] == b"0-0" and [e[0] for e in auto[1]] == [b"1-1", generated] and auto[2] == [],
        auto,
    )
    auto_ids = r.xautoclaim(key, "g", "w3", min_idle_time=0, start_id="0-0", count=1, justid=True)
    check("xautoclaim justid", auto_ids == [b"1-1"], auto_ids)

    # XINFO.
    info = r.xinfo_stream(key)
    check(
        "xinfo_stream",
        info["length"] == 2 and info["last-generated-id"] == generated and info["groups"] == 1
        and info["first-entry"] == (b"1-1", {b"task": b"a"}) and info["entries-added"] == 2,
        info,
    )
    full = r.xinfo_stream(key, full=True)
    check("xinfo_stream full", len(full["entries"]) == 2 and full["groups"][0]["name"] == b"g", full)
    groups = r.xinfo_groups(key)
    check(
        "xinfo_groups",
        len(groups) == 1 and groups[0]["name"] == b"g" and groups[0]["pending"] == 2
        and groups[0]["consumers"] == 3 and groups[0]["last-delivered-id"] == generated and groups[0]["lag"] == 0,
        groups,
    )
    consumers = r.xinfo_consumers(key, "g")
    check(
        "xinfo_consumers",
        [(c["name"], c["pending"]) for c in consumers] == [(b"w1", 0), (b"w2", 0), (b"w3", 2)]
        and all(c["idle"] >= 0 for c in consumers),
        consumers,
    )

    # XACK, XACKADD (Tern): completing a task adds its sub-tasks exactly once.
    check("xack", r.xack(key, "g", generated) == 1)
    check("xack again", other.xack(key, "g", generated) == 0)
    done = r.execute_command("XACKADD", key, "g", "1-1", "FIELDS", 1, "sub", "x", "FIELDS", 1, "sub", "y")
    check("xackadd acknowledges and adds", done[0] == 1 and len(done[1]) == 2, done)
    again = other.execute_command("XACKADD", key, "g", "1-1", "FIELDS", 1, "sub", "x", "FIELDS", 1, "sub", "y")
    check("xackadd retried adds nothing", again == [0, []], again)
    check("xlen after xackadd", r.xlen(key) == 4)
    check("pending empty", r.xpending(key, "g")["pending"] == 0)

    # XDEL, XTRIM, XSETID, XGROUP subcommands, TYPE, WRONGTYPE.
    check("xdel", r.xdel(key, "1-1") == 1)
    check("xtrim", r.xtrim(key, maxlen=1, approximate=False) == 2)
    check("xlen after trim", other.xlen(key) == 1)
    check("type", r.type(key) == b"stream")
    check("xgroup createconsumer", r.xgroup_createconsumer(key, "g", "w9") == 1)
    check("xgroup delconsumer", r.xgroup_delconsumer(key, "g", "w9") == 0)
    check("xgroup setid", r.xgroup_setid(key, "g", id="$") is True)
    check("xgroup destroy", r.xgroup_destroy(key, "g") == 1)
    r.set(key + ":s", "x")
    try:
        r.xadd(key + ":s", {"a": "b"})
        check("wrongtype", False)
    except redis.ResponseError as e:
        check("wrongtype", str(e).startswith("WRONGTYPE"), e)
    try:
        r.xreadgroup("nogroup", "c", {key: ">"})
        check("nogroup", False)
    except redis.ResponseError as e:
        check("nogroup", "No such key" in str(e) and "consumer group 'nogroup'" in str(e), e)
    # Blocking reads: a timeout answers nil; an XADD through another node wakes the reader.
    started = time.time()
    check("xread block timeout", r.xread({key: "$"}, block=150) in (None, [], {}))
    check("xread block waited", time.time() - started >= 0.14, time.time() - started)
    threading.Timer(0.2, lambda: other.xadd(key, {"wake": "1"})).start()
    got = r.xread({key: "$"}, block=5000)
    woke = got[0][1] if proto == 2 else got[key.encode()][0]
    check("xread block woken", [e[1] for e in woke] == [{b"wake": b"1"}], got)
    r.xgroup_create(key, "late", id="$")
    threading.Timer(0.2, lambda: other.xadd(key, {"wake": "2"})).start()
    got = r.xreadgroup("late", "w", {key: ">"}, block=5000)
    woke = got[0][1] if proto == 2 else got[key.encode()][0]
    check("xreadgroup block woken", [e[1] for e in woke] == [{b"wake": b"2"}], got)
    check("xreadgroup block timeout", r.xreadgroup("late", "w", {key: ">"}, block=100) in (None, [], {}))
    check("xadd maxlen", r.xadd(key, {"a": "b"}, maxlen=1, approximate=False) is not None and r.xlen(key) == 1)

    # Overload: beyond the backlog bound XADD is refused; MAXLEN in the same XADD still works.
    if limit > 0 and proto == 2:
        full_key = key + ":full"
        for i in range(limit):
            r.xadd(full_key, {"i": str(i)})
        try:
            r.xadd(full_key, {"i": "over"})
            check("backlog refused", False)
        except redis.ResponseError as e:
            check("backlog refused", "back off" in str(e) and str(e).startswith("OVERLOADED"), e)
        check("backlog with maxlen", r.xadd(full_key, {"i": "trimmed"}, maxlen=limit) is not None)
        check("backlog length", r.xlen(full_key) == limit)

    # XADD IDMP / IDMPAUTO (Redis 8.6's idempotency key, redis-py's own arguments): a retry
    # through the other node answers the first id and adds nothing.
    if proto == 2:
        idk = key + ":idmp"
        first = r.xadd(idk, {"job": "7"}, idmp=("app-1", b"job-7"))
        again = other.xadd(idk, {"job": "7", "retry": "1"}, idmp=("app-1", b"job-7"))
        check("xadd idmp retried through another node", again == first and other.xlen(idk) == 1, (first, again))
        check("xadd idmp another job", r.xadd(idk, {"job": "8"}, idmp=("app-1", b"job-8")) != first)
        a1 = r.xadd(idk, {"job": "9"}, idmpauto="app-2")
        a2 = other.xadd(idk, {"job": "9"}, idmpauto="app-2")
        check("xadd idmpauto retried", a1 == a2 and r.xlen(idk) == 3, (a1, a2))
        try:
            r.execute_command("XADD", idk, "IDMP", "p", "i", "9-9", "f", "v")
            check("xadd idmp explicit id refused", False)
        except redis.ResponseError as e:
            check("xadd idmp explicit id refused", "can be used only with auto-generated IDs" in str(e), e)

# A stream left for the /metrics check of the calling test: 3 entries, group mg, 1 delivered.
mkey = f"metrics:{time.time_ns()}"
for i in range(3):
    r.xadd(mkey, {"i": str(i)})
r.xgroup_create(mkey, "mg", id="0")
r.xreadgroup("mg", "m1", {mkey: ">"}, count=1)
print(f"metrics stream: {mkey}")
print("streams redis-py: OK")
