//! What differs between the source's and the destination's version of one document, for
//! people: the dotted paths of the differing fields and BSON type names, never a value (values
//! may be sensitive).
//!
//! The comparison is of raw BSON, exactly as the digests compare: field order and types
//! matter (`1` as an int32 and `1.0` as a double differ, `{a, b}` and `{b, a}` differ). The
//! description is bounded: at most [`MAX_SHOWN`] differences are named, then how many more.
//! Field names are escaped for display: one with a `.`, a space, a quote, a control character
//! or anything else unusual is shown quoted and escaped (`"a.b"`, `"\u{1b}[31m"`), so that no
//! escape sequence reaches a terminal and a path reads one way only.

use std::collections::{HashMap, VecDeque};
use std::fmt;

use bson::raw::{RawArray, RawBsonRef, RawDocument};
use bson::spec::ElementType;

/// The most differences a description names.
pub const MAX_SHOWN: usize = 5;
/// The longest field name shown, in characters, and the longest path.
const MAX_NAME: usize = 64;
const MAX_PATH: usize = 200;

/// One difference, at a dotted path (empty: the document itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Difference {
    /// Same type, other value.
    Value(String),
    /// Other BSON type.
    Type {
        path: String,
        source: &'static str,
        destination: &'static str,
    },
    /// On the source only.
    Missing(String),
    /// On the destination only.
    Extra(String),
    /// Arrays of other lengths (elements of the common length are compared one by one).
    Length {
        path: String,
        source: usize,
        destination: usize,
    },
    /// Exactly the same fields with the same values, in another order.
    Order(String),
    /// Beside other differences at this level, the fields both sides have are in another
    /// order.
    OrderToo(String),
    /// Not readable as BSON on one side.
    Unreadable(String),
}

impl Difference {
    /// The path of a field that differs; `None` for differences in field order.
    pub fn field(&self) -> Option<&str> {
        match self {
            Difference::Value(p)
            | Difference::Missing(p)
            | Difference::Extra(p)
            | Difference::Unreadable(p)
            | Difference::Type { path: p, .. }
            | Difference::Length { path: p, .. } => Some(p),
            Difference::Order(_) | Difference::OrderToo(_) => None,
        }
    }
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = |p: &str| {
            if p.is_empty() {
                "(document)".to_string()
            } else {
                p.to_string()
            }
        };
        match self {
            Difference::Value(p) => write!(f, "{}", at(p)),
            Difference::Type {
                path,
                source,
                destination,
            } => write!(
                f,
                "{} ({source} on the source, {destination} on the destination)",
                at(path)
            ),
            Difference::Missing(p) => write!(f, "{} (missing on the destination)", at(p)),
            Difference::Extra(p) => write!(f, "{} (extra on the destination)", at(p)),
            Difference::Length {
                path,
                source,
                destination,
            } => write!(
                f,
                "{} (array of {source} on the source, {destination} on the destination)",
                at(path)
            ),
            Difference::Unreadable(p) => write!(f, "{} (not readable as BSON)", at(p)),
            Difference::Order(p) if p.is_empty() => {
                f.write_str("same fields, different order at top level")
            }
            Difference::Order(p) => write!(f, "{p}: same fields, different order"),
            Difference::OrderToo(p) if p.is_empty() => {
                f.write_str("fields also in a different order at top level")
            }
            Difference::OrderToo(p) => write!(f, "{p}: fields also in a different order"),
        }
    }
}

/// What differs between two versions of a document: the first [`MAX_SHOWN`] differences, in
/// the source's field order, and how many there are in all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DocumentDiff {
    pub shown: Vec<Difference>,
    pub total: usize,
}

impl DocumentDiff {
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// The paths of the differing fields shown (not the differences in order).
    pub fn fields(&self) -> Vec<String> {
        self.shown
            .iter()
            .filter_map(|d| d.field().map(str::to_string))
            .collect()
    }

    fn push(&mut self, d: Difference) {
        self.total += 1;
        if self.shown.len() < MAX_SHOWN {
            self.shown.push(d);
        }
    }
}

/// `fields: a, sub.b (missing on the destination); sub.c: same fields, different order; and 2
/// more`.
impl fmt::Display for DocumentDiff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fields: Vec<String> = self
            .shown
            .iter()
            .filter(|d| d.field().is_some())
            .map(ToString::to_string)
            .collect();
        let mut parts = Vec::new();
        if !fields.is_empty() {
            parts.push(format!("fields: {}", fields.join(", ")));
        }
        parts.extend(
            self.shown
                .iter()
                .filter(|d| d.field().is_none())
                .map(ToString::to_string),
        );
        let more = self.total - self.shown.len();
        if more > 0 {
            parts.push(format!("and {more} more"));
        }
        f.write_str(&parts.join("; "))
    }
}

/// What differs between `source` and `destination` (empty when their bytes are equal).
pub fn diff(source: &RawDocument, destination: &RawDocument) -> DocumentDiff {
    let mut out = DocumentDiff::default();
    diff_documents(source, destination, "", &mut out);
    out
}

fn diff_documents(a: &RawDocument, b: &RawDocument, path: &str, out: &mut DocumentDiff) {
    if a.as_bytes() == b.as_bytes() {
        return;
    }
    let (Ok(fa), Ok(fb)) = (
        a.iter().collect::<Result<Vec<_>, _>>(),
        b.iter().collect::<Result<Vec<_>, _>>(),
    ) else {
        out.push(Difference::Unreadable(path.to_string()));
        return;
    };
    // Each source field paired with the destination's field of that name (the n-th
    // occurrence with the n-th, should a name repeat).
    let mut by_name: HashMap<&str, VecDeque<usize>> = HashMap::with_capacity(fb.len());
    for (i, (name, _)) in fb.iter().enumerate() {
        by_name.entry(name).or_default().push_back(i);
    }
    let pairs: Vec<Option<usize>> = fa
        .iter()
        .map(|(name, _)| by_name.get_mut(name).and_then(VecDeque::pop_front))
        .collect();
    let same_fields = fa.len() == fb.len()
        && pairs
            .iter()
            .zip(&fa)
            .all(|(j, (_, va))| j.is_some_and(|j| same_value(*va, fb[j].1)));
    if same_fields {
        out.push(Difference::Order(path.to_string()));
        return;
    }
    let before = out.total;
    let mut paired = vec![false; fb.len()];
    for ((name, va), j) in fa.iter().zip(&pairs) {
        let child = child(path, &segment(name));
        match j {
            None => out.push(Difference::Missing(child)),
            Some(j) => {
                paired[*j] = true;
                diff_values(*va, fb[*j].1, &child, out);
            }
        }
    }
    for ((name, _), paired) in fb.iter().zip(paired) {
        if !paired {
            out.push(Difference::Extra(child(path, &segment(name))));
        }
    }
    let order: Vec<usize> = pairs.iter().flatten().copied().collect();
    if order.windows(2).any(|w| w[0] > w[1]) {
        out.push(Difference::OrderToo(path.to_string()));
    }
    if out.total == before {
        // Other bytes, yet every field compares equal (e.g. a length prefix that differs).
        out.push(Difference::Value(path.to_string()));
    }
}

fn diff_arrays(a: &RawArray, b: &RawArray, path: &str, out: &mut DocumentDiff) {
    if a.as_bytes() == b.as_bytes() {
        return;
    }
    let (Ok(ea), Ok(eb)) = (
        a.into_iter().collect::<Result<Vec<_>, _>>(),
        b.into_iter().collect::<Result<Vec<_>, _>>(),
    ) else {
        out.push(Difference::Unreadable(path.to_string()));
        return;
    };
    let before = out.total;
    for (i, (va, vb)) in ea.iter().zip(&eb).enumerate() {
        diff_values(*va, *vb, &child(path, &i.to_string()), out);
    }
    if ea.len() != eb.len() {
        out.push(Difference::Length {
            path: path.to_string(),
            source: ea.len(),
            destination: eb.len(),
        });
    }
    if out.total == before {
        // Same elements under other keys (arrays' keys are meant to be "0", "1", …).
        out.push(Difference::Value(path.to_string()));
    }
}

fn diff_values(a: RawBsonRef<'_>, b: RawBsonRef<'_>, path: &str, out: &mut DocumentDiff) {
    match (a, b) {
        (RawBsonRef::Document(x), RawBsonRef::Document(y)) => diff_documents(x, y, path, out),
        (RawBsonRef::Array(x), RawBsonRef::Array(y)) => diff_arrays(x, y, path, out),
        _ if a.element_type() != b.element_type() => out.push(Difference::Type {
            path: path.to_string(),
            source: type_name(a.element_type()),
            destination: type_name(b.element_type()),
        }),
        _ if !same_value(a, b) => out.push(Difference::Value(path.to_string())),
        _ => {}
    }
}

/// Whether two values are the same bytes: same type, and doubles by their bits (`-0.0` is not
/// `0.0`, and a NaN is itself).
fn same_value(a: RawBsonRef<'_>, b: RawBsonRef<'_>) -> bool {
    match (a, b) {
        (RawBsonRef::Double(x), RawBsonRef::Double(y)) => x.to_bits() == y.to_bits(),
        (RawBsonRef::Document(x), RawBsonRef::Document(y)) => x.as_bytes() == y.as_bytes(),
        (RawBsonRef::Array(x), RawBsonRef::Array(y)) => x.as_bytes() == y.as_bytes(),
        (RawBsonRef::JavaScriptCodeWithScope(x), RawBsonRef::JavaScriptCodeWithScope(y)) => {
            x.code == y.code && x.scope.as_bytes() == y.scope.as_bytes()
        }
        _ => a.element_type() == b.element_type() && a == b,
    }
}

/// The BSON type's name, as MongoDB's `$type` spells it (the integers by their width).
pub fn type_name(t: ElementType) -> &'static str {
    match t {
        ElementType::Double => "double",
        ElementType::String => "string",
        ElementType::EmbeddedDocument => "object",
        ElementType::Array => "array",
        ElementType::Binary => "binData",
        ElementType::Undefined => "undefined",
        ElementType::ObjectId => "objectId",
        ElementType::Boolean => "bool",
        ElementType::DateTime => "date",
        ElementType::Null => "null",
        ElementType::RegularExpression => "regex",
        ElementType::DbPointer => "dbPointer",
        ElementType::JavaScriptCode => "javascript",
        ElementType::Symbol => "symbol",
        ElementType::JavaScriptCodeWithScope => "javascriptWithScope",
        ElementType::Int32 => "int32",
        ElementType::Timestamp => "timestamp",
        ElementType::Int64 => "int64",
        ElementType::Decimal128 => "decimal128",
        ElementType::MaxKey => "maxKey",
        ElementType::MinKey => "minKey",
    }
}

/// `path.segment`, the whole cut at [`MAX_PATH`] characters.
fn child(path: &str, segment: &str) -> String {
    if path.ends_with('…') {
        return path.to_string();
    }
    let joined = if path.is_empty() {
        segment.to_string()
    } else {
        format!("{path}.{segment}")
    };
    cut(&joined, MAX_PATH)
}

fn cut(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &s[..at]),
        None => s.to_string(),
    }
}

/// A field name as shown in a path: as is when it is plain, otherwise quoted and escaped.
pub fn segment(name: &str) -> String {
    let plain = !name.is_empty()
        && name.chars().all(|c| {
            !c.is_whitespace()
                && !c.is_control()
                && !is_invisible(c)
                && !".\"'\\,;:()[]{}`…".contains(c)
                && c.escape_debug().len() == 1
        });
    let shown = cut(name, MAX_NAME);
    if plain {
        shown
    } else {
        let mut out = String::with_capacity(shown.len() + 2);
        out.push('"');
        for c in shown.chars() {
            if is_invisible(c) {
                out.push_str(&format!("\\u{{{:x}}}", c as u32));
            } else {
                out.extend(c.escape_debug());
            }
        }
        out.push('"');
        out
    }
}

/// Characters that change how a terminal shows the text around them without showing
/// themselves: bidirectional controls, zero-width characters, the byte order mark.
pub(crate) fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{feff}'
        | '\u{ad}' | '\u{061c}')
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::{rawdoc, RawDocumentBuf};

    fn text(a: RawDocumentBuf, b: RawDocumentBuf) -> String {
        diff(&a, &b).to_string()
    }

    #[test]
    fn equal_documents_have_no_difference() {
        let d = rawdoc! { "_id": 1, "a": [1, { "b": 2.5 }] };
        assert!(diff(&d, &d.clone()).is_empty());
        assert_eq!(diff(&d, &d.clone()).to_string(), "");
    }

    #[test]
    fn a_changed_value_names_its_field_and_never_the_value() {
        let t = text(
            rawdoc! { "_id": 1, "v": 87, "k": "secret-a" },
            rawdoc! { "_id": 1, "v": 88, "k": "secret-b" },
        );
        assert_eq!(t, "fields: v, k");
        assert!(!t.contains("secret") && !t.contains("87"), "{t}");
    }

    #[test]
    fn a_type_change_names_both_types() {
        assert_eq!(
            text(rawdoc! { "_id": 1, "n": 1 }, rawdoc! { "_id": 1, "n": 1.0 }),
            "fields: n (int32 on the source, double on the destination)"
        );
        assert_eq!(
            text(rawdoc! { "n": 1i64 }, rawdoc! { "n": { "x": 1 } }),
            "fields: n (int64 on the source, object on the destination)"
        );
        // Same type and same value as numbers, other bits.
        assert_eq!(
            text(rawdoc! { "d": 0.0 }, rawdoc! { "d": -0.0 }),
            "fields: d"
        );
    }

    #[test]
    fn missing_and_extra_fields() {
        let d = diff(
            &rawdoc! { "_id": 1, "a": 1, "b": 2 },
            &rawdoc! { "_id": 1, "b": 2, "c": 3 },
        );
        assert_eq!(
            d.to_string(),
            "fields: a (missing on the destination), c (extra on the destination)"
        );
        assert_eq!(d.fields(), ["a", "c"]);
    }

    #[test]
    fn nested_differences_have_dotted_paths() {
        assert_eq!(
            text(
                rawdoc! { "_id": 1, "sub": { "y": { "z": "c", "w": 1 } } },
                rawdoc! { "_id": 1, "sub": { "y": { "z": "d", "w": 1 } } },
            ),
            "fields: sub.y.z"
        );
    }

    #[test]
    fn arrays_by_element_and_length() {
        assert_eq!(
            text(
                rawdoc! { "arr": [1, 2, 3, 4] },
                rawdoc! { "arr": [1, 2, 3, 5] }
            ),
            "fields: arr.3"
        );
        assert_eq!(
            text(rawdoc! { "arr": [1, 2] }, rawdoc! { "arr": [1, 2, 3] }),
            "fields: arr (array of 2 on the source, 3 on the destination)"
        );
        assert_eq!(
            text(
                rawdoc! { "arr": [{ "a": 1, "b": 2 }, 7] },
                rawdoc! { "arr": [{ "a": 1, "b": 3 }] }
            ),
            "fields: arr.0.b, arr (array of 2 on the source, 1 on the destination)"
        );
    }

    #[test]
    fn a_pure_reorder_is_named_at_its_level() {
        assert_eq!(
            text(
                rawdoc! { "_id": 1, "k": "x", "v": 87, "sub": { "y": { "z": "c" } } },
                rawdoc! { "_id": 1, "k": "x", "sub": { "y": { "z": "c" } }, "v": 87 },
            ),
            "same fields, different order at top level"
        );
        let d = diff(
            &rawdoc! { "_id": 1, "sub": { "a": 1, "b": 2 } },
            &rawdoc! { "_id": 1, "sub": { "b": 2, "a": 1 } },
        );
        assert_eq!(d.to_string(), "sub: same fields, different order");
        assert!(d.fields().is_empty());
        assert_eq!(
            text(
                rawdoc! { "arr": [{ "a": 1, "b": 2 }] },
                rawdoc! { "arr": [{ "b": 2, "a": 1 }] }
            ),
            "arr.0: same fields, different order"
        );
    }

    #[test]
    fn a_reorder_beside_a_change_names_both() {
        assert_eq!(
            text(
                rawdoc! { "_id": 1, "a": 1, "b": 2 },
                rawdoc! { "_id": 1, "b": 3, "a": 1 }
            ),
            "fields: b; fields also in a different order at top level"
        );
        assert_eq!(
            text(
                rawdoc! { "v": 1, "sub": { "a": 1, "b": 2 } },
                rawdoc! { "v": 2, "sub": { "b": 2, "a": 1 } }
            ),
            "fields: v; sub: same fields, different order"
        );
    }

    #[test]
    fn many_differences_are_capped() {
        let mut a = RawDocumentBuf::new();
        let mut b = RawDocumentBuf::new();
        for i in 0..12 {
            a.append(format!("f{i}"), i);
            b.append(format!("f{i}"), i + 1);
        }
        let d = diff(&a, &b);
        assert_eq!(d.total, 12);
        assert_eq!(d.shown.len(), MAX_SHOWN);
        assert_eq!(d.to_string(), "fields: f0, f1, f2, f3, f4; and 7 more");
    }

    #[test]
    fn names_that_need_it_are_quoted_and_escaped() {
        assert_eq!(segment("plain_name$1"), "plain_name$1");
        assert_eq!(segment("a.b"), "\"a.b\"");
        assert_eq!(segment(""), "\"\"");
        assert_eq!(segment("two words"), "\"two words\"");
        assert_eq!(segment("\u{1b}[31mred"), "\"\\u{1b}[31mred\"");
        assert_eq!(segment("line\nbreak"), "\"line\\nbreak\"");
        assert_eq!(segment("q\"uote"), "\"q\\\"uote\"");
        assert_eq!(segment("\u{202e}evil"), "\"\\u{202e}evil\"");
        assert_eq!(segment("名前"), "名前");
        let long = "x".repeat(500);
        assert_eq!(segment(&long).chars().count(), MAX_NAME + 1);
        let t = text(
            rawdoc! { "a.b": 1, "x": { "\u{1b}]0;pwned\u{7}": 1 } },
            rawdoc! { "a.b": 2, "x": { "\u{1b}]0;pwned\u{7}": 2 } },
        );
        assert_eq!(t, "fields: \"a.b\", x.\"\\u{1b}]0;pwned\\u{7}\"");
        assert!(!t.chars().any(|c| c.is_control()), "{t}");
    }

    #[test]
    fn paths_are_bounded() {
        let name = "n".repeat(60);
        let mut a = rawdoc! { "leaf": 1 };
        let mut b = rawdoc! { "leaf": 2 };
        for _ in 0..20 {
            let (mut x, mut y) = (RawDocumentBuf::new(), RawDocumentBuf::new());
            x.append(name.clone(), a);
            y.append(name.clone(), b);
            (a, b) = (x, y);
        }
        let d = diff(&a, &b);
        let p = &d.fields()[0];
        assert!(p.chars().count() <= MAX_PATH + 1, "{p}");
        assert!(p.ends_with('…'), "{p}");
    }
}
