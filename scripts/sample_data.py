"""Seeds a small, varied sample dataset for the quick start (run with the testbed venv's python)."""
import datetime
import random
import sys

from bson import Decimal128, ObjectId
from pymongo import MongoClient

uri = sys.argv[1]
docs = int(sys.argv[2]) if len(sys.argv) > 2 else 20000
c = MongoClient(uri)
rng = random.Random(7)

shop = c.shop
shop.customers.insert_many(
    [{"_id": i, "name": f"customer {i}", "email": f"c{i}@example.com",
      "since": datetime.datetime(2020, 1, 1) + datetime.timedelta(days=i % 1500),
      "tags": rng.sample(["gold", "silver", "eu", "us", "b2b"], 2)} for i in range(docs // 4)])
shop.customers.create_index("email", unique=True)
shop.orders.insert_many(
    [{"_id": ObjectId(), "customer": rng.randrange(docs // 4), "total": Decimal128(f"{rng.randrange(100, 99999) / 100:.2f}"),
      "lines": [{"sku": f"sku-{rng.randrange(500)}", "qty": rng.randrange(1, 5)} for _ in range(rng.randrange(1, 4))],
      "at": datetime.datetime(2026, 1, 1) + datetime.timedelta(minutes=i)} for i in range(docs)])
shop.orders.create_index([("customer", 1), ("at", -1)])
shop.create_collection("events", capped=True, size=1 << 20)
shop.events.insert_many([{"kind": "login", "n": i} for i in range(200)])
shop.command("create", "big_orders", viewOn="orders", pipeline=[{"$match": {"total": {"$gt": Decimal128("500")}}}])
c.inventory.items.insert_many([{"_id": f"sku-{i}", "stock": rng.randrange(100)} for i in range(500)])
c.inventory.items.create_index("stock", partialFilterExpression={"stock": {"$gt": 10}})
print(f"seeded shop.customers ({docs // 4}), shop.orders ({docs}), shop.events (capped), shop.big_orders (view), inventory.items (500)")
