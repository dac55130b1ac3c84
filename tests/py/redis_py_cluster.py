"""redis-py's cluster client against a tallykv cluster, as a new user would use it.

Run by tests/redis_py.rs with the nodes' ports as arguments; exits non-zero with a message
when something a redis-py user relies on does not hold: every node that leads slot groups is
a primary, and what redis-py sends to every primary covers each key once: scan_iter, KEYS
and DBSIZE with target_nodes=PRIMARIES (redis-py sends plain KEYS and DBSIZE to its default
node only, against any cluster), and FLUSHALL.
"""

import sys

from redis.cluster import ClusterNode, RedisCluster


def merged(reply):
    """KEYS over several nodes: redis-py merges the lists, or (some versions) answers per node."""
    if isinstance(reply, dict):
        return [k for keys in reply.values() for k in keys]
    return list(reply)


def summed(reply):
    """DBSIZE over several nodes: redis-py sums, or (some versions) answers per node."""
    if isinstance(reply, dict):
        return sum(reply.values())
    return reply


def main(ports):
    rc = RedisCluster(
        startup_nodes=[ClusterNode("127.0.0.1", p) for p in ports],
        decode_responses=True,
    )
    primaries = sorted(n.port for n in rc.get_primaries())
    if primaries != sorted(ports):
        sys.exit(f"redis-py sees primaries {primaries}, the cluster has {sorted(ports)}")
    keys = {f"pykey:{i}" for i in range(300)}
    for k in keys:
        rc.set(k, "v")
    scanned = list(rc.scan_iter(match="pykey:*", count=50))
    if sorted(scanned) != sorted(keys):
        sys.exit(f"scan_iter found {len(scanned)} keys ({len(set(scanned))} distinct), not 300")
    listed = merged(rc.keys("pykey:*", target_nodes=RedisCluster.PRIMARIES))
    if sorted(listed) != sorted(keys):
        sys.exit(f"KEYS on every primary found {len(listed)} keys, not 300")
    size = summed(rc.dbsize(target_nodes=RedisCluster.PRIMARIES))
    if size != 300:
        sys.exit(f"DBSIZE summed over the primaries says {size}, not 300")
    rc.flushall()
    size = summed(rc.dbsize(target_nodes=RedisCluster.PRIMARIES))
    if size != 0:
        sys.exit(f"DBSIZE says {size} after FLUSHALL")
    left = [k for k in keys if rc.get(k) is not None]
    if left:
        sys.exit(f"{len(left)} keys left after FLUSHALL, e.g. {left[:3]}")
    print("ok")


if __name__ == "__main__":
    main([int(p) for p in sys.argv[1:]])
