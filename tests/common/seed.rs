//! A fixed, deterministic source dataset exercising BSON types, big documents,
//! odd `_id`s, collection options, index kinds and views.
//!
//! `seed_a`:
//! - `types`: `all_types` (a field of every BSON type with edge values: ±0.0, NaN,
//!   ±inf, i32/i64 min/max, dates at year 1 / 1938 / 1970 / 9999, binary subtypes
//!   0-7 and 0x80, regex with options, code, code-with-scope, nested
//!   `Timestamp(0,0)`, Decimal128 NaN/-0/-inf/extremes, MinKey, MaxKey, symbol,
//!   undefined, 1 as int32/int64/double/decimal), one `t_<field>` doc per field of
//!   it, `deep` (90 nesting levels), `long_arrays` (10k ints, 1k subdocs),
//!   `odd_keys` (dotted, `$`-prefixed, empty and unicode field names) and
//!   `t_dbpointer` (a DBPointer spliced in as raw bytes).
//!   NB: SecantusDB stores symbol as string, undefined as null and DBPointer as a
//!   `{$ref, $id}` document (mongod would keep them).
//! - `big`: 2 docs (`_id` 1, 2) with a [`BIG_DOC_PAYLOAD`]-byte binary (~15.8 MiB).
//! - `mixed_ids`: `_id`s of 19 types/shapes ([`mixed_ids`]), incl. `{a,b}` vs `{b,a}`.
//! - `many`: [`MANY_DOCS`] small docs with int32 `_id` 0..5000.
//! - `empty` (no documents), `name.with.dots`, `ünïcödé_名前`.
//!
//! `seed_b`:
//! - `capped` (size 1 MiB, max 1000), `validated_warn` ($jsonSchema, moderate/warn,
//!   holds an invalid doc), `validated_strict` (query validator added by collMod,
//!   strict/error, holds invalid docs: copies need bypassDocumentValidation),
//!   `collated` (fr, strength 2), `clustered`, `timeseries` (t/m/minutes, 200
//!   measurements), `prepost` (changeStreamPreAndPostImages).
//! - `indexed` (300 docs) with indexes: unique, sparse, partial, TTL (1 year, on
//!   dates in 2100), collation (fr, strength 1), hidden, compound mixed directions
//!   (and one on a dotted path), 2dsphere, wildcard `$**` and `attrs.$**`.
//! - views: `view_pipeline` (on `indexed`, $match + $project), `view_collation`
//!   (on `collated`, $sort, collation fr/1).
//! - `unsupported` only if [`try_create_unsupported_indexes`] is called.

use anyhow::{Context, Result};
use mongodb::bson::{
    doc, oid::ObjectId, spec::BinarySubtype, Binary, Bson, DateTime, Decimal128, Document,
    JavaScriptCodeWithScope, RawDocumentBuf, Regex, Timestamp,
};
use mongodb::{Client, Database};

/// Databases created by [`seed_full_dataset`].
pub const SEED_DBS: [&str; 2] = ["seed_a", "seed_b"];

/// Size of the binary payload of each of the two big documents in `seed_a.big`
/// (documents end up ~60 bytes larger; the BSON limit is 16 MiB = 16,777,216 bytes).
pub const BIG_DOC_PAYLOAD: usize = 16_600_000;

/// Number of small documents in `seed_a.many`.
pub const MANY_DOCS: i32 = 5_000;

/// Nesting depth of the `deep` document in `seed_a.types`.
pub const DEEP_LEVELS: usize = 90;

fn oid(n: u8) -> ObjectId {
    ObjectId::from_bytes([
        0x65, 0x00, 0x00, 0x00, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0, 0, n,
    ])
}

fn bin(subtype: BinarySubtype, bytes: &[u8]) -> Bson {
    Bson::Binary(Binary {
        subtype,
        bytes: bytes.to_vec(),
    })
}

fn dec(s: &str) -> Bson {
    Bson::Decimal128(s.parse::<Decimal128>().expect("decimal128 literal"))
}

fn uuid_bin(n: u8) -> Bson {
    let mut b = [0u8; 16];
    for (i, x) in b.iter_mut().enumerate() {
        *x = n.wrapping_mul(17).wrapping_add(i as u8);
    }
    b[6] = (b[6] & 0x0f) | 0x40; // version 4
    b[8] = (b[8] & 0x3f) | 0x80; // RFC variant
    bin(BinarySubtype::Uuid, &b)
}

/// Binary values of every subtype the brief asks for: 0..=7 and 0x80.
fn binaries() -> Document {
    let sixteen: Vec<u8> = (0u8..16).collect();
    doc! {
        "generic": bin(BinarySubtype::Generic, b"\x00\x01\x02hello\xff"),
        "generic_empty": bin(BinarySubtype::Generic, b""),
        "function": bin(BinarySubtype::Function, b"function"),
        "binary_old": bin(BinarySubtype::BinaryOld, b"old binary"),
        "uuid_old": bin(BinarySubtype::UuidOld, &sixteen),
        "uuid": uuid_bin(1),
        "md5": bin(BinarySubtype::Md5, &sixteen),
        "encrypted": bin(BinarySubtype::Encrypted, b"\x01not really encrypted"),
        "column": bin(BinarySubtype::Column, b"\x00\x01column"),
        "user_defined": bin(BinarySubtype::UserDefined(0x80), b"user defined 0x80"),
    }
}

/// One document with a field of every BSON type the driver can build, with edge values.
fn all_types_doc() -> Document {
    let mut d = doc! {
        "_id": "all_types",
        "double": 1.5,
        "double_neg_zero": -0.0f64,
        "double_nan": f64::NAN,
        "double_inf": f64::INFINITY,
        "double_neg_inf": f64::NEG_INFINITY,
        "double_tiny": f64::MIN_POSITIVE,
        "double_max": f64::MAX,
        "string": "hello",
        "string_empty": "",
        "string_unicode": "ünïcödé ✓ 日本語 😀",
        "string_with_nul": "nul\u{0}inside",
        "doc": { "a": 1, "b": { "c": "d", "e": [1, 2, { "f": null }] } },
        "doc_empty": {},
        "array": [1, "two", 3.0, { "four": 4 }, [5, [6]], null, true],
        "array_empty": [],
    };
    d.extend(doc! {
        "binary": binaries(),
        "oid": oid(1),
        "bool_true": true,
        "bool_false": false,
        "date": DateTime::from_millis(1_700_000_000_123),
        "date_epoch": DateTime::from_millis(0),
        "date_pre_1970": DateTime::from_millis(-1_000_000_000_000),
        "date_year_1": DateTime::from_millis(-62_135_596_800_000),
        "date_year_9999": DateTime::from_millis(253_402_300_799_999),
        "null": null,
    });
    d.extend(doc! {
        "regex": Regex { pattern: "^ab+c$".into(), options: "imsx".into() },
        "regex_no_opts": Regex { pattern: "a/b\\.c".into(), options: "".into() },
        "code": Bson::JavaScriptCode("function() { return 1; }".into()),
        "code_w_scope": Bson::JavaScriptCodeWithScope(JavaScriptCodeWithScope {
            code: "function() { return x + y; }".into(),
            scope: doc! { "x": 1, "y": { "z": [2] } },
        }),
        "int32": 42i32,
        "int32_min": i32::MIN,
        "int32_max": i32::MAX,
        "timestamp": Timestamp { time: 1_700_000_000, increment: 7 },
        "timestamp_max": Timestamp { time: u32::MAX, increment: u32::MAX },
        // An empty timestamp nested (mongod only rewrites top-level empty timestamps).
        "nested_ts": { "zero": Timestamp { time: 0, increment: 0 } },
    });
    d.extend(doc! {
        "int64": 1i64 << 40,
        "int64_min": i64::MIN,
        "int64_max": i64::MAX,
        "decimal": dec("1234.5678"),
        "decimal_neg_zero": dec("-0"),
        "decimal_nan": dec("NaN"),
        "decimal_neg_inf": dec("-Infinity"),
        "decimal_max": dec("9.999999999999999999999999999999999E+6144"),
        "decimal_tiny": dec("1E-6176"),
        "min_key": Bson::MinKey,
        "max_key": Bson::MaxKey,
        "symbol": Bson::Symbol("a_symbol".into()),
        "undefined": Bson::Undefined,
        "numbers_same_value": [1i32, 1i64, 1.0f64, dec("1")],
    });
    d
}

/// `{_id: "t_<type>", v: <value>}`: one small document per type (easier to spot in diffs).
fn per_type_docs() -> Vec<Document> {
    let all = all_types_doc();
    all.iter()
        .filter(|(k, _)| k.as_str() != "_id")
        .map(|(k, v)| doc! { "_id": format!("t_{k}"), "v": v.clone() })
        .collect()
}

fn deep_doc(levels: usize) -> Document {
    let mut inner = doc! { "leaf": "bottom", "n": levels as i32 };
    for i in (0..levels - 1).rev() {
        inner = doc! { "level": i as i32, "child": inner };
    }
    doc! { "_id": "deep", "root": inner }
}

fn long_arrays_doc() -> Document {
    let ints: Vec<Bson> = (0..10_000).map(Bson::Int32).collect();
    let docs: Vec<Bson> = (0..1_000)
        .map(|i| Bson::Document(doc! { "i": i, "s": format!("item {i}"), "sub": [i, i + 1] }))
        .collect();
    let nested: Vec<Bson> = (0..100)
        .map(|i| Bson::Array((0..10).map(|j| Bson::Int64(i * 10 + j)).collect()))
        .collect();
    doc! { "_id": "long_arrays", "ints": ints, "docs": docs, "nested": nested }
}

/// Field names that stress naive update generation: dots, `$` prefixes, empty, unicode.
fn odd_keys_doc() -> Document {
    doc! {
        "_id": "odd_keys",
        "a.b": 1,
        "": "empty key",
        " spaced key ": 2,
        "ünï": 3,
        "nested": { "$dollar": 4, "x.y": { "z": 5 } },
    }
}

/// A document containing a DBPointer (deprecated type 0x0C), which `bson` 2.x
/// cannot construct: spliced in as raw bytes.
pub fn dbpointer_raw_doc() -> RawDocumentBuf {
    let base = mongodb::bson::to_vec(&doc! { "_id": "t_dbpointer" }).unwrap();
    let mut bytes = base[..base.len() - 1].to_vec(); // drop trailing 0
    bytes.push(0x0C);
    bytes.extend_from_slice(b"v\0");
    let ns = b"seed_a.types";
    bytes.extend_from_slice(&((ns.len() + 1) as i32).to_le_bytes());
    bytes.extend_from_slice(ns);
    bytes.push(0);
    bytes.extend_from_slice(&oid(9).bytes());
    bytes.push(0);
    let len = bytes.len() as i32;
    bytes[..4].copy_from_slice(&len.to_le_bytes());
    RawDocumentBuf::from_bytes(bytes).expect("valid dbpointer document")
}

/// `_id` values of many BSON types in one collection (all distinct under BSON comparison).
pub fn mixed_ids() -> Vec<(&'static str, Bson)> {
    vec![
        ("int32", Bson::Int32(1)),
        ("int64", Bson::Int64(2)),
        ("double", Bson::Double(3.5)),
        ("decimal", dec("4.25")),
        ("string", Bson::String("five".into())),
        ("string_empty", Bson::String(String::new())),
        ("objectid", Bson::ObjectId(oid(6))),
        ("uuid", uuid_bin(7)),
        ("binary_generic", bin(BinarySubtype::Generic, b"eight")),
        ("doc", Bson::Document(doc! { "a": 9, "b": "nine" })),
        (
            "doc_reordered",
            Bson::Document(doc! { "b": "nine", "a": 9 }),
        ),
        ("minkey", Bson::MinKey),
        ("maxkey", Bson::MaxKey),
        (
            "date",
            Bson::DateTime(DateTime::from_millis(1_000_000_000_000)),
        ),
        (
            "date_negative",
            Bson::DateTime(DateTime::from_millis(-86_400_000)),
        ),
        ("bool_true", Bson::Boolean(true)),
        ("bool_false", Bson::Boolean(false)),
        ("null", Bson::Null),
        (
            "timestamp",
            Bson::Timestamp(Timestamp {
                time: 12,
                increment: 13,
            }),
        ),
    ]
}

fn big_payload(seed: u8) -> Vec<u8> {
    (0..BIG_DOC_PAYLOAD)
        .map(|i| ((i as u64).wrapping_mul(2_654_435_761) >> 13) as u8 ^ seed)
        .collect()
}

async fn create(db: &Database, name: &str, options: Document) -> Result<()> {
    let mut cmd = doc! { "create": name };
    cmd.extend(options);
    db.run_command(cmd.clone())
        .await
        .with_context(|| format!("{}: {cmd}", db.name()))?;
    Ok(())
}

async fn create_index(db: &Database, coll: &str, spec: Document) -> Result<()> {
    let cmd = doc! { "createIndexes": coll, "indexes": [spec] };
    db.run_command(cmd.clone())
        .await
        .with_context(|| format!("{}: {cmd}", db.name()))?;
    Ok(())
}

async fn insert(db: &Database, coll: &str, docs: Vec<Document>) -> Result<()> {
    for chunk in docs.chunks(1_000) {
        db.collection::<Document>(coll)
            .insert_many(chunk.to_vec())
            .await
            .with_context(|| format!("insert into {}.{coll}", db.name()))?;
    }
    Ok(())
}

/// Create the full test dataset in databases `seed_a` and `seed_b` (contents in the
/// module docs). The databases are dropped first. Takes ~1 s on SecantusDB.
pub async fn seed_full_dataset(client: &Client) -> Result<()> {
    for name in SEED_DBS {
        client.database(name).drop().await?;
    }
    seed_a(&client.database("seed_a")).await?;
    seed_b(&client.database("seed_b")).await?;
    Ok(())
}

async fn seed_a(db: &Database) -> Result<()> {
    // types: every BSON type, per-type docs, deep nesting, long arrays, odd keys.
    let mut docs = vec![all_types_doc()];
    docs.extend(per_type_docs());
    docs.push(deep_doc(DEEP_LEVELS));
    docs.push(long_arrays_doc());
    docs.push(odd_keys_doc());
    insert(db, "types", docs).await?;
    db.collection::<RawDocumentBuf>("types")
        .insert_one(dbpointer_raw_doc())
        .await
        .context("insert DBPointer document")?;

    // big: two documents close to the 16 MiB limit.
    let big = db.collection::<Document>("big");
    for i in 1..=2u8 {
        let d = doc! {
            "_id": i as i32,
            "payload": bin(BinarySubtype::Generic, &big_payload(i)),
        };
        big.insert_one(d)
            .await
            .with_context(|| format!("insert big doc {i}"))?;
    }

    // mixed_ids: one doc per _id type.
    let docs = mixed_ids()
        .into_iter()
        .enumerate()
        .map(|(i, (kind, id))| doc! { "_id": id, "kind": kind, "i": i as i32 })
        .collect();
    insert(db, "mixed_ids", docs).await?;

    // many: plain small docs so a partitioned copy has work to do.
    let docs = (0..MANY_DOCS)
        .map(|i| {
            doc! {
                "_id": i,
                "n": i,
                "s": format!("doc-{i:05}"),
                "r": i % 7,
                "f": i as f64 / 3.0,
                "tags": [format!("t{}", i % 3), format!("u{}", i % 5)],
            }
        })
        .collect();
    insert(db, "many", docs).await?;

    // empty collection, and collection names with dots / non-ASCII.
    create(db, "empty", doc! {}).await?;
    insert(db, "name.with.dots", vec![doc! { "_id": 1, "x": "dots" }]).await?;
    insert(db, "ünïcödé_名前", vec![doc! { "_id": 1, "x": "unicode" }]).await?;
    Ok(())
}

async fn seed_b(db: &Database) -> Result<()> {
    // capped with size + max.
    create(
        db,
        "capped",
        doc! { "capped": true, "size": 1_048_576i64, "max": 1_000i64 },
    )
    .await?;
    insert(
        db,
        "capped",
        (0..50)
            .map(|i| doc! { "_id": i, "msg": format!("log line {i}") })
            .collect(),
    )
    .await?;

    // validator (moderate / warn), holding one document that violates it.
    create(
        db,
        "validated_warn",
        doc! {
            "validator": { "$jsonSchema": {
                "bsonType": "object",
                "required": ["name"],
                "properties": { "name": { "bsonType": "string" }, "age": { "bsonType": "int", "minimum": 0 } },
            } },
            "validationLevel": "moderate",
            "validationAction": "warn",
        },
    )
    .await?;
    insert(
        db,
        "validated_warn",
        vec![
            doc! { "_id": 1, "name": "ok", "age": 3 },
            doc! { "_id": 2, "noname": true, "age": -1 },
        ],
    )
    .await?;

    // validator (strict / error) added by collMod after invalid docs were inserted:
    // a copier must bypass document validation.
    insert(
        db,
        "validated_strict",
        vec![
            doc! { "_id": 1, "qty": 5 },
            doc! { "_id": 2, "qty": -5 },
            doc! { "_id": 3, "qty": "many" },
        ],
    )
    .await?;
    db.run_command(doc! {
        "collMod": "validated_strict",
        "validator": { "qty": { "$gte": 0 } },
        "validationLevel": "strict",
        "validationAction": "error",
    })
    .await
    .context("collMod validated_strict")?;

    // default collation fr / strength 2.
    create(
        db,
        "collated",
        doc! { "collation": { "locale": "fr", "strength": 2 } },
    )
    .await?;
    let words = ["été", "Été", "ete", "Ete", "côte", "coté", "Côté", "cote"];
    insert(
        db,
        "collated",
        words
            .iter()
            .enumerate()
            .map(|(i, w)| doc! { "_id": i as i32, "name": *w })
            .collect(),
    )
    .await?;

    // clustered collection.
    create(
        db,
        "clustered",
        doc! { "clusteredIndex": { "key": { "_id": 1 }, "unique": true } },
    )
    .await?;
    insert(
        db,
        "clustered",
        (0..100).map(|i| doc! { "_id": i, "v": i * i }).collect(),
    )
    .await?;

    // time series.
    create(
        db,
        "timeseries",
        doc! { "timeseries": { "timeField": "t", "metaField": "m", "granularity": "minutes" } },
    )
    .await?;
    insert(
        db,
        "timeseries",
        (0..200)
            .map(|i| {
                doc! {
                    "t": DateTime::from_millis(1_704_067_200_000 + i64::from(i) * 60_000),
                    "m": { "sensor": i % 4, "site": "paris" },
                    "temp": 20.0 + f64::from(i % 10) / 4.0,
                }
            })
            .collect(),
    )
    .await?;

    // change stream pre/post images enabled.
    create(
        db,
        "prepost",
        doc! { "changeStreamPreAndPostImages": { "enabled": true } },
    )
    .await?;
    insert(
        db,
        "prepost",
        (0..10).map(|i| doc! { "_id": i, "v": i }).collect(),
    )
    .await?;

    // indexed: one index of each supported kind.
    create(db, "indexed", doc! {}).await?;
    let specs = [
        doc! { "key": { "email": 1 }, "name": "email_1", "unique": true },
        doc! { "key": { "nick": 1 }, "name": "nick_1", "sparse": true },
        doc! { "key": { "score": 1 }, "name": "score_partial",
        "partialFilterExpression": { "score": { "$gt": 50 } } },
        doc! { "key": { "expires_at": 1 }, "name": "expires_at_ttl", "expireAfterSeconds": 31_536_000 },
        doc! { "key": { "name": 1 }, "name": "name_fr",
        "collation": { "locale": "fr", "strength": 1 } },
        doc! { "key": { "secret": 1 }, "name": "secret_hidden", "hidden": true },
        doc! { "key": { "a": 1, "b": -1, "c": 1 }, "name": "a_1_b_-1_c_1" },
        doc! { "key": { "sub.x": -1, "score": 1 }, "name": "sub.x_-1_score_1" },
        doc! { "key": { "loc": "2dsphere" }, "name": "loc_2dsphere" },
        doc! { "key": { "$**": 1 }, "name": "all_wildcard" },
        doc! { "key": { "attrs.$**": 1 }, "name": "attrs_wildcard" },
    ];
    for spec in specs {
        create_index(db, "indexed", spec).await?;
    }
    let far_future = DateTime::from_millis(4_102_444_800_000); // 2100-01-01
    insert(
        db,
        "indexed",
        (0..300)
            .map(|i| {
                let mut d = doc! {
                    "_id": i,
                    "email": format!("user{i}@example.com"),
                    "score": i % 100,
                    "expires_at": far_future,
                    "name": (["Émile", "emile", "Zoë", "zoe"][i as usize % 4]),
                    "secret": i * 7,
                    "a": i % 3, "b": i % 5, "c": i,
                    "sub": { "x": i % 11 },
                    "loc": { "type": "Point", "coordinates": [2.35 + f64::from(i) / 1000.0, 48.85] },
                    "attrs": { "color": (["red", "green", "blue"][i as usize % 3]), "size": i % 4 },
                };
                if i % 2 == 0 {
                    d.insert("nick", format!("nick{i}"));
                }
                d
            })
            .collect(),
    )
    .await?;

    // views: one with a pipeline, one with a collation.
    create(
        db,
        "view_pipeline",
        doc! {
            "viewOn": "indexed",
            "pipeline": [
                { "$match": { "score": { "$gt": 50 } } },
                { "$project": { "email": 1, "score": 1 } },
            ],
        },
    )
    .await?;
    create(
        db,
        "view_collation",
        doc! {
            "viewOn": "collated",
            "pipeline": [ { "$sort": { "name": 1 } } ],
            "collation": { "locale": "fr", "strength": 1 },
        },
    )
    .await?;
    Ok(())
}

/// Try to create index kinds SecantusDB is known not to support (text, hashed,
/// compound hashed) on `seed_b.unsupported`. Returns one line per index the server
/// refused (`"<name> <key>: <error>"`); indexes it accepted are left in place.
pub async fn try_create_unsupported_indexes(client: &Client) -> Result<Vec<String>> {
    let db = client.database("seed_b");
    let coll = db.collection::<Document>("unsupported");
    coll.insert_one(doc! { "_id": 1, "body": "some text to index", "h": 12345, "k": 1 })
        .await
        .context("insert into seed_b.unsupported")?;
    let specs = [
        doc! { "key": { "body": "text" }, "name": "body_text",
        "weights": { "body": 3 }, "default_language": "english" },
        doc! { "key": { "h": "hashed" }, "name": "h_hashed" },
        doc! { "key": { "k": 1, "h": "hashed" }, "name": "k_1_h_hashed" },
    ];
    let mut refused = Vec::new();
    for spec in specs {
        let name = spec.get_str("name").unwrap_or("?").to_string();
        let key = spec.get_document("key").cloned().unwrap_or_default();
        if let Err(e) = create_index(&db, "unsupported", spec).await {
            refused.push(format!("{name} {key}: {}", error_summary(&e)));
        }
    }
    Ok(refused)
}

/// `CodeName (code): message` for a command error, else the error's Display.
pub fn error_summary(e: &anyhow::Error) -> String {
    for cause in e.chain() {
        if let Some(me) = cause.downcast_ref::<mongodb::error::Error>() {
            return mongo_error_summary(me);
        }
    }
    format!("{e:#}")
}

/// A one-line summary of a driver error: `CodeName (code): message` for command
/// and write errors, the Display (truncated) otherwise.
pub fn mongo_error_summary(e: &mongodb::error::Error) -> String {
    use mongodb::error::{ErrorKind, WriteFailure};
    let mut s = match e.kind.as_ref() {
        ErrorKind::Command(ce) => format!("{} ({}): {}", ce.code_name, ce.code, ce.message),
        ErrorKind::Write(WriteFailure::WriteError(we)) => format!(
            "{} ({}): {}",
            we.code_name.as_deref().unwrap_or("WriteError"),
            we.code,
            we.message
        ),
        _ => e.to_string(),
    };
    if s.len() > 300 {
        let mut end = 300;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}
