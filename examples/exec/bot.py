#!/usr/bin/env python3
"""A program for the `exec` collector.

It writes COUNT messages as JSON lines on stdout, then reads the taskbacks that cannon writes
on its stdin, one JSON object per line, and reports each on stderr (which cannon logs).
After COUNT replies it exits, and cannon starts it again after a backoff.

    python3 bot.py [COUNT]
"""

import json
import sys

count = int(sys.argv[1]) if len(sys.argv) > 1 else 3

for i in range(count):
    print(json.dumps({"text": f"hello number {i}", "n": i}), flush=True)

replies = 0
for line in sys.stdin:
    taskback = json.loads(line)
    print(f"reply {replies + 1}/{count}: {taskback.get('text')}", file=sys.stderr, flush=True)
    replies += 1
    if replies == count:
        break
print("got every reply; exiting", file=sys.stderr, flush=True)
