#!/usr/bin/env python3
"""Peak RSS and peak PSS of one `cannon-host bench` run, and what the RSS is made of.

    python3 bench/memory.py BIN "BENCH ARGS" [INTERVAL_S]

Runs `BIN -f bench/cannon-compose.yml bench BENCH ARGS --json` and samples the process's
/proc/PID/smaps_rollup every INTERVAL_S (default 0.05). RSS counts a page once per mapping
that maps it: an image page read by 16 pooled slots is 16 pages of RSS and one page of
memory. PSS divides each page by its mapping count, so for one process it is the memory the
process really holds. Prints the bench's own JSON line, then the peaks:
Example: python3 bench/memory.py target/release/cannon-host "words -n 1500 --drain --field text=a"
"""
import json, subprocess, sys, time

binary, args = sys.argv[1], sys.argv[2].split()
interval = float(sys.argv[3]) if len(sys.argv) > 3 else 0.05


def rollup(pid):
    try:
        text = open(f"/proc/{pid}/smaps_rollup").read()
    except OSError:
        return None
    kb = {}
    for line in text.splitlines()[1:]:
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            kb[key.strip()] = int(parts[0])
    return kb


proc = subprocess.Popen([binary, "-f", "bench/cannon-compose.yml", "bench", *args, "--json"],
                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
peak = {}
while proc.poll() is None:
    kb = rollup(proc.pid)
    if kb:
        # The sample with the highest RSS, and the highest PSS on its own.
        if kb.get("Rss", 0) > peak.get("Rss", 0):
            peak.update({k: v for k, v in kb.items() if k != "Pss"})
        peak["Pss"] = max(peak.get("Pss", 0), kb.get("Pss", 0))
    time.sleep(interval)
out = proc.stdout.read().strip().splitlines()
run = json.loads(out[-1]) if out else {}
print(json.dumps(run))
mib = lambda key: round(peak.get(key, 0) / 1024, 1)
print(f"peak RSS {mib('Rss')} MiB (anonymous {mib('Anonymous')}, shared {mib('Shared_Clean') + mib('Shared_Dirty')}, "
      f"private {mib('Private_Clean') + mib('Private_Dirty')}); peak PSS {mib('Pss')} MiB; "
      f"bench's own VmHWM {run.get('rss_mb')} MiB")
