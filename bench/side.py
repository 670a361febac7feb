#!/usr/bin/env python3
"""The peers' drain (../shared/peers) for cannon binaries and the raw redis-py consumer,
interleaved, with where the CPU goes: between the first and the last answer, the machine's
busy time (/proc/stat) and the CPU of the worker(s), of redis-server and of the harness's
reader, each per message (docs/performance.md, round 7).

    python3 bench/side.py ROUNDS BIN[@APP_DIR] [BIN[@APP_DIR] ...]   (from the repository root; ~40 s a run)

`BIN@APP_DIR` runs that binary with the components in APP_DIR instead of app/ (two builds of
the same guests side by side).

Copies the harness to /tmp/side, rewrites cannon's key names as bench/peers.sh does, adds the
readings, and uses the harness's venv in /tmp/peers (made by bench/peers.sh if missing)."""
import json, os, shutil, subprocess, sys

rounds = int(sys.argv[1])
bins = [(os.path.realpath(b), os.path.realpath(a) if a else None) for b, _, a in (x.partition("@") for x in sys.argv[2:])]
repo = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
peers, work = os.path.join(repo, "..", "shared", "peers"), "/tmp/side"
if not os.path.exists("/tmp/peers/venv/bin/python"):
    sys.exit("bench/side.py: no /tmp/peers/venv; run bench/peers.sh once first")
shutil.rmtree(work, ignore_errors=True)
shutil.copytree(peers, work)
os.symlink("/tmp/peers/venv", os.path.join(work, "venv"))
HELPER = '''
def _busy():
    v = list(map(int, open("/proc/stat").readline().split()[1:]))
    return sum(v) - v[3] - v[4]
def _cpu(pid):
    try:
        t = psutil.Process(pid).cpu_times(); return t.user + t.system
    except Exception:
        return 0.0
def _readings(R, pids):
    return (_busy(), sum(_cpu(p) for p in pids), _cpu(int(R.info("server")["process_id"])), time.process_time())
def _per_msg(a, b, n):
    return dict(busy_us=round((b[0] - a[0]) * 1e6 / os.sysconf("SC_CLK_TCK") / n, 1),
                worker_us=round((b[1] - a[1]) * 1e6 / n, 1), redis_us=round((b[2] - a[2]) * 1e6 / n, 1),
                reader_us=round((b[3] - a[3]) * 1e6 / n, 1))
'''


def patch(name, edits):
    path = os.path.join(work, name)
    text = open(path).read()
    for old, new in edits:
        if old not in text:
            sys.exit(f"bench/side.py: {name} changed ({old.strip()[:40]!r} not found); update this script")
        text = text.replace(old, new, 1)
    open(path, "w").write(text)


patch("cannon_drain.py", [
    ('f"{NS}:shout:data", f"{NS}:shout:taskback"', 'f"{{{NS}:shout}}:data", f"{{{NS}:shout}}:taskback"'),
    ('f"{NS}:shout:dead"', 'f"{{{NS}:shout}}:dead"'),
    ("import psutil, redis\n", "import psutil, redis\n" + HELPER),
    ("    t_first = t_first or now\n", "    if t_first is None:\n        r0 = _readings(R, [p.pid])\n    t_first = t_first or now\n"),
    ("t_last = time.perf_counter()\n", "t_last = time.perf_counter()\nr1 = _readings(R, [p.pid])\n"),
    ("           peak_rss_total_mb=round(peak / 2**20, 1))", "           peak_rss_total_mb=round(peak / 2**20, 1), **_per_msg(r0, r1, N))"),
])
patch("bench.py", [
    ("import jobs\n", "import jobs\n" + HELPER),
    ("        t_ready = time.perf_counter()\n", "        t_ready = time.perf_counter()\n        r0 = _readings(R, [p.pid for p in procs])\n"),
    ("        results = [got[i] for i in range(N)]\n", "        cpu = _per_msg(r0, _readings(R, [p.pid for p in procs]), N)\n        results = [got[i] for i in range(N)]\n"),
    ("max_procs_seen=rss.max_procs)\n    return out", "max_procs_seen=rss.max_procs)\n    if isinstance(a, Raw): out.update(cpu)\n    return out"),
])
if subprocess.run(["redis-cli", "-p", "6400", "ping"], capture_output=True).returncode != 0:
    subprocess.run(["redis-server", "--port", "6400", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                    "--daemonize", "yes"], check=True, stdout=subprocess.DEVNULL)
py = os.path.join(work, "venv", "bin", "python")
runs = [(os.path.basename(os.path.dirname(b)) + "/" + os.path.basename(b) + (f"@{a}" if a else ""),
         [py, "cannon_drain.py", b, a or os.path.join(repo, "app"), "20000", "16"]) for b, a in bins]
runs.append(("raw", [py, "bench.py", "raw-inproc", "throughput", "20000"]))
for _ in range(rounds):
    for name, cmd in runs:
        out = subprocess.run(cmd, cwd=work, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        d = json.loads(out)
        print(name, d["drain_jobs_per_s"], *(f"{k}={d[k]}" for k in ("busy_us", "worker_us", "redis_us", "reader_us")), flush=True)
