#!/usr/bin/env python3
"""Quantiles of a Prometheus histogram between two /metrics scrapes.

usage: hist_quantiles.py BEFORE.txt AFTER.txt METRIC [--within 0.05]
Prints: n=N p50_ms=X p99_ms=Y within_50ms=Z%
Quantiles are interpolated linearly inside a bucket, as Prometheus' histogram_quantile does,
so they are only as precise as the bucket bounds; within_<T> is exact when T is a bound.
"""

import argparse
import math
import re
import sys


def buckets(path, metric):
    out = {}
    pat = re.compile(re.escape(metric) + r'_bucket\{([^}]*)\}\s+(\S+)')
    for line in open(path):
        m = pat.match(line)
        if not m:
            continue
        le = re.search(r'le="([^"]+)"', m.group(1)).group(1)
        le = math.inf if le == "+Inf" else float(le)
        out[le] = out.get(le, 0.0) + float(m.group(2))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("before")
    ap.add_argument("after")
    ap.add_argument("metric")
    ap.add_argument("--within", type=float, default=0.05)
    a = ap.parse_args()
    b0, b1 = buckets(a.before, a.metric), buckets(a.after, a.metric)
    les = sorted(b1)
    cum = [(le, b1[le] - b0.get(le, 0.0)) for le in les]
    total = cum[-1][1] if cum else 0
    if total <= 0:
        print("n=0")
        return 1

    def q(p):
        rank = p * total
        prev_le, prev_c = 0.0, 0.0
        for le, c in cum:
            if c >= rank:
                if math.isinf(le):
                    return prev_le  # beyond the last finite bound
                if c == prev_c:
                    return le
                return prev_le + (le - prev_le) * (rank - prev_c) / (c - prev_c)
            prev_le, prev_c = le, c
        return math.inf

    within = next((c for le, c in cum if le >= a.within), total)
    print(
        f"n={int(total)} p50_ms={1000 * q(0.5):.1f} p99_ms={1000 * q(0.99):.1f} "
        f"within_{int(a.within * 1000)}ms={100 * within / total:.2f}%"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
