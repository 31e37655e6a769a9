"""Compares two clusters: collections, options, indexes, views and every document byte for byte.

Usage: compare.py SOURCE_URI DESTINATION_URI. Exits 1 when they differ. `prepareUnique: false`
left by a unique-index conversion counts as absent.
"""
import sys

from bson import BSON
from pymongo import MongoClient

INTERNAL = {"admin", "local", "config", "clustersync_reserved_for_internal_use"}
a, b = MongoClient(sys.argv[1]), MongoClient(sys.argv[2])
problems, collections, documents = [], 0, 0


def norm(spec):
    return {k: v for k, v in spec.items() if k not in ("v", "ns") and not (k == "prepareUnique" and v is False)}


def key(doc):
    return BSON.encode({"_id": doc["_id"]})


for db in sorted(set(a.list_database_names()) | set(b.list_database_names())):
    if db in INTERNAL:
        continue
    left = {c["name"]: c for c in a[db].list_collections() if not c["name"].startswith("system.")}
    right = {c["name"]: c for c in b[db].list_collections() if not c["name"].startswith("system.")}
    for name in sorted(set(left) | set(right)):
        ns = f"{db}.{name}"
        if name not in right:
            problems.append(f"{ns}: missing on the destination")
            continue
        if name not in left:
            problems.append(f"{ns}: only on the destination")
            continue
        collections += 1
        if left[name].get("options") != right[name].get("options"):
            problems.append(f"{ns}: options differ: {left[name].get('options')} vs {right[name].get('options')}")
        if left[name].get("type") == "view":
            continue
        ia = sorted((norm(i) for i in a[db][name].list_indexes()), key=lambda i: i["name"])
        ib = sorted((norm(i) for i in b[db][name].list_indexes()), key=lambda i: i["name"])
        if ia != ib:
            problems.append(f"{ns}: indexes differ: {ia} vs {ib}")
        da = {key(d): BSON.encode(d) for d in a[db][name].find()}
        dbb = {key(d): BSON.encode(d) for d in b[db][name].find()}
        documents += len(da)
        diff = [k for k in set(da) | set(dbb) if da.get(k) != dbb.get(k)]
        if diff:
            problems.append(f"{ns}: {len(diff)} documents differ (source {len(da)}, destination {len(dbb)})")

print(f"compared {collections} collections/views and {documents} documents")
for p in problems:
    print("DIFFERENCE", p)
print("EQUAL" if not problems else f"{len(problems)} differences")
sys.exit(1 if problems else 0)
