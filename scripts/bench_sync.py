"""End to end, as users run it: the default `/start` (embedded verifier on) to `canCommit`,
against what a user would otherwise write (a naive script that lists every collection and
copies it with find/insert_many), side by side in one run on fresh server pairs. Reports;
asserts nothing.

Usage: .venv/bin/python scripts/bench_sync.py SHAPE[@RUNS] [SHAPE[@RUNS]...]
  SHAPE is `single:DOCS:BYTES` (one collection) or `many:DBS:COLLS:DOCS` (DBS databases of
  COLLS collections of DOCS documents each); `@RUNS` (comma-separated) replaces BENCH_RUNS for
  that shape.
Environment: CLUSTERSYNC_BIN (default target/release/clustersync, else target/debug),
  BENCH_RUNS (default "raw,naive,durable,default,noverify"), BENCH_DIR (server storage,
  default .testbed/bench-sync).

Runs, each on a fresh server pair whose source holds the same data:
  raw       the destination's best raw ingest: every document read into memory first (not
            timed), then unordered insert_many of 5,000 from 1 stream and from 4 (the better
            is reported)
  naive     a script that lists every collection and copies it with find/insert_many
  durable   the same with every batch journaled (w: majority, j: true), as a script must
            write to count a batch as copied across a destination crash (the engine journals
            only the records of what it copied, each after the documents it covers)
  default   clustersync engine, default /start to canCommit (embedded verifier on)
  noverify  the same with "verification": {"enabled": false}
The source is seeded once per shape and copied from a stopped server's storage for each run.
"""
import json
import os
import shutil
import threading
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


def seeded_pair(shape):
    """A fresh pair whose source holds `shape`'s data. Seeding 1,000,000 documents takes
    minutes on the test server: the source's storage is kept from the first seeding (in a
    template beside the pair) and copied for every later run."""
    pair = os.path.join(DIR, "pair")
    template = os.path.join(DIR, "template-" + "-".join(shape))
    testbed("stop", pair)
    shutil.rmtree(pair, ignore_errors=True)
    if not os.path.exists(os.path.join(template, "docs")):
        shutil.rmtree(template, ignore_errors=True)
        src, _ = testbed("start", "2", pair)
        docs = seed(src, shape)
        testbed("stop", pair)
        shutil.copytree(os.path.join(pair, "server0", "data"), os.path.join(template, "data"))
        with open(os.path.join(template, "docs"), "w") as f:
            f.write(str(docs))
        shutil.rmtree(pair)
    os.makedirs(os.path.join(pair, "server0"))
    shutil.copytree(os.path.join(template, "data"), os.path.join(pair, "server0", "data"))
    with open(os.path.join(template, "docs")) as f:
        docs = int(f.read())
    src, dst = testbed("start", "2", pair)
    return src, dst, docs


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


def server_pid(uri):
    """The test server listening on `uri`'s port (one process each)."""
    port = re.search(r":(\d+)/", uri).group(1)
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if b"--port" in argv and argv.index(b"--port") + 1 < len(argv) and argv[argv.index(b"--port") + 1] == port.encode():
            return int(pid)
    return None


class Servers:
    """CPU seconds the source and destination servers spend between `start()` and `stop()`:
    where the time of a run goes (on 2 cores, a run whose servers keep both busy can only
    get faster by asking less of them)."""

    def __init__(self, src, dst):
        self.pids = (server_pid(src), server_pid(dst))
        self.start()

    def start(self):
        self.t0, self.at = time.time(), [cpu_of(p) if p else 0.0 for p in self.pids]

    def stop(self):
        wall = time.time() - self.t0
        self.cpu = [cpu_of(p) - a if p else 0.0 for p, a in zip(self.pids, self.at)]
        self.wall = wall
        return self.cpu


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


def run_engine(src, dst, start_extra, name="engine", servers=None):
    """`name`: the engine's log is kept as DIR/NAME.log; `servers` (a `Servers`) is started
    at /start and stopped at canCommit."""
    port = free_port()
    log = open(os.path.join(DIR, f"{name}.log"), "w")
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
        if servers:
            servers.start()
        post(port, "start", {"source": "cluster0", "destination": "cluster1", **start_extra})
        while True:
            p = progress(port)
            if p.get("canCommit"):
                break
            if p.get("syncError"):
                raise SystemExit(f"sync stopped: {p['syncError']}")
            time.sleep(0.05)
        secs = time.time() - t0
        cpu = cpu_of(engine.pid)
        if servers:
            servers.stop()
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
        return secs, cpu, rss_peak(engine.pid), commit, phases(log.name)
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
    out, seen = [], set()
    with open(path) as f:
        for line in f:
            for msg, short in PHASES.items():
                m = re.search(r"took_ms\"?[=:](\d+)", line)
                # The first of each: the commit runs the verifier's pass again, over nothing.
                if msg in line and m and short not in seen:
                    seen.add(short)
                    out.append(f"{short} {int(m.group(1)) / 1000:.1f}")
    return ", ".join(out)


def naive(src, dst, durable=False):
    """`durable`: every batch acknowledged w:majority, j:true, so that a destination crash
    loses nothing the script counts as copied."""
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


def read_all(src):
    """Every collection's documents, as raw BSON, in memory."""
    s = MongoClient(src, document_class=RawBSONDocument)
    out = []
    for name in s.list_database_names():
        if name in ("admin", "config", "local"):
            continue
        for coll in s[name].list_collection_names():
            out.append((name, coll, list(s[name][coll].find(batch_size=5000))))
    return out


def raw_ingest(dst, data, streams):
    """Unordered insert_many of 5,000 documents into an empty destination, from `streams`
    threads sharing the batches of every collection."""
    d = MongoClient(dst)
    batches = [(name, coll, docs[i:i + 5000]) for name, coll, docs in data for i in range(0, len(docs), 5000)]
    lock = threading.Lock()

    def writer():
        while True:
            with lock:
                if not batches:
                    return
                name, coll, batch = batches.pop()
            d[name][coll].insert_many(batch, ordered=False)

    t0 = time.time()
    threads = [threading.Thread(target=writer) for _ in range(streams)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.time() - t0


def raw(shape):
    """The better of 1 and 4 streams, each into a fresh, empty destination (the source is read
    once)."""
    src, dst, docs = seeded_pair(shape)
    data = read_all(src)
    spare = os.path.join(DIR, "spare")
    best = None
    for streams in (1, 4):
        if streams > 1:
            testbed("stop", spare)
            shutil.rmtree(spare, ignore_errors=True)
            (dst,) = testbed("start", "1", spare)
        secs = raw_ingest(dst, data, streams)
        print(f"    raw ingest, {streams} stream(s): {secs:.2f} s", flush=True)
        if best is None or secs < best[0]:
            best = (secs, streams)
    testbed("stop", spare)
    return best[0], docs, best[1]


NAMES = {
    "raw": "destination's best raw ingest",
    "naive": "naive script (list, find/insert_many)",
    "durable": "naive script, durable writes (w:majority, j)",
    "default": "clustersync, default /start to canCommit",
    "noverify": "clustersync, verification off",
}


def bench(shape, runs):
    print(f"shape {':'.join(shape)}; engine {binary()}; {os.cpu_count()} cores; SecantusDB on loopback", flush=True)
    rows = {}
    for run in runs:
        commit, split, cpu, rss, note, servers = None, "", 0.0, 0.0, "", None
        if run == "raw":
            secs, docs, streams = raw(shape)
            note = f"{streams} stream(s)"
        else:
            src, dst, docs = seeded_pair(shape)
            servers = Servers(src, dst)
            if run in ("naive", "durable"):
                own = resource.getrusage(resource.RUSAGE_SELF)
                secs = naive(src, dst, durable=run == "durable")
                servers.stop()
                after = resource.getrusage(resource.RUSAGE_SELF)
                # The script's own CPU, in the engine's column.
                cpu = after.ru_utime + after.ru_stime - own.ru_utime - own.ru_stime
            elif run == "default":
                secs, cpu, rss, commit, split = run_engine(src, dst, {}, f"engine-{'-'.join(shape)}-{run}", servers)
            elif run == "noverify":
                secs, cpu, rss, commit, split = run_engine(src, dst, {"verification": {"enabled": False}},
                                                               f"engine-{'-'.join(shape)}-{run}", servers)
            else:
                raise SystemExit(f"unknown run {run!r} (raw, naive, durable, default, noverify)")
        rows[run] = (secs, docs, cpu, rss, commit, split, note, servers and servers.cpu)
        busy = ""
        if servers:
            s_cpu, d_cpu = servers.cpu
            # Share of the machine's cores busy over the run (servers, and the engine or script).
            busy = (f"  CPU s: source {s_cpu:.1f}, destination {d_cpu:.1f}, "
                    f"{'engine' if commit is not None else 'script'} {cpu:.1f} "
                    f"({(s_cpu + d_cpu + cpu) / (secs * os.cpu_count()) * 100:.0f}% of {os.cpu_count()} cores)")
        print(f"  {NAMES[run]:47s} {secs:8.2f} s  {docs / secs:9.0f} docs/s"
              + (f"  peak RSS {rss:6.1f} MB  commit {commit:.2f} s  phases: {split}"
                 if commit is not None else f"  {note}") + busy, flush=True)
    testbed("stop", os.path.join(DIR, "pair"))
    return rows


def summary(results):
    """One line per shape: every run's seconds, and the engine's ratios to the baselines
    (higher is faster: baseline seconds / engine seconds)."""
    print()
    print("| shape | raw ingest s | naive s | durable naive s | default s | default vs naive | default vs raw | "
          "off s | off vs raw | s per 1,000 collections (naive / default) | engine CPU s per million docs | "
          "peak RSS MB | /commit s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|")
    for shape, rows in results:
        def secs(run):
            return rows[run][0] if run in rows else None

        def cell(v, fmt="{:.2f}"):
            return fmt.format(v) if v is not None else "-"

        def ratio(base, run):
            b, r = secs(base), secs(run)
            return f"{b / r:.2f}x" if b and r else "-"

        per_k = "-"
        if shape[0] == "many":
            colls = int(shape[1]) * int(shape[2]) / 1000
            per_k = f"{cell(secs('naive') and secs('naive') / colls)} / {cell(secs('default') and secs('default') / colls)}"
        d = rows.get("default")
        cpu_m = f"{d[2] * 1e6 / d[1]:.1f}" if d else "-"
        print(f"| `{':'.join(shape)}` | {cell(secs('raw'))} | {cell(secs('naive'))} | {cell(secs('durable'))} | "
              f"{cell(secs('default'))} | {ratio('naive', 'default')} | {ratio('raw', 'default')} | "
              f"{cell(secs('noverify'))} | {ratio('raw', 'noverify')} | {per_k} | {cpu_m} | "
              f"{cell(d and d[3], '{:.0f}')} | {cell(d and d[4])} |")


def main():
    runs = os.environ.get("BENCH_RUNS", "raw,naive,durable,default,noverify").split(",")
    results = []
    for arg in sys.argv[1:] or ["single:60000:330"]:
        # SHAPE@RUNS: this shape's own runs.
        shape, _, own = arg.partition("@")
        shape = shape.split(":")
        results.append((shape, bench(shape, own.split(",") if own else runs)))
    summary(results)
    profile(results)


def profile(results):
    """Where each run's time went: CPU seconds of the source server, the destination server
    and the engine (or script), against the run's wall time on this machine's cores."""
    print()
    print("| shape | run | wall s | source server CPU s | destination server CPU s | engine/script CPU s | "
          "cores busy |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for shape, rows in results:
        for run, row in rows.items():
            secs, cpu, servers = row[0], row[2], row[7]
            if not servers:
                continue
            s_cpu, d_cpu = servers
            print(f"| `{':'.join(shape)}` | {run} | {secs:.2f} | {s_cpu:.2f} | {d_cpu:.2f} | {cpu:.2f} | "
                  f"{(s_cpu + d_cpu + cpu) / secs:.2f} of {os.cpu_count()} |")


if __name__ == "__main__":
    main()
