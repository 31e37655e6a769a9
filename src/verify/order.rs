//! MongoDB's sort order for BSON values, as far as `_id`s need it.
//!
//! The mismatch walk reads both clusters sorted by `_id` and must know, for the two `_id`s in
//! hand, which one the servers put first: a walk that disagreed with the servers would report
//! a document present on both sides as missing on one and extra on the other. So this follows
//! the server's rules: types in canonical order (all numbers are one type, compared by value;
//! strings and symbols are one type), documents field by field (value type, then field name,
//! then value), binary data by length, then subtype, then bytes.

use std::cmp::Ordering;

use bson::spec::ElementType;
use bson::{RawBsonRef, RawDocument, RawDocumentBuf};

/// The server's canonical type rank: values of different ranks sort by rank alone.
fn rank(v: &RawBsonRef<'_>) -> i32 {
    match v.element_type() {
        ElementType::MinKey => -1,
        ElementType::Undefined => 0,
        ElementType::Null => 5,
        ElementType::Double | ElementType::Int32 | ElementType::Int64 | ElementType::Decimal128 => {
            10
        }
        ElementType::String | ElementType::Symbol => 15,
        ElementType::EmbeddedDocument => 20,
        ElementType::Array => 25,
        ElementType::Binary => 30,
        ElementType::ObjectId => 35,
        ElementType::Boolean => 40,
        ElementType::DateTime => 45,
        ElementType::Timestamp => 47,
        ElementType::RegularExpression => 50,
        ElementType::DbPointer => 55,
        ElementType::JavaScriptCode => 60,
        ElementType::JavaScriptCodeWithScope => 65,
        ElementType::MaxKey => 127,
    }
}

/// Compares two BSON values in the server's sort order.
pub fn compare(a: RawBsonRef<'_>, b: RawBsonRef<'_>) -> Ordering {
    let by_rank = rank(&a).cmp(&rank(&b));
    if by_rank != Ordering::Equal {
        return by_rank;
    }
    use RawBsonRef as R;
    match (a, b) {
        (R::String(x) | R::Symbol(x), R::String(y) | R::Symbol(y)) => {
            x.as_bytes().cmp(y.as_bytes())
        }
        (R::Document(x), R::Document(y)) => compare_documents(x, y),
        (R::Array(x), R::Array(y)) => compare_arrays(x, y),
        (R::Binary(x), R::Binary(y)) => x
            .bytes
            .len()
            .cmp(&y.bytes.len())
            .then_with(|| u8::from(x.subtype).cmp(&u8::from(y.subtype)))
            .then_with(|| x.bytes.cmp(y.bytes)),
        (R::ObjectId(x), R::ObjectId(y)) => x.bytes().cmp(&y.bytes()),
        (R::Boolean(x), R::Boolean(y)) => x.cmp(&y),
        (R::DateTime(x), R::DateTime(y)) => x.timestamp_millis().cmp(&y.timestamp_millis()),
        (R::Timestamp(x), R::Timestamp(y)) => (x.time, x.increment).cmp(&(y.time, y.increment)),
        (R::RegularExpression(x), R::RegularExpression(y)) => x
            .pattern
            .as_bytes()
            .cmp(y.pattern.as_bytes())
            .then_with(|| x.options.as_bytes().cmp(y.options.as_bytes())),
        (R::JavaScriptCode(x), R::JavaScriptCode(y)) => x.as_bytes().cmp(y.as_bytes()),
        (R::JavaScriptCodeWithScope(x), R::JavaScriptCodeWithScope(y)) => x
            .code
            .as_bytes()
            .cmp(y.code.as_bytes())
            .then_with(|| compare_documents(x.scope, y.scope)),
        (a, b) if rank(&a) == 10 => compare_numbers(&Number::of(a), &Number::of(b)),
        // MinKey, MaxKey, null, undefined: one value per rank. DBPointer (deprecated, and its
        // parts are not public here): by encoding, which keeps the order total.
        (a, b) => encoded(a).cmp(&encoded(b)),
    }
}

fn encoded(v: RawBsonRef<'_>) -> Vec<u8> {
    let mut d = RawDocumentBuf::new();
    d.append("", v.to_raw_bson());
    d.into_bytes()
}

fn compare_documents(a: &RawDocument, b: &RawDocument) -> Ordering {
    let mut ia = a.iter();
    let mut ib = b.iter();
    loop {
        match (ia.next(), ib.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) => {
                let (Ok((ka, va)), Ok((kb, vb))) = (x, y) else {
                    // Malformed BSON cannot come from a server; keep the order total anyway.
                    return a.as_bytes().cmp(b.as_bytes());
                };
                let o = rank(&va)
                    .cmp(&rank(&vb))
                    .then_with(|| ka.as_bytes().cmp(kb.as_bytes()))
                    .then_with(|| compare(va, vb));
                if o != Ordering::Equal {
                    return o;
                }
            }
        }
    }
}

/// Arrays compare as documents whose keys are the positions, so by value type, then value.
fn compare_arrays(a: &bson::RawArray, b: &bson::RawArray) -> Ordering {
    let mut ia = a.into_iter();
    let mut ib = b.into_iter();
    loop {
        match (ia.next(), ib.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(Ok(va)), Some(Ok(vb))) => {
                let o = rank(&va).cmp(&rank(&vb)).then_with(|| compare(va, vb));
                if o != Ordering::Equal {
                    return o;
                }
            }
            _ => return encoded(RawBsonRef::Array(a)).cmp(&encoded(RawBsonRef::Array(b))),
        }
    }
}

enum Number {
    Int(i64),
    Float(f64),
}

impl Number {
    fn of(v: RawBsonRef<'_>) -> Self {
        match v {
            RawBsonRef::Int32(i) => Number::Int(i as i64),
            RawBsonRef::Int64(i) => Number::Int(i),
            RawBsonRef::Double(d) => Number::Float(d),
            // Decimal128 is compared through its nearest double: exact enough to order the
            // `_id`s seen in practice; two decimals closer than a double can tell apart come
            // out equal, and the walk then compares their documents' content.
            RawBsonRef::Decimal128(d) => {
                Number::Float(d.to_string().parse::<f64>().unwrap_or(f64::NAN))
            }
            _ => Number::Float(f64::NAN),
        }
    }
}

/// Numbers compare by value across types; NaN sorts before every other number.
fn compare_numbers(a: &Number, b: &Number) -> Ordering {
    match (a, b) {
        (Number::Int(x), Number::Int(y)) => x.cmp(y),
        (Number::Float(x), Number::Float(y)) => match (x.is_nan(), y.is_nan()) {
            (true, true) => Ordering::Equal,
            (true, false) => Ordering::Less,
            (false, true) => Ordering::Greater,
            _ => x.partial_cmp(y).unwrap_or(Ordering::Equal),
        },
        (Number::Int(x), Number::Float(y)) => int_vs_float(*x, *y),
        (Number::Float(x), Number::Int(y)) => int_vs_float(*y, *x).reverse(),
    }
}

/// Exact comparison of an i64 with a double (converting the integer to a double would round
/// above 2^53 and make distinct `_id`s compare equal).
fn int_vs_float(i: i64, f: f64) -> Ordering {
    if f.is_nan() {
        return Ordering::Greater;
    }
    // 2^63 is exactly representable; every i64 is below it and at or above its negation.
    const TWO_63: f64 = 9_223_372_036_854_775_808.0;
    if f >= TWO_63 {
        return Ordering::Less;
    }
    if f < -TWO_63 {
        return Ordering::Greater;
    }
    let whole = f.trunc();
    match i.cmp(&(whole as i64)) {
        Ordering::Equal => 0.0f64.partial_cmp(&(f - whole)).unwrap_or(Ordering::Equal),
        o => o,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::{rawdoc, Binary, RawBson};

    fn cmp(a: RawBson, b: RawBson) -> Ordering {
        compare(a.as_raw_bson_ref(), b.as_raw_bson_ref())
    }

    #[test]
    fn types_sort_in_canonical_order() {
        let ordered = [
            RawBson::MinKey,
            RawBson::Null,
            RawBson::Double(-1.5),
            RawBson::Int32(3),
            RawBson::String("a".into()),
            RawBson::Document(rawdoc! { "k": 1 }),
            RawBson::Binary(Binary {
                subtype: bson::spec::BinarySubtype::Generic,
                bytes: vec![1],
            }),
            RawBson::ObjectId(bson::oid::ObjectId::from_bytes([0; 12])),
            RawBson::Boolean(false),
            RawBson::DateTime(bson::DateTime::from_millis(-5)),
            RawBson::Timestamp(bson::Timestamp {
                time: 1,
                increment: 1,
            }),
            RawBson::RegularExpression(bson::Regex {
                pattern: "a".into(),
                options: "i".into(),
            }),
            RawBson::MaxKey,
        ];
        for w in ordered.windows(2) {
            assert_eq!(
                cmp(w[0].clone(), w[1].clone()),
                Ordering::Less,
                "{:?} < {:?}",
                w[0],
                w[1]
            );
            assert_eq!(cmp(w[1].clone(), w[0].clone()), Ordering::Greater);
        }
    }

    #[test]
    fn numbers_compare_by_value_across_types() {
        assert_eq!(cmp(RawBson::Int32(1), RawBson::Int64(1)), Ordering::Equal);
        assert_eq!(
            cmp(RawBson::Int32(1), RawBson::Double(1.0)),
            Ordering::Equal
        );
        assert_eq!(
            cmp(RawBson::Int64(2), RawBson::Double(1.5)),
            Ordering::Greater
        );
        assert_eq!(
            cmp(RawBson::Double(-0.5), RawBson::Int32(0)),
            Ordering::Less
        );
        assert_eq!(
            cmp(RawBson::Double(f64::NAN), RawBson::Int64(i64::MIN)),
            Ordering::Less
        );
        // Above 2^53 a double cannot tell these apart; the comparison still does.
        let big = 1i64 << 60;
        assert_eq!(
            cmp(RawBson::Int64(big + 1), RawBson::Double(big as f64)),
            Ordering::Greater
        );
        assert_eq!(
            cmp(RawBson::Int64(i64::MAX), RawBson::Double(9.3e18)),
            Ordering::Less
        );
        let dec = |s: &str| RawBson::Decimal128(s.parse().unwrap());
        assert_eq!(cmp(dec("2.5"), RawBson::Int32(2)), Ordering::Greater);
        assert_eq!(cmp(dec("1E+1"), RawBson::Double(10.0)), Ordering::Equal);
    }

    #[test]
    fn strings_binaries_and_documents() {
        assert_eq!(
            cmp(RawBson::String("ab".into()), RawBson::String("b".into())),
            Ordering::Less
        );
        assert_eq!(
            cmp(RawBson::String("a".into()), RawBson::Symbol("a".into())),
            Ordering::Equal
        );
        let bin = |sub: u8, bytes: &[u8]| {
            RawBson::Binary(Binary {
                subtype: sub.into(),
                bytes: bytes.to_vec(),
            })
        };
        // Length first: a shorter binary sorts first whatever its bytes.
        assert_eq!(cmp(bin(0, &[9]), bin(0, &[0, 0])), Ordering::Less);
        assert_eq!(cmp(bin(4, &[0]), bin(0, &[1])), Ordering::Greater);
        let d = |d: bson::RawDocumentBuf| RawBson::Document(d);
        assert_eq!(
            cmp(d(rawdoc! { "a": 1 }), d(rawdoc! { "a": 1, "b": 0 })),
            Ordering::Less
        );
        assert_eq!(
            cmp(d(rawdoc! { "a": 2 }), d(rawdoc! { "b": 1 })),
            Ordering::Less
        );
        // Value type before field name: a string under "a" sorts after a number under "b".
        assert_eq!(
            cmp(d(rawdoc! { "a": "x" }), d(rawdoc! { "b": 1 })),
            Ordering::Greater
        );
        assert_eq!(
            cmp(d(rawdoc! { "a": 1i64 }), d(rawdoc! { "a": 1.0 })),
            Ordering::Equal
        );
    }
}
