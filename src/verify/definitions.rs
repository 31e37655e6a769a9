//! Namespace metadata differences: type, collection options, view definitions and indexes,
//! each worded as one sentence.

use std::collections::BTreeMap;

use bson::{Bson, Document};

use crate::contract::options::BuildIndexes;
use crate::mongo::catalog::{sync_form, CollKind, CollSpec};
use crate::verify::report::NamespaceKind;
use crate::verify::IndexForm;

const MAX_VALUE_CHARS: usize = 200;

pub fn kind_of(spec: &CollSpec) -> NamespaceKind {
    match spec.kind {
        CollKind::Collection => NamespaceKind::Collection,
        CollKind::Timeseries => NamespaceKind::Timeseries,
        CollKind::View => NamespaceKind::View,
    }
}

/// A value as relaxed extended JSON, cut to a readable length.
fn show(v: &Bson) -> String {
    let s = v.clone().into_relaxed_extjson().to_string();
    if s.chars().count() <= MAX_VALUE_CHARS {
        return s;
    }
    let cut: String = s.chars().take(MAX_VALUE_CHARS).collect();
    format!("{cut}…")
}

fn show_doc(d: &Document) -> String {
    show(&Bson::Document(d.clone()))
}

/// Options as compared: the collection's UUID is per cluster by nature, and the clustered
/// index's version is the server's choice (the engine creates it without one).
fn normalized_options(spec: &CollSpec) -> Document {
    let mut o = spec.options.clone();
    o.remove("uuid");
    if let Ok(ci) = o.get_document_mut("clusteredIndex") {
        ci.remove("v");
    }
    o
}

/// Differences between the source's and the destination's definition of one namespace
/// present on both.
pub fn compare_specs(src: &CollSpec, dst: &CollSpec) -> Vec<String> {
    let (ks, kd) = (kind_of(src), kind_of(dst));
    if ks != kd {
        return vec![format!(
            "a {ks} on the source but a {kd} on the destination"
        )];
    }
    let mut out = Vec::new();
    let mut sopt = normalized_options(src);
    let mut dopt = normalized_options(dst);
    if ks == NamespaceKind::View {
        let (sv, dv) = (sopt.remove("viewOn"), dopt.remove("viewOn"));
        if sv != dv {
            out.push(format!(
                "view defined on {} on the source but on {} on the destination",
                sv.as_ref().map(show).unwrap_or_else(|| "nothing".into()),
                dv.as_ref().map(show).unwrap_or_else(|| "nothing".into()),
            ));
        }
        let (sp, dp) = (sopt.remove("pipeline"), dopt.remove("pipeline"));
        if sp != dp {
            let none = || "none".to_string();
            out.push(format!(
                "view pipeline differs: source {} vs destination {}",
                sp.as_ref().map(show).unwrap_or_else(none),
                dp.as_ref().map(show).unwrap_or_else(none),
            ));
        }
    }
    out.extend(compare_options(&sopt, &dopt));
    out
}

fn compare_options(src: &Document, dst: &Document) -> Vec<String> {
    let mut out = Vec::new();
    for (k, sv) in src {
        match dst.get(k) {
            None => out.push(format!(
                "option `{k}` missing on the destination (source: {})",
                show(sv)
            )),
            Some(dv) if dv != sv => out.push(format!(
                "option `{k}` differs: source {} vs destination {}",
                show(sv),
                show(dv)
            )),
            Some(_) => {}
        }
    }
    for (k, dv) in dst {
        if !src.contains_key(k) {
            out.push(format!(
                "option `{k}` extra on the destination (destination: {})",
                show(dv)
            ));
        }
    }
    out
}

/// `listIndexes` entries by name, as compared: without the fields that describe the server
/// rather than the index (`v`, `ns`) and without `background` (ignored by servers since 4.2
/// and not carried over by the engine). A `prepareUnique` left behind by a unique-index
/// conversion is a difference: the definition is not the source's.
fn normalized_indexes(specs: &[Document]) -> BTreeMap<String, Document> {
    specs
        .iter()
        .map(|s| {
            let mut s = s.clone();
            for f in ["v", "ns", "background"] {
                s.remove(f);
            }
            (s.get_str("name").unwrap_or_default().to_string(), s)
        })
        .collect()
}

/// Key patterns compare by bytes: `{a: 1, b: 1}` and `{b: 1, a: 1}` are different indexes,
/// which `Document`'s equality would not see.
fn same_index(a: &Document, b: &Document) -> bool {
    let key_bytes = |d: &Document| {
        d.get_document("key")
            .ok()
            .and_then(|k| bson::to_vec(k).ok())
    };
    key_bytes(a) == key_bytes(b) && a == b
}

/// Differences between two `listIndexes` outputs, the destination expected in `form`.
pub fn compare_indexes(src: &[Document], dst: &[Document], form: IndexForm) -> Vec<String> {
    let (src, dst): (Vec<Document>, Vec<Document>) = match form {
        IndexForm::Final => (src.to_vec(), dst.to_vec()),
        IndexForm::DuringSync(BuildIndexes::Never) => return Vec::new(),
        // Both sides in the form the sync builds: the destination's own provisional fields
        // map to themselves, and an index it should not have still shows as extra.
        IndexForm::DuringSync(mode) => (
            src.iter().filter_map(|i| sync_form(i, mode)).collect(),
            dst.iter()
                .filter(|i| i.get_str("name") != Ok("_id_"))
                .map(|i| sync_form(i, BuildIndexes::AfterDataCopy).unwrap_or_else(|| i.clone()))
                .collect(),
        ),
    };
    let (s, d) = (normalized_indexes(&src), normalized_indexes(&dst));
    let mut out = Vec::new();
    for (name, spec) in &s {
        match d.get(name) {
            None => out.push(format!("index `{name}` missing on the destination")),
            Some(other) if !same_index(spec, other) => out.push(format!(
                "index `{name}` differs: source {} vs destination {}",
                show_doc(spec),
                show_doc(other)
            )),
            Some(_) => {}
        }
    }
    for name in d.keys().filter(|n| !s.contains_key(*n)) {
        out.push(format!("index `{name}` extra on the destination"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    #[test]
    fn mid_sync_indexes_compare_in_the_form_the_sync_builds() {
        let src = vec![
            doc! { "v": 2, "key": { "_id": 1 }, "name": "_id_" },
            doc! { "v": 2, "key": { "email": 1 }, "name": "email_1", "unique": true },
            doc! { "v": 2, "key": { "at": 1 }, "name": "at_1", "expireAfterSeconds": 3600 },
            doc! { "v": 2, "key": { "h": "hashed" }, "name": "h_hashed" },
        ];
        // What the engine builds until commit.
        let mid = vec![
            doc! { "v": 2, "key": { "_id": 1 }, "name": "_id_" },
            doc! { "v": 2, "key": { "email": 1 }, "name": "email_1" },
            doc! { "v": 2, "key": { "at": 1 }, "name": "at_1", "expireAfterSeconds": 2_147_483_647 },
            doc! { "v": 2, "key": { "h": "hashed" }, "name": "h_hashed" },
        ];
        let during = IndexForm::DuringSync(BuildIndexes::AfterDataCopy);
        assert!(compare_indexes(&src, &mid, during).is_empty());
        assert_eq!(
            compare_indexes(&src, &mid, IndexForm::Final).len(),
            2,
            "finally, uniqueness and the TTL must be back"
        );
        // Under excludeHashed the hashed index is not expected; having it is a difference.
        let no_hashed: Vec<Document> = mid[..3].to_vec();
        assert!(compare_indexes(
            &src,
            &no_hashed,
            IndexForm::DuringSync(BuildIndexes::ExcludeHashed)
        )
        .is_empty());
        assert_eq!(
            compare_indexes(
                &src,
                &mid,
                IndexForm::DuringSync(BuildIndexes::ExcludeHashed)
            ),
            vec!["index `h_hashed` extra on the destination".to_string()]
        );
        // A dropped index is still missing mid-sync; `never` compares none.
        assert_eq!(compare_indexes(&src, &mid[..2], during).len(), 2);
        assert!(compare_indexes(&src, &[], IndexForm::DuringSync(BuildIndexes::Never)).is_empty());
    }

    fn spec(kind: CollKind, options: Document) -> CollSpec {
        CollSpec {
            db: "d".into(),
            name: "c".into(),
            kind,
            options,
            uuid: None,
        }
    }

    #[test]
    fn options_ignore_uuid_and_clustered_index_version() {
        let a = spec(
            CollKind::Collection,
            doc! { "uuid": 1, "clusteredIndex": { "v": 2, "key": { "_id": 1 }, "unique": true } },
        );
        let b = spec(
            CollKind::Collection,
            doc! { "clusteredIndex": { "key": { "_id": 1 }, "unique": true } },
        );
        assert!(compare_specs(&a, &b).is_empty());
    }

    #[test]
    fn option_differences_are_named() {
        let a = spec(
            CollKind::Collection,
            doc! { "capped": true, "size": 4096, "validator": { "a": { "$type": "int" } } },
        );
        let b = spec(
            CollKind::Collection,
            doc! { "validator": { "a": { "$type": "string" } }, "validationLevel": "off" },
        );
        let d = compare_specs(&a, &b);
        assert_eq!(d.len(), 4, "{d:?}");
        assert!(d[0].starts_with("option `capped` missing on the destination"));
        assert!(d[2].starts_with("option `validator` differs"), "{d:?}");
        assert!(d[3].starts_with("option `validationLevel` extra"), "{d:?}");
    }

    #[test]
    fn views_and_types() {
        let v =
            |on: &str, p: Document| spec(CollKind::View, doc! { "viewOn": on, "pipeline": [p] });
        let a = v("x", doc! { "$match": { "a": 1 } });
        assert!(compare_specs(&a, &a.clone()).is_empty());
        let d = compare_specs(&a, &v("y", doc! { "$match": { "a": 2 } }));
        assert_eq!(d.len(), 2, "{d:?}");
        assert!(d[0].contains("\"x\"") && d[0].contains("\"y\""), "{d:?}");
        assert!(d[1].starts_with("view pipeline differs"), "{d:?}");
        let d = compare_specs(&a, &spec(CollKind::Collection, doc! {}));
        assert_eq!(
            d,
            vec!["a view on the source but a collection on the destination"]
        );
    }

    #[test]
    fn index_differences() {
        let id = doc! { "v": 2, "key": { "_id": 1 }, "name": "_id_" };
        let ab = doc! { "v": 2, "key": { "a": 1, "b": 1 }, "name": "ab" };
        let ba = doc! { "v": 1, "key": { "b": 1, "a": 1 }, "name": "ab" };
        let t = doc! { "v": 2, "key": { "t": 1 }, "name": "t_1", "expireAfterSeconds": 60, "background": true };
        let t2 = doc! { "key": { "t": 1 }, "name": "t_1", "expireAfterSeconds": 60 };
        let x = doc! { "key": { "x": 1 }, "name": "x_1" };
        assert!(compare_indexes(
            &[id.clone(), t.clone()],
            &[t2.clone(), id.clone()],
            IndexForm::Final
        )
        .is_empty());
        let d = compare_indexes(
            &[id.clone(), ab.clone(), t.clone()],
            &[id.clone(), ba, x],
            IndexForm::Final,
        );
        assert_eq!(
            d[1..],
            [
                "index `t_1` missing on the destination".to_string(),
                "index `x_1` extra on the destination".to_string()
            ]
        );
        assert!(d[0].starts_with("index `ab` differs"), "{d:?}");
        // A unique conversion's leftover is not the source's definition.
        let u = doc! { "key": { "u": 1 }, "name": "u_1", "unique": true };
        let u2 = doc! { "key": { "u": 1 }, "name": "u_1", "prepareUnique": false, "unique": true };
        assert_eq!(
            compare_indexes(&[id.clone(), u], &[id.clone(), u2], IndexForm::Final).len(),
            1
        );
    }
}
