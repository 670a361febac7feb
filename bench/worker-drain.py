#!/usr/bin/env python3
"""The worker alone: N messages queued on a local Redis, then `cannon-host run shout --role
worker` started; prints its drain rate and the CPU per message of the worker and of Redis.

    /tmp/peers/venv/bin/python bench/worker-drain.py BIN [N] [CONCURRENCY]

Needs redis-py (the venv that bench/peers.sh makes has it), a redis-server on
127.0.0.1:$AB_REDIS_PORT (default 6411), and the guests built into app/ ($AB_APP to use another
directory)."""
import os, subprocess, sys, tempfile, time

import redis

BIN = sys.argv[1]
N = int(sys.argv[2]) if len(sys.argv) > 2 else 50000
CONC = int(sys.argv[3]) if len(sys.argv) > 3 else 16
PORT = int(os.environ.get("AB_REDIS_PORT", "6411"))
APP = os.environ.get("AB_APP") or os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "app"))
R = redis.Redis(port=PORT)
NS = f"wd{os.getpid()}"
DATA, TB = f"{{{NS}:shout}}:data", f"{{{NS}:shout}}:taskback"
compose = os.path.join(tempfile.mkdtemp(), "cannon-compose.yml")
with open(compose, "w") as f:
    f.write(f"namespace: {NS}\nbroker: redis://127.0.0.1:{PORT}\napp_dir: {APP}\nservices:\n  shout:\n"
            f"    workers: {{ concurrency: {CONC} }}\n    tasks:\n      - file: shout\n"
            f"        conf: {{ kwargs: {{ field: text }} }}\n")
pipe = R.pipeline(transaction=False)
for i in range(N):
    pipe.xadd(DATA, {"text": f"hello world {i}", "user": f"u{i % 10}"})
    if i % 500 == 499:
        pipe.execute()
pipe.execute()
redis_pid = int(R.info("server")["process_id"])
tick = os.sysconf("SC_CLK_TCK")


def cpu_s(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / tick


def answered():
    """Taskbacks written so far: entries ever added, as the stream is trimmed past stream.maxlen."""
    try:
        return R.xinfo_stream(TB)["entries-added"]
    except redis.ResponseError:  # no taskback yet
        return 0


worker = subprocess.Popen([BIN, "-f", compose, "run", "shout", "--role", "worker"], stderr=subprocess.DEVNULL)
try:
    while answered() == 0:
        time.sleep(0.001)
    t0, r0, w0, n0 = time.perf_counter(), cpu_s(redis_pid), cpu_s(worker.pid), answered()
    while answered() < N:
        time.sleep(0.01)
    t1, r1, w1 = time.perf_counter(), cpu_s(redis_pid), cpu_s(worker.pid)
finally:
    worker.terminate()
    worker.wait()
    for k in R.scan_iter(f"{{{NS}:*"):
        R.delete(k)
n = N - n0
print(f"{os.path.basename(BIN)} msg/s {n / (t1 - t0):.0f} worker_us {(w1 - w0) * 1e6 / n:.1f} redis_us {(r1 - r0) * 1e6 / n:.1f}")
