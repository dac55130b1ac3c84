"""What payment services run against tallykv, unchanged: the `limits` rate-limiting library
(every strategy runs through Lua: SCRIPT LOAD/EVALSHA over counters, lists and sorted sets)
and redis-py's transactions, WATCH retry loops and Lock.

Usage: libraries.py standalone PORT | libraries.py cluster PORT [PORT...]
Exits non-zero with a message on the first wrong result.
"""

import sys
import threading
import time
import uuid

import redis
from limits import parse, storage, strategies

MODE = sys.argv[1]
PORTS = [int(p) for p in sys.argv[2:]]
# `standalone-db`: everything in numbered database 3 (the URL's /3, redis-py's db=3).
DB = 3 if MODE == "standalone-db" else 0


def client():
    if MODE == "cluster":
        return redis.RedisCluster(
            startup_nodes=[redis.cluster.ClusterNode("127.0.0.1", p) for p in PORTS],
            decode_responses=True,
        )
    return redis.Redis(port=PORTS[0], db=DB, decode_responses=True)


def limits_storage():
    if MODE == "cluster":
        nodes = ",".join(f"127.0.0.1:{p}" for p in PORTS)
        return storage.storage_from_string(f"redis+cluster://{nodes}")
    return storage.storage_from_string(f"redis://127.0.0.1:{PORTS[0]}/{DB}")


def check(cond, what):
    if not cond:
        raise SystemExit(f"FAILED: {what}")


def concurrently(n, fn):
    errors = []

    def run(i):
        try:
            fn(i)
        except Exception:  # noqa: BLE001 - reported below
            import traceback

            errors.append(traceback.format_exc(limit=4))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    check(not errors, "worker errors:\n" + "\n".join(errors[:2]))


def limits_strategies():
    st = limits_storage()
    check(st.check(), "limits storage reaches the server")
    for name, cls in [
        ("fixed window", strategies.FixedWindowRateLimiter),
        ("moving window", strategies.MovingWindowRateLimiter),
        ("sliding window counter", strategies.SlidingWindowCounterRateLimiter),
    ]:
        limiter = cls(st)
        item = parse("100/minute")
        who = f"card-{uuid.uuid4()}"
        # 8 workers race for 100 permits (cost 1 each, 40 tries each): exactly 100 succeed.
        granted = []
        lock = threading.Lock()

        def worker(_i, limiter=limiter, item=item, who=who):
            mine = 0
            for _ in range(40):
                if limiter.hit(item, who):
                    mine += 1
            with lock:
                granted.append(mine)

        concurrently(8, worker)
        check(sum(granted) == 100, f"{name}: {sum(granted)} hits granted of 100")
        check(not limiter.test(item, who), f"{name}: test() after exhaustion")
        stats = limiter.get_window_stats(item, who)
        check(stats.remaining == 0, f"{name}: remaining {stats.remaining}")
        check(stats.reset_time >= time.time() - 1, f"{name}: reset time {stats.reset_time}")
        # A cost above what is left is refused and takes nothing.
        other = f"merchant-{uuid.uuid4()}"
        check(limiter.hit(item, other, cost=60), f"{name}: first cost=60")
        check(not limiter.hit(item, other, cost=60), f"{name}: second cost=60 refused")
        if cls is strategies.FixedWindowRateLimiter:
            # The fixed window counts a refused hit too (INCRBY, then compare), as on Redis.
            check(not limiter.hit(item, other, cost=40), f"{name}: refused cost counted")
        else:
            check(limiter.hit(item, other, cost=40), f"{name}: cost=40 fits")
        check(limiter.get_window_stats(item, other).remaining == 0, f"{name}: costs add up")
        limiter.clear(item, other)
        check(limiter.get_window_stats(item, other).remaining == 100, f"{name}: clear")
        check(limiter.hit(item, other), f"{name}: hit after clear")


def redis_py_transactions():
    r = client()
    tag = "{tx}" if MODE == "cluster" else ""
    a, b = f"{tag}acct:a", f"{tag}acct:b"
    r.set(a, 1000)
    r.set(b, 0)

    def transfer(_i):
        c = client()
        for _ in range(50):
            if MODE == "cluster":
                with c.pipeline(transaction=True) as p:
                    p.decrby(a, 1)
                    p.incrby(b, 1)
                    p.execute()
            else:
                p = c.pipeline()  # the default: MULTI/EXEC
                p.decrby(a, 1)
                p.incrby(b, 1)
                p.execute()

    concurrently(8, transfer)
    check(int(r.get(a)) == 600 and int(r.get(b)) == 400, "pipeline transactions")

    # A non-transactional pipeline works too.
    p = r.pipeline(transaction=False)
    p.set(f"{tag}plain", 1)
    p.incr(f"{tag}plain")
    check(p.execute() == [True, 2], "pipeline(transaction=False)")

    # WATCH retry loops (optimistic check-and-set) lose no update.
    counter = f"{tag}cas"
    r.set(counter, 0)

    def cas(_i):
        c = client()
        for _ in range(25):
            # redis-py's cluster client takes WATCH only in a transactional pipeline.
            with c.pipeline(transaction=True) as p:
                while True:
                    try:
                        p.watch(counter)
                        v = int(p.get(counter))
                        p.multi()
                        p.set(counter, v + 1)
                        p.execute()
                        break
                    except redis.WatchError:
                        continue

    concurrently(8, cas)
    check(int(r.get(counter)) == 200, f"WATCH loops: {r.get(counter)}")


def redis_py_lock():
    r = client()
    name = "{lock}payment" if MODE == "cluster" else "lock:payment"
    total = {"n": 0}

    def critical(_i):
        c = client()
        for _ in range(10):
            with c.lock(name, timeout=10, blocking_timeout=30):
                v = total["n"]
                time.sleep(0.001)
                total["n"] = v + 1

    concurrently(8, critical)
    check(total["n"] == 80, f"Lock: {total['n']} of 80 critical sections")
    lock = r.lock(name, timeout=5)
    check(lock.acquire(blocking=False), "Lock acquire")
    check(not r.lock(name).acquire(blocking=False), "Lock held elsewhere")
    check(lock.extend(5), "Lock extend (Lua)")
    lock.release()
    check(r.lock(name).acquire(blocking=False), "Lock free after release")


limits_strategies()
redis_py_transactions()
redis_py_lock()
if DB:
    # Every key the libraries wrote is in that database, none in database 0.
    check(redis.Redis(port=PORTS[0], db=0).dbsize() == 0, "database 0 untouched")
    check(client().dbsize() > 0, f"keys in database {DB}")
print("ok")
