"""End to end, as users run it: the default `/start` (embedded verifier on) to `canCommit`,
against what a user would otherwise write (a naive script that lists every collection and
copies it with find/insert_many), side by side in one run on fresh server pairs. Reports;
asserts nothing.

Usage: .venv/bin/python scripts/bench_sync.py SHAPE
  SHAPE is `single:DOCS:BYTES` (one collection) or `many:DBS:COLLS:DOCS` (DBS databases of
  COLLS collections of DOCS documents each).
Environment: CLUSTERSYNC_BIN (default target/release/clustersync, else target/debug),
  BENCH_RUNS (default "naive,durable,default,noverify"), BENCH_DIR (server storage, default
  .testbed/bench-sync).
"""
import json
import os
import re
import resource
import subprocess
import sys
import time
import urllib.request

from pymongo import MongoClient
from bson.raw_bson import RawBSONDocument

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIR = os.environ.get("BENCH_DIR") or os.path.join(ROOT, ".testbed", "bench-sync")


def binary():
    b = os.environ.get("CLUSTERSYNC_BIN")
    if b:
        return b
    rel = os.path.join(ROOT, "target", "release", "clustersync")
    return rel if os.path.exists(rel) else os.path.join(ROOT, "target", "debug", "clustersync")


def testbed(*args):
    return subprocess.run([os.path.join(ROOT, "scripts", "testbed.sh"), *args], check=True,
                          capture_output=True, text=True).stdout.split()


def fresh_pair(directory=None):
    """Two new, empty servers with their storage under `directory` (default DIR)."""
    directory = directory or DIR
    testbed("stop", directory)
    subprocess.run(["rm", "-rf", directory], check=True)
    return testbed("start", "2", directory)


def seed(uri, shape):
    c = MongoClient(uri)
    kind = shape[0]
    if kind == "single":
        docs, size = int(shape[1]), int(shape[2])
        pad = "x" * max(0, size - 60)
        coll = c.bench.docs
        for start in range(0, docs, 5000):
            coll.insert_many([{"_id": i, "n": i, "pad": pad, "sub": {"a": i % 97}}
                              for i in range(start, min(docs, start + 5000))])
        return docs
    dbs, colls, docs = int(shape[1]), int(shape[2]), int(shape[3])
    for d in range(dbs):
        db = c[f"tenant{d:03d}"]
        for k in range(colls):
            db[f"c{k:04d}"].insert_many([{"_id": i, "n": i, "s": f"v{i}"} for i in range(docs)])
    return dbs * colls * docs


def progress(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/progress", timeout=10) as r:
        return json.load(r)["progress"]


def post(port, path, body):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/api/v1/{path}", data=json.dumps(body).encode(),
                                 method="POST")
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.load(r)


def cpu_of(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            parts = f.read().rsplit(")", 1)[1].split()
        return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")
    except OSError:
        return 0.0


def rss_peak(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_engine(src, dst, start_extra):
    port = free_port()
    log = open(os.path.join(DIR, "engine.log"), "w")
    engine = subprocess.Popen([binary(), "engine", "--cluster0", src, "--cluster1", dst, "--port", str(port),
                               "--verbosity", "INFO"], stdout=log, stderr=log)
    try:
        while True:
            try:
                if progress(port)["state"] == "IDLE":
                    break
            except OSError:
                pass
            time.sleep(0.05)
        t0 = time.time()
        post(port, "start", {"source": "cluster0", "destination": "cluster1", **start_extra})
        while True:
            p = progress(port)
            if p.get("canCommit"):
                break
            if p.get("syncError"):
                raise SystemExit(f"sync stopped: {p['syncError']}")
            time.sleep(0.05)
        secs = time.time() - t0
        # The cutover: /commit to COMMITTED is the window in which the application waits.
        t1 = time.time()
        post(port, "commit", {})
        while True:
            p = progress(port)
            if p.get("state") == "COMMITTED":
                break
            if p.get("syncError"):
                raise SystemExit(f"commit stopped: {p['syncError']}")
            time.sleep(0.05)
        commit = time.time() - t1
        return secs, cpu_of(engine.pid), rss_peak(engine.pid), commit, phases(log.name)
    finally:
        engine.kill()
        engine.wait()


PHASES = {
    "copy planned": "plan",
    "collection copy finished": "copy",
    "indexes built": "indexes",
    "verifier initial pass finished": "verifier pass",
}


def phases(path):
    """Seconds per phase, from the engine log's `took_ms` fields."""
    out = []
    with open(path) as f:
        for line in f:
            for msg, short in PHASES.items():
                m = re.search(r"took_ms\"?[=:](\d+)", line)
                if msg in line and m:
                    out.append(f"{short} {int(m.group(1)) / 1000:.1f}")
    return ", ".join(out)


def naive(src, dst, durable=False):
    """`durable`: the destination writes acknowledged as the engine's are (w:majority, j:true),
    so that a destination crash loses nothing the script counts as copied."""
    t0 = time.time()
    s = MongoClient(src, document_class=RawBSONDocument)
    d = MongoClient(dst, w="majority", journal=True) if durable else MongoClient(dst)
    for name in s.list_database_names():
        if name in ("admin", "config", "local"):
            continue
        for coll in s[name].list_collection_names():
            batch = []
            for doc in s[name][coll].find(batch_size=5000):
                batch.append(doc)
                if len(batch) == 5000:
                    d[name][coll].insert_many(batch, ordered=False)
                    batch = []
            if batch:
                d[name][coll].insert_many(batch, ordered=False)
    return time.time() - t0


def main():
    shape = sys.argv[1].split(":") if len(sys.argv) > 1 else ["single", "60000", "330"]
    runs = os.environ.get("BENCH_RUNS", "naive,durable,default,noverify").split(",")
    print(f"shape {':'.join(shape)}; engine {binary()}; {os.cpu_count()} cores; SecantusDB on loopback")
    rows = []
    for run in runs:
        src, dst = fresh_pair()
        docs = seed(src, shape)
        commit, split = None, ""
        if run == "naive":
            secs, cpu, rss = naive(src, dst), 0.0, 0.0
            name = "naive script (list, find/insert_many)"
        elif run == "durable":
            secs, cpu, rss = naive(src, dst, durable=True), 0.0, 0.0
            name = "naive script, durable writes (w:majority, j)"
        elif run == "default":
            secs, cpu, rss, commit, split = run_engine(src, dst, {})
            name = "clustersync, default /start to canCommit"
        else:
            secs, cpu, rss, commit, split = run_engine(src, dst, {"verification": {"enabled": False}})
            name = "clustersync, verification off"
        rows.append((name, secs, docs, cpu, rss, commit))
        print(f"  {name:45s} {secs:8.2f} s  {docs / secs:9.0f} docs/s  engine CPU {cpu:6.2f} s  peak RSS {rss:6.1f} MB"
              + (f"  commit {commit:.2f} s  phases: {split}" if commit is not None else ""), flush=True)
    base = rows[0][1]
    print("| run | seconds | docs/s | vs first | engine CPU s | peak RSS MB | /commit to COMMITTED s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, secs, docs, cpu, rss, commit in rows:
        c = f"{commit:.2f}" if commit is not None else "-"
        print(f"| {name} | {secs:.2f} | {docs / secs:,.0f} | {base / secs:.2f}x | {cpu:.2f} | {rss:.0f} | {c} |")
    testbed("stop", DIR)


if __name__ == "__main__":
    main()
