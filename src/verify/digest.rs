//! An order-independent digest of a set of documents.
//!
//! Each document's raw BSON bytes are hashed with xxh3-64 and the hashes are folded by
//! wrapping addition and by xor. Both folds are commutative, so two scans that return the same
//! documents in different orders (natural order differs between clusters) agree, and the sum
//! catches what the xor alone cannot (a document present twice cancels out of the xor).
//! Hashing the bytes rather than a decoded document makes field order and exact numeric types
//! count, as they do for a byte-for-byte copy.

use std::fmt;

use bson::{doc, RawDocument, RawDocumentBuf};
use futures::TryStreamExt;
use mongodb::Client;
use serde::{Deserialize, Serialize};

/// The xxh3-64 hash of one document's raw BSON bytes.
pub fn hash_document(doc: &RawDocument) -> u64 {
    xxhash_rust::xxh3::xxh3_64(doc.as_bytes())
}

/// Count, wrapping sum and xor of the documents' hashes.
///
/// `sum` and `xor` are written to JSON as 16 hex digits: JSON readers that hold numbers as
/// doubles (jq, JavaScript) would silently round a `u64`, and a rounded digest compares equal
/// to digests it should not.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Digest {
    pub count: u64,
    #[serde(with = "hex_u64")]
    pub sum: u64,
    #[serde(with = "hex_u64")]
    pub xor: u64,
}

impl Digest {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one document by its hash (see [`hash_document`]).
    pub fn add_hash(&mut self, hash: u64) {
        self.count += 1;
        self.sum = self.sum.wrapping_add(hash);
        self.xor ^= hash;
    }

    pub fn add(&mut self, doc: &RawDocument) {
        self.add_hash(hash_document(doc));
    }

    /// Combines the digests of two disjoint sets (e.g. two partitions of one collection).
    pub fn merge(&mut self, other: &Digest) {
        self.count += other.count;
        self.sum = self.sum.wrapping_add(other.sum);
        self.xor ^= other.xor;
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} docs, sum {:016x}, xor {:016x}",
            self.count, self.sum, self.xor
        )
    }
}

impl<'a> FromIterator<&'a RawDocument> for Digest {
    fn from_iter<I: IntoIterator<Item = &'a RawDocument>>(iter: I) -> Self {
        let mut d = Digest::new();
        for doc in iter {
            d.add(doc);
        }
        d
    }
}

/// Digests a whole collection in one streaming scan (natural order; memory stays at one
/// cursor batch), counting each document read into `hashed` as it goes.
pub async fn digest_collection(
    client: &Client,
    db: &str,
    coll: &str,
    hashed: Option<&std::sync::atomic::AtomicU64>,
) -> mongodb::error::Result<Digest> {
    let mut cursor = client
        .database(db)
        .collection::<RawDocumentBuf>(coll)
        .find(doc! {})
        .await?;
    let mut digest = Digest::new();
    while let Some(doc) = cursor.try_next().await? {
        digest.add(&doc);
        if let Some(h) = hashed {
            h.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
    Ok(digest)
}

mod hex_u64 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{v:016x}"))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        let s = String::deserialize(d)?;
        u64::from_str_radix(&s, 16).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::rawdoc;

    #[test]
    fn order_does_not_matter_but_content_does() {
        let a = rawdoc! { "_id": 1, "x": "a" };
        let b = rawdoc! { "_id": 2, "x": "b" };
        let c = rawdoc! { "_id": 3, "nested": { "k": [1, 2] } };
        let d1: Digest = [&*a, &*b, &*c].into_iter().collect();
        let d2: Digest = [&*c, &*a, &*b].into_iter().collect();
        assert_eq!(d1, d2);
        assert_eq!(d1.count, 3);

        let b_changed = rawdoc! { "_id": 2, "x": "B" };
        let d3: Digest = [&*a, &*b_changed, &*c].into_iter().collect();
        assert_ne!(d1, d3);
    }

    #[test]
    fn bytes_count_field_order_and_numeric_type() {
        let one = Digest::from_iter([&*rawdoc! { "_id": 1, "a": 1, "b": 2 }]);
        let swapped = Digest::from_iter([&*rawdoc! { "_id": 1, "b": 2, "a": 1 }]);
        let long = Digest::from_iter([&*rawdoc! { "_id": 1, "a": 1i64, "b": 2 }]);
        assert_ne!(one, swapped);
        assert_ne!(one, long);
    }

    #[test]
    fn duplicates_show_in_sum_and_count_though_xor_cancels() {
        let a = rawdoc! { "_id": 1 };
        let once = Digest::from_iter([&*a]);
        let thrice = Digest::from_iter([&*a, &*a, &*a]);
        assert_eq!(once.xor, thrice.xor);
        assert_ne!(once.sum, thrice.sum);
        assert_ne!(once, thrice);
    }

    #[test]
    fn merge_equals_one_pass_and_json_round_trips() {
        let docs = [
            rawdoc! { "_id": 1 },
            rawdoc! { "_id": 2 },
            rawdoc! { "_id": "x" },
        ];
        let all: Digest = docs.iter().map(|d| &**d).collect();
        let mut parts: Digest = docs[..1].iter().map(|d| &**d).collect();
        parts.merge(&docs[1..].iter().map(|d| &**d).collect());
        assert_eq!(all, parts);
        let json = serde_json::to_value(all).unwrap();
        assert_eq!(json["count"], 3);
        assert_eq!(json["sum"].as_str().unwrap().len(), 16);
        assert_eq!(serde_json::from_value::<Digest>(json).unwrap(), all);
    }
}
