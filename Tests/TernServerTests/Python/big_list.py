#!/usr/bin/env python3
"""A big list through redis-py against three real Tern processes (docs/DATA.md, "Big lists"):
pushes, pops, ranges, LINDEX, LSET, LREM, LINSERT, LPOS, LTRIM and LLEN from random nodes, each
answer checked against a Python list, while the list is bucketed, sealed, merged, unsealed and
joined. Usage: big_list.py SEED PORT... Prints "big list redis-py: OK" at the end; exits 1 on the
first mismatch."""
import random
import sys

import redis

seed = int(sys.argv[1])
ports = [int(p) for p in sys.argv[2:]]
rng = random.Random(seed)
nodes = [redis.Redis(port=p, decode_responses=True, socket_timeout=20) for p in ports]
model = []
key = f"biglist:{seed}"


def check(step, name, got, want):
    if got != want:
        print(f"FAIL step {step} {name}: got {str(got)[:200]} want {str(want)[:200]}")
        sys.exit(1)


def pick():
    return rng.choice(nodes)


nodes[0].delete(key)
first = [f"x{i}" for i in range(2500)]
check(0, "rpush", pick().rpush(key, *first), 2500)
model += first
for step in range(1, 1201):
    k = rng.randrange(100)
    n = len(model)
    if k < 22:
        items = [f"l{step}-{j}" for j in range(rng.randint(1, 30))]
        check(step, "lpush", pick().lpush(key, *items), n + len(items))
        model[0:0] = list(reversed(items))
    elif k < 44:
        items = [f"r{step}-{j}" for j in range(rng.randint(1, 30))]
        check(step, "rpush", pick().rpush(key, *items), n + len(items))
        model += items
    elif k < 56:
        c = rng.randint(1, 50)
        check(step, "lpop", pick().lpop(key, c), model[:c] if n else None)
        del model[:c]
    elif k < 68:
        c = rng.randint(1, 50)
        check(step, "rpop", pick().rpop(key, c), list(reversed(model[-c:])) if n else None)
        del model[max(0, n - c):]
    elif k < 80:
        s = rng.randint(-n - 5, n + 5)
        e = s + rng.randint(0, 400)
        lo = max(0, s + n if s < 0 else s)
        hi = min(n - 1, e + n if e < 0 else e)
        check(step, f"lrange {s} {e}", pick().lrange(key, s, e), model[lo : hi + 1] if lo <= hi else [])
    elif k < 88:
        i = rng.randint(-n - 3, n + 2)
        j = i + n if i < 0 else i
        check(step, f"lindex {i}", pick().lindex(key, i), model[j] if 0 <= j < n else None)
    elif k < 90 and n:
        i = rng.randrange(n)
        check(step, "lset", pick().lset(key, i, f"set{step}"), True)
        model[i] = f"set{step}"
    elif k < 92 and n:
        e = model[rng.randrange(n)]
        check(step, "lrem", pick().lrem(key, 0, e), model.count(e))
        model = [x for x in model if x != e]
    elif k < 94 and n:
        e = model[rng.randrange(n)]
        check(step, "linsert", pick().linsert(key, "AFTER", e, f"ins{step}"), n + 1)
        model.insert(model.index(e) + 1, f"ins{step}")
    elif k < 96 and n:
        e = model[rng.randrange(n)]
        check(step, "lpos", pick().lpos(key, e), model.index(e))
    elif k < 97:
        hi = rng.randint(1000, 3000)
        check(step, "ltrim", pick().ltrim(key, 0, hi), True)
        model = model[: hi + 1]
    else:
        check(step, "llen", pick().llen(key), n)
    if len(model) < 300:
        items = [f"f{step}-{j}" for j in range(1500)]
        check(step, "refill", pick().rpush(key, *items), len(model) + 1500)
        model += items
for i, r in enumerate(nodes):
    check(9999, f"whole list through node {i + 1}", r.lrange(key, 0, -1), model)
print(f"big list: {len(model)} elements at the end")
print("big list redis-py: OK")
