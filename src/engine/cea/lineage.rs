//! Whether a source namespace still holds the same collection as at some point of the change
//! stream.
//!
//! Collection UUIDs cannot answer this everywhere: some servers give a collection a new UUID
//! when it is renamed. The stream itself can: the namespace is unchanged since a resume token
//! when no later drop, rename or dropDatabase touches it. The check reads only the matching DDL
//! events, filtered on the server.

use std::time::Duration;

use bson::{doc, Document};
use mongodb::change_stream::event::ResumeToken;
use mongodb::Client;

/// True when nothing after `token` drops, renames away, or renames over `db.coll`.
pub async fn unchanged_since(
    source: &Client,
    token: &ResumeToken,
    db: &str,
    coll: &str,
) -> mongodb::error::Result<bool> {
    let filter = doc! { "$or": [
        { "operationType": { "$in": ["drop", "rename"] }, "ns.db": db, "ns.coll": coll },
        { "operationType": "rename", "to.db": db, "to.coll": coll },
        { "operationType": "rename", "operationDescription.to.db": db, "operationDescription.to.coll": coll },
        { "operationType": "dropDatabase", "ns.db": db },
    ] };
    let mut stream = source
        .watch()
        .pipeline(vec![doc! { "$match": filter }])
        .show_expanded_events(true)
        .resume_after(token.clone())
        .max_await_time(Duration::from_millis(50))
        .await?
        .with_type::<Document>();
    // The first answer may come from the opening aggregate, which can stop short of the end
    // of the oplog; a getMore after it reads to the end.
    for _ in 0..2 {
        if stream.next_if_any().await?.is_some() {
            return Ok(false);
        }
    }
    Ok(true)
}
