#!/usr/bin/env python3
"""Interleaved A/B runs of `cannon-host bench`, medians and pair-by-pair ratios.

    python3 bench/ab.py PAIRS "BENCH ARGS" BIN_A BIN_B [BIN_C ...]

Run from the repository root; each run is `BIN -f bench/cannon-compose.yml bench BENCH ARGS
--json`, the binaries alternating (A, B, then B, A, ...). With AB_REDIS_PORT (default 6411)
naming a local redis-server (found by `INFO server`, as in
worker-drain.py), its CPU per message is read from /proc around each run.
Example: python3 bench/ab.py 4 "shout -n 50000 --drain --broker redis://127.0.0.1:6411" base new
"""
import json, os, resource, statistics as st, subprocess, sys

pairs, args, bins = int(sys.argv[1]), sys.argv[2].split(), sys.argv[3:]
port = os.environ.get("AB_REDIS_PORT", "6411")
info = subprocess.run(["redis-cli", "-p", port, "info", "server"], capture_output=True, text=True).stdout
found = [line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("process_id:")]


def redis_ticks():
    if not found:
        return 0
    fields = open(f"/proc/{found[0]}/stat").read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


runs = {b: [] for b in bins}
for i in range(pairs):
    for b in bins if i % 2 == 0 else bins[::-1]:
        before = redis_ticks()
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        out = subprocess.run([b, "-f", "bench/cannon-compose.yml", "bench", *args, "--json"], capture_output=True, text=True)
        after = redis_ticks()
        try:
            run = json.loads(out.stdout.strip().splitlines()[-1])
        except (IndexError, json.JSONDecodeError):
            print("failed:", b, out.stderr[-500:])
            continue
        run["redis_us"] = (after - before) * 1e6 / os.sysconf("SC_CLK_TCK") / run["messages"]
        # The process's CPU from its rusage, start-up included: the same reading for every build,
        # and the only one for a build older than bench's own cpu_us.
        done = resource.getrusage(resource.RUSAGE_CHILDREN)
        spent = done.ru_utime + done.ru_stime - usage.ru_utime - usage.ru_stime
        run["rusage_us"] = round(spent * 1e6 / run["messages"], 1)
        run.setdefault("cpu_us", run["rusage_us"])
        runs[b].append(run)
        print(os.path.basename(b), run["msgs_per_s"], "cpu_us", run["cpu_us"], "redis_us", round(run["redis_us"], 1),
              "rusage_us", run["rusage_us"], "rss_mb", run["rss_mb"], "p50", run["p50_ms"], "p99", run["p99_ms"], flush=True)


def med(b, key):
    return st.median(r[key] for r in runs[b])


for b in bins:
    m = [r["msgs_per_s"] for r in runs[b]]
    print(f"{os.path.basename(b)}: msg/s {st.median(m):.0f} [{min(m):.0f}-{max(m):.0f}] cpu_us {med(b, 'cpu_us'):.1f} "
          f"redis_us {med(b, 'redis_us'):.1f} rss_mb {med(b, 'rss_mb')} p50 {med(b, 'p50_ms')} p99 {med(b, 'p99_ms')}")
a = runs[bins[0]]
for b in bins[1:]:
    ratio = [y["msgs_per_s"] / x["msgs_per_s"] for x, y in zip(a, runs[b])]
    cpu = [y["cpu_us"] / x["cpu_us"] for x, y in zip(a, runs[b])]
    whole = [y["rusage_us"] / x["rusage_us"] for x, y in zip(a, runs[b])]
    print(f"{os.path.basename(b)}/{os.path.basename(bins[0])}: msg/s {st.median(ratio):.3f} "
          f"[{min(ratio):.3f}-{max(ratio):.3f}], cpu {st.median(cpu):.3f}, rusage {st.median(whole):.3f}")
