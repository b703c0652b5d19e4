"""redis-py against a Tern node: which SYNC push path a redis-py program can read (docs/SYNC.md).

Usage: python3 sync_push.py PORT_A PORT_B
Prints one line per check and exits non-zero on the first failure.

1. RESP2 pub/sub (any client library): SUBSCRIBE sync:<uid> through redis-py's PubSub, a message
   sent at another node arrives as a pub/sub message on channel sync:<uid>.
2. RESP3: SUBSCRIBE sync:<uid> through PubSub works the same; SYNC.SUBSCRIBE's own push frames
   reach a redis-py program only through the connection parser's push handler (not public API).
3. MSG.SEND ... ID: redis-py's own retry (Retry on timeout) answers the first sequence.
"""

import sys
import time

import redis


def fail(msg):
    print("FAIL: " + msg)
    sys.exit(1)


port_a, port_b = int(sys.argv[1]), int(sys.argv[2])
uid = str(int(time.time() * 1000) % 1_000_000_000 + 7_000_000_000)

# 1. RESP2 pub/sub.
r2 = redis.Redis(port=port_a, protocol=2)
sender = redis.Redis(port=port_b)
ps = r2.pubsub()
ps.subscribe("sync:" + uid)
m = ps.get_message(timeout=5)
if not m or m["type"] != "subscribe":
    fail("RESP2 SUBSCRIBE confirmation: %r" % (m,))
seq = sender.execute_command("MSG.SEND", uid, "hello")
deadline = time.time() + 10
got = None
while time.time() < deadline and got is None:
    got = ps.get_message(timeout=1)
if not got or got["type"] != "message" or got["channel"] != ("sync:" + uid).encode():
    fail("RESP2 pub/sub notice: %r" % (got,))
print("ok: RESP2 SUBSCRIBE sync:<uid> -> pub/sub message %r" % (got["data"],))
ps.close()

# 2a. RESP3, the public API: PubSub.subscribe("sync:<uid>") works on protocol 3 too (Tern answers
#     SUBSCRIBE with push frames there, as Redis 7 does).
r3 = redis.Redis(port=port_a, protocol=3)
ps3 = r3.pubsub()
ps3.subscribe("sync:" + uid)
m = ps3.get_message(timeout=5)
if not m or m["type"] != "subscribe":
    fail("RESP3 SUBSCRIBE confirmation: %r" % (m,))
seq2 = sender.execute_command("MSG.SEND", uid, "again")
deadline = time.time() + 10
got = None
while time.time() < deadline and got is None:
    got = ps3.get_message(timeout=1)
if not got or got["type"] != "message" or got["channel"] != ("sync:" + uid).encode():
    fail("RESP3 pub/sub notice: %r" % (got,))
print("ok: RESP3 SUBSCRIBE sync:<uid> -> pub/sub message %r" % (got["data"],))
ps3.close()

# 2b. RESP3 SYNC.SUBSCRIBE: its `sync <uid> <seq>` pushes are not pub/sub messages, so redis-py's
#     public API drops them (a plain connection logs and discards pushes; PubSub cannot parse the
#     integer SYNC.SUBSCRIBE answers). Only the connection's parser hook reads them.
pushes = []
conn = redis.Connection(port=port_a, protocol=3)
conn.connect()
conn._parser.set_pubsub_push_handler(pushes.append)
conn.send_command("SYNC.SUBSCRIBE", uid)
reply = conn.read_response()
if reply != 1:
    fail("SYNC.SUBSCRIBE answered %r" % (reply,))
seq3 = sender.execute_command("MSG.SEND", uid, "third")
deadline = time.time() + 10
while time.time() < deadline and not pushes:
    if conn.can_read(timeout=0.5):
        conn.read_response(push_request=True)
if not pushes or pushes[0] != [b"sync", uid.encode(), seq3]:
    fail("RESP3 SYNC.SUBSCRIBE push: %r (expected sync %s %s)" % (pushes, uid, seq3))
print("ok: RESP3 SYNC.SUBSCRIBE -> push %r (through Connection._parser's push handler only)" % (pushes[0],))
conn.disconnect()

# 3. An idempotent send retried by the application (as redis-py's Retry would): same answer.
c = redis.Redis(port=port_a)
first = c.execute_command("MSG.SEND", uid, "once", "ID", "py-" + uid)
again = redis.Redis(port=port_b).execute_command("MSG.SEND", uid, "once", "ID", "py-" + uid)
if first != again:
    fail("MSG.SEND ID retry answered %r then %r" % (first, again))
key, msgs, gap = c.execute_command("MSG.SYNC", uid, "0")
if [m[2] for m in msgs].count(b"once") != 1:
    fail("inbox after a retried send: %r" % (msgs,))
print("ok: MSG.SEND ID retried on another node -> %r once" % first)
print("python redis-py %s: OK" % redis.__version__)
