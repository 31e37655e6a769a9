#!/usr/bin/env python3
"""Shows a test-server (SecantusDB) ordering bug the differential workload must avoid.

A slow insert into t.c1 races `renameCollection t.c1 -> t.c5`. On mongod the collection lock
orders them, and the change stream's order is the data's order. On the test server, some trials
stream the insert *before* the rename (with the renamed collection's UUID) while the document
is stored in a new t.c1 created after the rename: the source contradicts its own change stream,
so no sync can reproduce it. Prints each trial; exits 1 if such a trial was seen.

Usage: .venv/bin/python scripts/testbed-rename-race.py [TRIALS]   (default 20)
"""
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

from pymongo import MongoClient

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def main():
    trials = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    port = free_port()
    server = subprocess.Popen(
        [os.path.join(ROOT, ".venv/bin/secantusd-py"), "--host", "127.0.0.1", "--port", str(port),
         "--storage-path", tempfile.mkdtemp(prefix="rename-race-")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    uri = f"mongodb://127.0.0.1:{port}/?directConnection=true"
    inconsistent = 0
    try:
        client = MongoClient(uri)
        for _ in range(150):
            try:
                client.admin.command("ping")
                break
            except Exception:
                time.sleep(0.2)
        db = client.t
        for trial in range(trials):
            db.drop_collection("c1")
            db.drop_collection("c5")
            db.c1.insert_one({"_id": "seed"})
            stream = db.watch(show_expanded_events=True)
            delay = 0.02 * (trial % 10)

            def insert():
                MongoClient(uri).t.c1.insert_one({"_id": "huge", "b": "H" * 16_000_000})

            def rename():
                time.sleep(delay)
                MongoClient(uri).admin.command("renameCollection", "t.c1", to="t.c5", dropTarget=True)

            threads = [threading.Thread(target=insert), threading.Thread(target=rename)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            ops = []
            while (ev := stream.try_next()) is not None:
                ops.append(ev["operationType"])
            stream.close()
            stored_in = "c1" if db.c1.find_one({"_id": "huge"}) else "c5"
            streamed_first = "insert" if ops.index("insert") < ops.index("rename") else "rename"
            # Insert streamed first: the rename must have carried it to c5.
            ok = (streamed_first == "insert") == (stored_in == "c5")
            inconsistent += not ok
            print(f"trial {trial}: stream {ops}, document stored in t.{stored_in}: "
                  f"{'consistent' if ok else 'INCONSISTENT with the stream'}", flush=True)
    finally:
        server.kill()
    print(f"{inconsistent} of {trials} trials inconsistent")
    sys.exit(1 if inconsistent else 0)


if __name__ == "__main__":
    main()
