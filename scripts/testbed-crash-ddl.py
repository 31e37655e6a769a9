#!/usr/bin/env python3
"""Shows a test-server (SecantusDB) crash-recovery bug the differential suite must avoid.

Two writers run inserts and index DDL (createIndexes, dropIndexes, renames) on a server started
with --sync-on-commit while a change stream watches; the server is SIGKILLed mid-run and
restarted. Then the index catalog is compared with the replay of the server's own change stream
(createIndexes adds, dropIndexes removes, rename moves, drop removes). Without the crash they
always agree; with DDL in flight at the crash they often do not: indexes the stream created are
missing, or indexes it dropped are back. No change event events seen before the crash is lost. On mongod
the catalog is recovered from the same journal as the oplog, so they cannot disagree.

Usage: .venv/bin/python scripts/testbed-crash-ddl.py TRIALS crash|nocrash
"""
import random, socket, subprocess, tempfile, time, sys, threading
from pymongo import MongoClient
CRASH=len(sys.argv)>2 and sys.argv[2]=="crash"
import os
BIN=os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),".venv/bin/secantusd-py")
s=socket.socket(); s.bind(("127.0.0.1",0)); port=s.getsockname()[1]; s.close()
store=tempfile.mkdtemp()
URI=f"mongodb://127.0.0.1:{port}/?directConnection=true"
def start():
    p=subprocess.Popen([BIN,"--host","127.0.0.1","--port",str(port),"--storage-path",store,"--sync-on-commit"],stdout=subprocess.DEVNULL,stderr=subprocess.DEVNULL)
    c=MongoClient(URI,serverSelectionTimeoutMS=3000)
    for _ in range(300):
        try: c.admin.command("ping"); return p,c
        except Exception: time.sleep(0.1)
def key(e):
    return (str(e["clusterTime"]), e["operationType"], e.get("ns",{}).get("coll"), str(e.get("documentKey")))
p,c=start()
specs=[("s_1_n_-1",[("s",1),("n",-1)]),("tags_1",[("tags",1)]),("n_1",[("n",1)])]
total_lost=0
DIFFERING=0
for t in range(int(sys.argv[1])):
    rng=random.Random(t); dbn=f"w{t}"
    t0=c[dbn].command("ping").get("operationTime")
    stop=threading.Event(); seen=[]
    def watch():
        cc=MongoClient(URI,serverSelectionTimeoutMS=1000)
        try:
            with cc[dbn].watch(start_at_operation_time=t0, show_expanded_events=True, max_await_time_ms=100) as st:
                while not stop.is_set():
                    e=st.try_next()
                    if e is not None: seen.append(key(e))
        except Exception: pass
    def work(seed):
        r=random.Random(seed); cc=MongoClient(URI,serverSelectionTimeoutMS=500); db=cc[dbn]
        while not stop.is_set():
            coll=f"c{r.randrange(6)}"; k=r.random()
            try:
                if k<0.6: db[coll].insert_one({"s":"x","n":r.randrange(100),"tags":["a"]})
                elif k<0.8:
                    name,kk=r.choice(specs); db[coll].create_index(kk,name=name)
                elif k<0.9: cc.admin.command("renameCollection",f"{dbn}.{coll}",to=f"{dbn}.c{r.randrange(6)}",dropTarget=True)
                else: db[coll].drop_index(r.choice(specs)[0])
            except Exception: time.sleep(0.01)
    th=[threading.Thread(target=watch)]+[threading.Thread(target=work,args=(t*10+i,)) for i in range(2)]
    for x in th: x.start()
    time.sleep(2+rng.random()*2)
    if CRASH: p.kill(); p.wait()
    stop.set()
    for x in th: x.join()
    if CRASH: p,c=start()
    after=set(); sim={}
    with c[dbn].watch(start_at_operation_time=t0, show_expanded_events=True) as st:
        while (e:=st.try_next()) is not None:
            after.add(key(e)); op=e["operationType"]; n=e.get("ns",{}).get("coll"); d=e.get("operationDescription",{})
            if op in ("insert","createIndexes","create"): sim.setdefault(n,{"_id_"})
            if op=="createIndexes": sim[n]|={i["name"] for i in d.get("indexes",[])}
            elif op=="dropIndexes": sim[n]-={i["name"] for i in d.get("indexes",[])}
            elif op=="drop": sim.pop(n,None)
            elif op=="rename":
                to=(e.get("to") or d.get("to"))["coll"]; sim[to]=sim.pop(n,{"_id_"})
    actual={n:set(c[dbn][n].index_information()) for n in c[dbn].list_collection_names()}
    mism={n:(sorted(sim.get(n,[])),sorted(actual.get(n,[]))) for n in set(sim)|set(actual) if sim.get(n)!=actual.get(n)}
    DIFFERING+=bool(mism)
    print("   index catalog vs the change stream replayed:", mism or "agree")
    lost=[k for k in seen if k not in after]
    total_lost+=len(lost)
    print(t, f"events seen before the crash {len(seen)}, in the stream after {len(after)}, seen then gone: {lost[:4]}", flush=True)
print("events seen before a crash and gone after it:", total_lost)
print("trials whose index catalog contradicts the change stream:", DIFFERING)
sys.exit(1 if DIFFERING else 0)
p.kill()
