//! An update event's `updateDescription`, replayed so that the destination's bytes equal the
//! source's, field order included, or the proof that it cannot be.
//!
//! The destination holds the document exactly as the source held it before the update (every
//! earlier change was replayed exactly, or the document was read whole), so replaying the
//! update's effect reproduces the source's bytes as long as every field lands where the
//! source's server put it:
//!
//! - a field that already exists is changed in place, by every server and every update form;
//! - one new field is appended to its parent, by every server and every update form;
//! - several new fields at once are where servers differ: MongoDB 5.0+ adds an operator
//!   update's new fields in lexicographic order, a pipeline update's (and some other servers'
//!   operator updates') in the order written, and the change event lists them in an order of
//!   its own (the test server sorts them). The event does not say which order was used.
//!
//! So an update that sets one path is replayed as is, and one that sets several is replayed
//! only where each path already exists on the destination. The write checks that itself (a
//! [`Guard`] in its filter, which costs no extra round trip); a document whose check fails is
//! read from the source by `_id` instead ([`super::repair`]). Field names an update path
//! cannot express (a `.` inside a name, a leading `$`, an empty name) and deltas too large to
//! send go straight to that repair.

use bson::{RawArrayBuf, RawBsonRef, RawDocument, RawDocumentBuf};

/// Above this a delta is not sent as an update: with its filter and the command around it, it
/// would not fit the server's 16 MB message. The repair's replacement always fits.
const MAX_DELTA_BYTES: usize = 15 * 1024 * 1024;

/// A precondition on the destination document under which a delta reproduces the source's
/// bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Guard {
    /// The path exists: the update changes it in place.
    Exists(String),
    /// The path is an array: setting one of its indexes is positional.
    Array(String),
    /// The path is a document or an array: a field set below it is changed in place or
    /// appended to it. Also rules out a name holding a `.` that a server reported as a path.
    Container(String),
}

/// One update document to replay, with the preconditions it needs.
#[derive(Debug, Clone)]
pub(crate) struct Delta {
    pub update: RawDocumentBuf,
    pub guards: Vec<Guard>,
}

/// Why an update is settled by reading the document from the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RepairReason {
    /// A field name with a `.`, a leading `$` or no characters: no update path names it.
    InexpressibleName,
    /// The delta is too large to send as an update.
    TooLarge,
    /// The event is not in a shape this engine knows.
    Malformed,
}

/// How an update event is applied.
#[derive(Debug)]
pub(crate) enum Plan {
    Replay(Vec<Delta>),
    Repair(RepairReason),
}

/// A path's components as the server named them: from `disambiguatedPaths` where the event
/// has it (an integer there is an array index, a string a field name), else split at dots.
enum Component {
    Field,
    Index,
}

fn components<'a>(
    path: &'a str,
    disambiguated: Option<&'a RawDocument>,
) -> Result<Vec<Component>, RepairReason> {
    let Some(parts) = disambiguated.and_then(|d| d.get_array(path).ok()) else {
        return path
            .split('.')
            .map(|c| {
                if c.is_empty() || c.starts_with('$') {
                    Err(RepairReason::InexpressibleName)
                } else if c.bytes().all(|b| b.is_ascii_digit()) {
                    // An index or a numeric field name: the document decides, the same way
                    // on both sides.
                    Ok(Component::Index)
                } else {
                    Ok(Component::Field)
                }
            })
            .collect();
    };
    let mut out = Vec::new();
    for p in parts {
        match p.map_err(|_| RepairReason::Malformed)? {
            RawBsonRef::String(s) => {
                if s.is_empty() || s.contains('.') || s.starts_with('$') {
                    return Err(RepairReason::InexpressibleName);
                }
                out.push(Component::Field);
            }
            RawBsonRef::Int32(_) | RawBsonRef::Int64(_) => out.push(Component::Index),
            _ => return Err(RepairReason::Malformed),
        }
    }
    // The components joined with dots must be the path the update names.
    if out.len() != path.split('.').count() {
        return Err(RepairReason::InexpressibleName);
    }
    Ok(out)
}

fn parent(path: &str) -> Option<&str> {
    path.rsplit_once('.').map(|(p, _)| p)
}

/// Plans the replay of an update event's `updateDescription`.
pub(crate) fn plan(desc: &RawDocument) -> Plan {
    match try_plan(desc) {
        Ok(deltas) => Plan::Replay(deltas),
        Err(reason) => Plan::Repair(reason),
    }
}

fn try_plan(desc: &RawDocument) -> Result<Vec<Delta>, RepairReason> {
    let disambiguated = desc
        .get_document("disambiguatedPaths")
        .ok()
        .filter(|d| !d.is_empty());
    let mut out = Vec::new();
    if let Ok(truncated) = desc.get_array("truncatedArrays") {
        let mut push = RawDocumentBuf::new();
        for t in truncated {
            let t = t
                .map_err(|_| RepairReason::Malformed)?
                .as_document()
                .ok_or(RepairReason::Malformed)?;
            let field = t.get_str("field").map_err(|_| RepairReason::Malformed)?;
            components(field, disambiguated)?;
            let size = match t.get("newSize").ok().flatten() {
                Some(RawBsonRef::Int32(v)) => v as i64,
                Some(RawBsonRef::Int64(v)) => v,
                Some(RawBsonRef::Double(v)) => v as i64,
                _ => return Err(RepairReason::Malformed),
            };
            let mut spec = RawDocumentBuf::new();
            spec.append("$each", RawArrayBuf::new());
            spec.append("$slice", size);
            push.append(field, spec);
        }
        if !push.is_empty() {
            let mut u = RawDocumentBuf::new();
            u.append("$push", push);
            // Truncating an array changes it in place.
            out.push(Delta {
                update: u,
                guards: Vec::new(),
            });
        }
    }
    let mut guards = Vec::new();
    let mut u = RawDocumentBuf::new();
    if let Ok(set) = desc.get_document("updatedFields") {
        let paths: Vec<&str> = set
            .iter()
            .map(|e| e.map(|(k, _)| k).map_err(|_| RepairReason::Malformed))
            .collect::<Result<_, _>>()?;
        let several = paths.len() > 1;
        for path in &paths {
            let comps = components(path, disambiguated)?;
            match (several, parent(path)) {
                // One new field is appended to its parent by every server: only the parent
                // must be there to receive it.
                (false, None) => {}
                (false, Some(p)) => guards.push(Guard::Container(p.to_string())),
                // Several: each must exist and is changed in place; an array index is
                // positional whether or not it exists (a server pads with nulls).
                (true, Some(p)) if matches!(comps.last(), Some(Component::Index)) => {
                    guards.push(Guard::Array(p.to_string()))
                }
                (true, _) => guards.push(Guard::Exists(path.to_string())),
            }
        }
        if !set.is_empty() {
            u.append("$set", set.to_raw_document_buf());
        }
    }
    if let Ok(removed) = desc.get_array("removedFields") {
        let mut unset = RawDocumentBuf::new();
        for r in removed {
            let path = r
                .map_err(|_| RepairReason::Malformed)?
                .as_str()
                .ok_or(RepairReason::Malformed)?;
            components(path, disambiguated)?;
            if path.contains('.') {
                // The nested field must be there to be removed, or the name held a dot.
                guards.push(Guard::Exists(path.to_string()));
            }
            unset.append(path, "");
        }
        if !unset.is_empty() {
            u.append("$unset", unset);
        }
    }
    if !u.is_empty() {
        if u.as_bytes().len() > MAX_DELTA_BYTES {
            return Err(RepairReason::TooLarge);
        }
        guards.dedup();
        out.push(Delta { update: u, guards });
    }
    Ok(out)
}

/// A delta's guards as filter predicates, one per path, to append beside the `_id` in the
/// write's filter. Flat, not under `$and`: some servers stop using the `_id` index for an
/// `$and` (the test server scans the collection). Two guards on one path keep the stricter.
pub(crate) fn guard_filter(guards: &[Guard]) -> RawDocumentBuf {
    let mut by_path: Vec<(&str, &Guard)> = Vec::new();
    for g in guards {
        let path = match g {
            Guard::Exists(p) | Guard::Array(p) | Guard::Container(p) => p.as_str(),
        };
        match by_path.iter_mut().find(|(p, _)| *p == path) {
            // An array is a container that exists: the array test implies the others.
            Some(slot) if matches!(g, Guard::Array(_)) => slot.1 = g,
            Some(_) => {}
            None => by_path.push((path, g)),
        }
    }
    let mut out = RawDocumentBuf::new();
    for (path, g) in by_path {
        let mut test = RawDocumentBuf::new();
        match g {
            Guard::Exists(_) => test.append("$exists", true),
            Guard::Array(_) => test.append("$type", "array"),
            Guard::Container(_) => {
                let mut types = RawArrayBuf::new();
                types.push("object");
                types.push("array");
                test.append("$type", types);
            }
        }
        out.append(path, test);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    fn raw(d: bson::Document) -> RawDocumentBuf {
        RawDocumentBuf::from_document(&d).unwrap()
    }

    fn replay(d: bson::Document) -> Vec<(bson::Document, Vec<Guard>)> {
        match plan(&raw(d)) {
            Plan::Replay(v) => v
                .into_iter()
                .map(|d| {
                    (
                        bson::Document::try_from(d.update.as_ref()).unwrap(),
                        d.guards,
                    )
                })
                .collect(),
            Plan::Repair(r) => panic!("expected a replay, got a repair ({r:?})"),
        }
    }

    fn repair(d: bson::Document) -> RepairReason {
        match plan(&raw(d)) {
            Plan::Repair(r) => r,
            Plan::Replay(v) => panic!("expected a repair, got {v:?}"),
        }
    }

    #[test]
    fn one_top_level_field_needs_no_guard() {
        let out = replay(doc! {
            "updatedFields": { "v": 87 }, "removedFields": ["gone"], "truncatedArrays": [],
        });
        assert_eq!(
            out,
            vec![(
                doc! { "$set": { "v": 87 }, "$unset": { "gone": "" } },
                vec![]
            )]
        );
    }

    #[test]
    fn one_nested_field_needs_its_parent() {
        let out = replay(doc! { "updatedFields": { "a.b.c": 1 }, "removedFields": [] });
        assert_eq!(out[0].1, vec![Guard::Container("a.b".into())]);
    }

    #[test]
    fn several_fields_must_exist_and_indexes_need_an_array() {
        // The case: `$set: {v: 87, "sub.y.z": "c"}` on `{_id, k}` comes as two
        // top-level fields; neither exists, so the write's guard fails and the document is
        // read from the source.
        let out = replay(doc! {
            "updatedFields": { "sub": { "y": { "z": "c" } }, "v": 87, "arr.3": 1, "arr.4": 2 },
            "removedFields": ["x.y"],
            "truncatedArrays": [{ "field": "t", "newSize": 2 }],
        });
        assert_eq!(
            out[0],
            (
                doc! { "$push": { "t": { "$each": [], "$slice": 2i64 } } },
                vec![]
            )
        );
        assert_eq!(
            out[1].1,
            vec![
                Guard::Exists("sub".into()),
                Guard::Exists("v".into()),
                Guard::Array("arr".into()),
                Guard::Exists("x.y".into()),
            ]
        );
    }

    #[test]
    fn disambiguated_paths_replay_when_every_name_is_expressible() {
        // `$set: {"scores.2024": 1}` on a year-keyed map: a field name, not an index.
        let out = replay(doc! {
            "updatedFields": { "scores.2024": 1, "n": 2 },
            "removedFields": [],
            "disambiguatedPaths": { "scores.2024": ["scores", "2024"] },
        });
        assert_eq!(
            out[0].1,
            vec![
                Guard::Exists("scores.2024".into()),
                Guard::Exists("n".into())
            ]
        );
        let out = replay(doc! {
            "updatedFields": { "a.0": 1, "n": 2 },
            "removedFields": [],
            "disambiguatedPaths": { "a.0": ["a", 0] },
        });
        assert_eq!(
            out[0].1,
            vec![Guard::Array("a".into()), Guard::Exists("n".into())]
        );
    }

    #[test]
    fn names_no_path_can_express_are_repaired() {
        for d in [
            doc! { "updatedFields": { "a.b": 1 }, "disambiguatedPaths": { "a.b": ["a.b"] } },
            doc! { "updatedFields": { "$x": 1 } },
            doc! { "updatedFields": { "a..b": 1 } },
            doc! { "updatedFields": {}, "removedFields": ["$y"] },
        ] {
            assert_eq!(repair(d), RepairReason::InexpressibleName);
        }
    }

    #[test]
    fn a_delta_too_large_to_send_is_repaired() {
        let big = "x".repeat(MAX_DELTA_BYTES);
        assert_eq!(
            repair(doc! { "updatedFields": { "blob": big } }),
            RepairReason::TooLarge
        );
    }

    #[test]
    fn guards_become_flat_filter_predicates() {
        let f = guard_filter(&[
            Guard::Exists("a".into()),
            Guard::Array("b".into()),
            Guard::Container("c.d".into()),
            Guard::Exists("b".into()),
            Guard::Array("b".into()),
        ]);
        assert_eq!(
            bson::Document::try_from(f.as_ref()).unwrap(),
            doc! {
                "a": { "$exists": true },
                "b": { "$type": "array" },
                "c.d": { "$type": ["object", "array"] },
            }
        );
    }
}
