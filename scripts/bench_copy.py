"""Measures the initial copy: clustersync engine at each load level against a naive baseline
(a single-threaded find/insert_many loop that decodes and re-encodes every document, as a
hand-written script would). Reports; asserts nothing.

Usage: .venv/bin/python scripts/bench_copy.py [DOCS] [DOC_BYTES]   (defaults 100000, 1000)
Needs `cargo build` and `scripts/testbed.sh install` first (scripts/bench_copy.sh does both).
"""
import os
import subprocess
import sys
import time

from pymongo import MongoClient

import bench_sync
from bench_sync import post, progress, testbed

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
SIZE = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
DIR = os.path.join(ROOT, ".testbed", "bench")


def fresh_pair():
    return bench_sync.fresh_pair(DIR)


def seed(uri):
    coll = MongoClient(uri).bench.docs
    pad = "x" * max(0, SIZE - 60)
    for start in range(0, DOCS, 5000):
        coll.insert_many([{"_id": i, "n": i, "pad": pad, "sub": {"a": i % 97}} for i in range(start, min(DOCS, start + 5000))])
    stats = MongoClient(uri).bench.command("collStats", "docs")
    return stats["size"]


def run_engine(src, dst, level):
    port = 27990
    engine = subprocess.Popen([os.path.join(ROOT, "target", "debug", "clustersync"), "engine", "--cluster0", src,
                               "--cluster1", dst, "--port", str(port), "--loadLevel", str(level), "--verbosity", "WARN"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            try:
                if progress(port)["state"] == "IDLE":
                    break
            except OSError:
                pass
            time.sleep(0.1)
        t0 = time.time()
        post(port, "start", {"source": "cluster0", "destination": "cluster1", "buildIndexes": "never"})
        while progress(port)["info"] == "collection copy":
            time.sleep(0.05)
        return time.time() - t0
    finally:
        engine.kill()
        engine.wait()


def naive(src, dst):
    t0 = time.time()
    s, d = MongoClient(src).bench.docs, MongoClient(dst).bench.docs
    batch = []
    for doc in s.find():
        batch.append(doc)
        if len(batch) == 1000:
            d.insert_many(batch)
            batch = []
    if batch:
        d.insert_many(batch)
    return time.time() - t0


def main():
    print(f"initial copy of {DOCS} documents of ~{SIZE} bytes (SecantusDB on loopback, {os.cpu_count()} cores)")
    results = []
    for name, fn in [("naive find/insert_many, 1 stream", naive)] + [
            (f"clustersync engine, loadLevel {lvl}", lambda s, d, lvl=lvl: run_engine(s, d, lvl)) for lvl in (1, 2, 3, 4)]:
        src, dst = fresh_pair()
        size = seed(src)
        secs = fn(src, dst)
        copied = MongoClient(dst).bench.docs.estimated_document_count()
        results.append((name, secs, size / secs / 1e6, copied))
        print(f"  {name:40s} {secs:7.2f} s  {size / secs / 1e6:7.2f} MB/s  ({copied} docs on the destination)")
    testbed("stop", DIR)


if __name__ == "__main__":
    main()
