//! The destination's disk space, as mongosync 1.22 checks it at `/start`: the on-disk size of
//! the source collections in scope and their indexes, times 1.25 (compression differences,
//! temporary index-build space, oplog growth), against the destination filesystem's free
//! space. A best-effort guardrail: skipped where the servers report no sizes or no filesystem
//! statistics (`dbStats` `fsTotalSize`/`fsUsedSize`), and with `skipDiskSpaceCheck: true`.

use bson::{doc, Bson, Document};
use futures::StreamExt;
use mongodb::Client;

use crate::contract::filter::Scope;
use crate::mongo::catalog::{self, CollKind};

/// mongosync's margin over the source's on-disk size.
pub const MARGIN: f64 = 1.25;

/// What the check found.
#[derive(Debug, Clone, PartialEq)]
pub enum DiskSpace {
    /// Enough room.
    Enough { needed: u64, free: u64 },
    /// Not enough: the sync would fill the destination's disk.
    Short { needed: u64, free: u64 },
    /// The servers report no sizes or no filesystem statistics; nothing was judged.
    Unknown(String),
}

/// Judges `source_bytes` (on-disk data and indexes) against the destination filesystem.
pub fn judge(source_bytes: u64, fs_total: Option<u64>, fs_used: Option<u64>) -> DiskSpace {
    let (Some(total), Some(used)) = (fs_total, fs_used) else {
        return DiskSpace::Unknown(
            "the destination reports no filesystem statistics (dbStats fsTotalSize/fsUsedSize)"
                .into(),
        );
    };
    let free = total.saturating_sub(used);
    let needed = (source_bytes as f64 * MARGIN).ceil() as u64;
    if needed > free {
        DiskSpace::Short { needed, free }
    } else {
        DiskSpace::Enough { needed, free }
    }
}

/// The message `/start` refuses with when the space is short.
pub fn shortage_message(needed: u64, free: u64) -> String {
    format!(
        "the destination's filesystem has {} free, but the collections and indexes to sync take about {} on the source's disk and the sync needs {} (1.25 times that, for compression differences, index builds and the oplog); free space on the destination, narrow the sync with includeNamespaces, or set skipDiskSpaceCheck: true to start anyway",
        human_bytes(free),
        human_bytes((needed as f64 / MARGIN) as u64),
        human_bytes(needed)
    )
}

/// Bytes in binary units (`1.5 GiB`), as every report words them.
pub fn human_bytes(n: u64) -> String {
    crate::contract::progress::human_bytes(i64::try_from(n).unwrap_or(i64::MAX))
}

fn number(d: &Document, key: &str) -> Option<u64> {
    match d.get(key)? {
        Bson::Int32(n) => u64::try_from(*n).ok(),
        Bson::Int64(n) => u64::try_from(*n).ok(),
        Bson::Double(n) if *n >= 0.0 => Some(*n as u64),
        _ => None,
    }
}

/// Gathers the sizes and judges them: the source collections in `scope` (`collStats`
/// `storageSize` + `totalIndexSize`) against the destination's `dbStats` filesystem figures.
pub async fn check(source: &Client, destination: &Client, scope: &Scope) -> DiskSpace {
    // The destination's filesystem first: where it reports none there is nothing to judge
    // against, and sizing the source (a scan per collection on some servers) is skipped.
    let (fs_total, fs_used) = match destination
        .database("admin")
        .run_command(doc! { "dbStats": 1 })
        .await
    {
        Ok(s) => (number(&s, "fsTotalSize"), number(&s, "fsUsedSize")),
        Err(e) => {
            return DiskSpace::Unknown(format!(
                "the destination reports no dbStats: {}",
                crate::mongo::describe(&e)
            ))
        }
    };
    if fs_total.is_none() || fs_used.is_none() {
        return judge(0, fs_total, fs_used);
    }
    let specs = match catalog::list_all(source, scope).await {
        Ok(s) => s,
        Err(e) => {
            return DiskSpace::Unknown(format!(
                "cannot list the source's collections: {}",
                crate::mongo::describe(&e)
            ))
        }
    };
    // A few at a time: thousands of collections cost one round trip each.
    let names: Vec<(String, String)> = specs
        .iter()
        .filter(|s| s.kind != CollKind::View)
        .map(|s| (s.db.clone(), s.name.clone()))
        .collect();
    let sizes: Vec<Result<u64, String>> = futures::stream::iter(names)
        .map(|(db, name)| async move {
            match source
                .database(&db)
                .run_command(doc! { "collStats": &name })
                .await
            {
                Ok(s) => Ok(number(&s, "storageSize")
                    .or_else(|| number(&s, "size"))
                    .unwrap_or(0)
                    + number(&s, "totalIndexSize").unwrap_or(0)),
                Err(e) => Err(format!(
                    "the source reports no size for {db}.{name}: {}",
                    crate::mongo::describe(&e)
                )),
            }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    let mut bytes = 0u64;
    for size in sizes {
        match size {
            Ok(n) => bytes += n,
            Err(why) => return DiskSpace::Unknown(why),
        }
    }
    judge(bytes, fs_total, fs_used)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_margin_and_the_missing_statistics() {
        assert_eq!(
            judge(800, Some(10_000), Some(9_001)),
            DiskSpace::Short {
                needed: 1000,
                free: 999
            }
        );
        assert_eq!(
            judge(800, Some(10_000), Some(9_000)),
            DiskSpace::Enough {
                needed: 1000,
                free: 1000
            }
        );
        assert!(matches!(judge(800, None, Some(1)), DiskSpace::Unknown(_)));
        let m = shortage_message(5 << 30, 1 << 30);
        assert!(
            m.contains("1.0 GiB free") && m.contains("5.0 GiB") && m.contains("skipDiskSpaceCheck"),
            "{m}"
        );
    }
}
