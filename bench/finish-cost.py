#!/usr/bin/env python3
"""What the worker's checked finish costs Redis, per message, against the raw consumer's
unchecked writes (docs/performance.md, round 9). Redis's own CPU per command, from
INFO commandstats (request parsing and replies to the client not included).

    /tmp/peers/venv/bin/python bench/finish-cost.py [ROUNDS]     (from the repository root)

Needs redis-py (the venv bench/peers.sh makes) and a redis-server on 127.0.0.1:$AB_REDIS_PORT
(default 6411), which it FLUSHES. For each variant: 14,800 messages read by one consumer,
then finished 37 at a time (the size of a finish script's batch in `bench shout --drain`):
  checked      the finish script of host/src/broker/redis/finish.rs, as it is
  no-check     the same script without its XPENDING check (every message taken as held)
  no-xadd      the same script without its XADDs (what the Lua around them costs)
  empty        a script that returns at once (the arguments alone)
  unchecked    the raw consumer's way: a pipeline of XADDs and one XACK, no script"""
import os, re, sys

import redis

ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 3
REPO = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
source = open(os.path.join(REPO, "host/src/broker/redis/finish.rs")).read()
found = re.search(r'static FINISH.*?r"\n(.*?)",\n    \)', source, re.S)
if not found:
    sys.exit("bench/finish-cost.py: no FINISH script in finish.rs; update this script")
FINISH = found.group(1)
XADD = "added = redis.pcall('XADD', KEYS[2], 'MAXLEN', '~', maxlen, '*', unpack(ARGV, i + 1, i + 2 * n))"
for needle in ("if first ~= '' then", "local held = held_ids[id]", XADD):
    if needle not in FINISH:
        sys.exit(f"bench/finish-cost.py: the finish script changed ({needle!r} not found); update this script")
SCRIPTS = {
    "checked": FINISH,
    "no-check": FINISH.replace("if first ~= '' then", "if false then").replace(
        "local held = held_ids[id]", "local held = true"),
    "no-xadd": FINISH.replace(XADD, "added = 1"),
    "empty": "return 0",
}
R = redis.Redis(port=int(os.environ.get("AB_REDIS_PORT", "6411")))
BATCH, BATCHES = 37, 400


def held_messages():
    R.flushall()
    pipe = R.pipeline(transaction=False)
    for i in range(BATCH * BATCHES):
        pipe.xadd("d", {"text": f"hello world {i}", "user": f"u{i % 10}"})
    pipe.execute()
    R.xgroup_create("d", "g", "0")
    ids = []
    while reply := R.xreadgroup("g", "c", {"d": ">"}, count=1000):
        ids += [entry[0].decode() for entry in reply[0][1]]
    return ids


def usec(*commands):
    stats = R.info("commandstats")
    return sum(stats.get(f"cmdstat_{c}", {}).get("usec", 0) for c in commands)


for _ in range(ROUNDS):
    for name in [*SCRIPTS, "unchecked"]:
        ids = held_messages()
        R.config_resetstat()
        sha = None if name == "unchecked" else R.script_load(SCRIPTS[name])
        for k in range(BATCHES):
            batch = ids[k * BATCH:(k + 1) * BATCH]
            if sha is None:
                pipe = R.pipeline(transaction=False)
                for i in batch:
                    pipe.xadd("tb", {"cannon.id": i, "text": "HELLO WORLD " + i}, maxlen=100000, approximate=True)
                pipe.xack("d", "g", *batch)
                pipe.execute()
                continue
            args = ["g", "c", "100000"]
            for i in batch:
                args += [i, 1, 2, "cannon.id", i, "text", "HELLO WORLD " + i]
            args += [batch[0], batch[-1], BATCH * 4 + 256]
            R.evalsha(sha, 2, "d", "tb", *args)
        n = BATCH * BATCHES
        total = usec("xadd", "xack") if sha is None else usec("evalsha")
        inner = "" if sha is None else " ".join(f"{c} {usec(c) / n:.2f}" for c in ("xpending", "xadd", "xack"))
        print(f"{name:10s} redis µs per message {total / n:.2f}   {inner}")
    print()
