"""wordstats: word statistics over the message field `text`.

Results: `words` (word count), `chars` (character count of `text`), `top` (the most
frequent words, most frequent first, ties in order of first appearance, as
"word:count" joined by ", "). Config: `top_n` (default 3). Logs one info line.
"""
import re
from collections import Counter

from cannon_guest import config, log, task

WORD = re.compile(r"[\w']+")


@task
def run(msg, results):
    text = msg.get("text", "")
    top_n = max(0, config.get_int("top_n", 3))
    words = [w.strip("'").lower() for w in WORD.findall(text)]
    words = [w for w in words if w]
    counts = Counter(words)  # insertion-ordered, and sorted() is stable: ties keep first appearance
    # Not counts.most_common(n): it imports heapq lazily, and componentize-py bundles only
    # the modules imported while the component is built (see docs/guests.md).
    top = sorted(counts.items(), key=lambda kv: -kv[1])[:top_n]
    log.info(f"wordstats: {len(words)} words, {len(counts)} distinct, top_n={top_n}")
    return {
        "words": len(words),
        "chars": len(text),
        "top": ", ".join(f"{w}:{n}" for w, n in top),
    }
