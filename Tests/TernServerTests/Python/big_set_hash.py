#!/usr/bin/env python3
"""A big set, a big hash and a big sorted set through redis-py against three real Tern processes (docs/DATA.md,
"Big sets, hashes and sorted sets"): SADD, SREM, SPOP, SISMEMBER, SMISMEMBER, SCARD, SMEMBERS, SSCAN, HSET,
HDEL, HINCRBY, HSETNX, HGET, HMGET, HLEN, HGETALL, HEXISTS, a transaction, ZADD, ZINCRBY, ZREM,
ZSCORE, ZMSCORE, ZCARD, ZRANK, ZREVRANGE and ZPOPMAX from random nodes, each answer checked against
a Python set and dicts while the nodes split the collections into
buckets, fold their overlays and join them. Usage: big_set_hash.py SEED PORT... Prints
"big set and hash redis-py: OK" at the end; exits 1 on the first mismatch."""
import random
import sys

import redis

seed = int(sys.argv[1])
ports = [int(p) for p in sys.argv[2:]]
rng = random.Random(seed)
nodes = [redis.Redis(port=p, decode_responses=True, socket_timeout=20) for p in ports]
skey, hkey = f"bigset:{seed}", f"bighash:{seed}"
members, fields = set(), {}


def check(step, name, got, want):
    if got != want:
        print(f"FAIL step {step} {name}: got {str(got)[:200]} want {str(want)[:200]}")
        sys.exit(1)


def pick():
    return rng.choice(nodes)


def member():
    return f"m{rng.randrange(3000)}"


def field():
    return f"f{rng.randrange(1500)}"


nodes[0].delete(skey, hkey)
first = [f"m{i}" for i in range(2000)]
check(0, "sadd", pick().sadd(skey, *first), 2000)
members.update(first)
start = {f"f{i}": str(i) for i in range(1000)}
check(0, "hset", pick().hset(hkey, mapping=start), 1000)
fields.update(start)
for step in range(1, 1201):
    k = rng.randrange(100)
    if k < 18:
        ms = [member() for _ in range(rng.randint(1, 4))]
        check(step, "sadd", pick().sadd(skey, *ms), len(set(ms) - members))
        members.update(ms)
    elif k < 30:
        ms = [member() for _ in range(rng.randint(1, 4))]
        check(step, "srem", pick().srem(skey, *ms), len(set(ms) & members))
        members.difference_update(ms)
    elif k < 34:
        got = pick().spop(skey, 3)
        check(step, "spop", len(got) == 3 and set(got) <= members, True)
        members.difference_update(got)
    elif k < 40:
        m = member()
        check(step, "sismember", pick().sismember(skey, m), m in members)
    elif k < 44:
        ms = [member() for _ in range(3)]
        check(step, "smismember", pick().smismember(skey, ms), [m in members for m in ms])
    elif k < 47:
        check(step, "scard", pick().scard(skey), len(members))
    elif k < 48:
        check(step, "smembers", pick().smembers(skey), members)
    elif k < 49:
        cursor, got = pick().sscan(skey, 0, count=10000)
        check(step, "sscan", set(got), members)
    elif k < 64:
        f, v = field(), f"v{step}"
        check(step, "hset", pick().hset(hkey, f, v), 0 if f in fields else 1)
        fields[f] = v
    elif k < 70:
        f = field()
        check(step, "hdel", pick().hdel(hkey, f), 1 if f in fields else 0)
        fields.pop(f, None)
    elif k < 76:
        f = field()
        old = fields.get(f, "0")
        try:
            got = pick().hincrby(hkey, f, 3)
            check(step, "hincrby", got, int(old) + 3)
            fields[f] = str(int(old) + 3)
        except redis.ResponseError as e:
            check(step, "hincrby error", str(e), "hash value is not an integer")
            check(step, "hincrby on a non-integer", old.lstrip("-").isdigit(), False)
    elif k < 79:
        f = field()
        check(step, "hsetnx", pick().hsetnx(hkey, f, "nx"), f not in fields)
        fields.setdefault(f, "nx")
    elif k < 87:
        f = field()
        check(step, "hget", pick().hget(hkey, f), fields.get(f))
    elif k < 91:
        fs = [field() for _ in range(3)]
        check(step, "hmget", pick().hmget(hkey, fs), [fields.get(f) for f in fs])
    elif k < 94:
        f = field()
        check(step, "hexists", pick().hexists(hkey, f), f in fields)
    elif k < 97:
        check(step, "hlen", pick().hlen(hkey), len(fields))
    elif k < 98:
        check(step, "hgetall", pick().hgetall(hkey), fields)
    else:
        # A transaction on the big hash: the nodes make it one value first (it fits).
        p = pick().pipeline(transaction=True)
        f = field()
        p.hset(hkey, f, "tx")
        p.hlen(hkey)
        got = p.execute()
        check(step, "multi", got, [0 if f in fields else 1, len(fields) + (0 if f in fields else 1)])
        fields[f] = "tx"

# A conversation list: a big sorted set whose scores move (docs/DATA.md, "Big sets, hashes and
# sorted sets").
zkey = f"bigzset:{seed}"
scores = {f"c{i}": float(i % 97) for i in range(2000)}
nodes[0].delete(zkey)
check(0, "zadd", pick().zadd(zkey, scores), 2000)


def ordered():
    return sorted(scores.items(), key=lambda x: (x[1], x[0]))


def conv():
    return f"c{rng.randrange(2500)}"


for step in range(1, 601):
    k = rng.randrange(100)
    if k < 30:
        c, s = conv(), float(rng.randrange(200))
        check(step, "zadd", pick().zadd(zkey, {c: s}), 0 if c in scores else 1)
        scores[c] = s
    elif k < 38:
        c, s = conv(), float(rng.randrange(200))
        changed = c not in scores or s > scores[c]
        check(step, "zadd gt ch", pick().zadd(zkey, {c: s}, gt=True, ch=True), 1 if changed and scores.get(c) != s else 0)
        if changed:
            scores[c] = s
    elif k < 46:
        c = conv()
        new = scores.get(c, 0.0) + 2
        check(step, "zincrby", pick().zincrby(zkey, 2, c), new)
        scores[c] = new
    elif k < 58:
        cs = list({conv() for _ in range(3)})
        check(step, "zrem", pick().zrem(zkey, *cs), len([c for c in cs if c in scores]))
        for c in cs:
            scores.pop(c, None)
    elif k < 70:
        c = conv()
        check(step, "zscore", pick().zscore(zkey, c), scores.get(c))
    elif k < 76:
        cs = [conv() for _ in range(3)]
        check(step, "zmscore", pick().zmscore(zkey, cs), [scores.get(c) for c in cs])
    elif k < 82:
        check(step, "zcard", pick().zcard(zkey), len(scores))
    elif k < 88:
        c = conv()
        rank = next((i for i, (m, _) in enumerate(ordered()) if m == c), None)
        check(step, "zrank", pick().zrank(zkey, c), rank)
    elif k < 98:
        got = pick().zrevrange(zkey, 0, 9, withscores=True)
        # Equal scores list members in reverse order: compare as Redis orders them.
        check(step, "zrevrange", got, sorted(scores.items(), key=lambda x: (x[1], x[0]), reverse=True)[:10])
    else:
        # A pop needs the whole sorted set: the nodes make it one value, the next write splits it.
        m, s = ordered()[-1]
        check(step, "zpopmax", pick().zpopmax(zkey), [(m, s)])
        scores.pop(m)
for i, r in enumerate(nodes):
    check(9999, f"whole set through node {i + 1}", r.smembers(skey), members)
    check(9999, f"whole hash through node {i + 1}", r.hgetall(hkey), fields)
    check(9999, f"whole sorted set through node {i + 1}", r.zrange(zkey, 0, -1, withscores=True), ordered())
print(f"big set: {len(members)} members, big hash: {len(fields)} fields, big sorted set: {len(scores)} members at the end")
print("big set, hash and sorted set redis-py: OK")
