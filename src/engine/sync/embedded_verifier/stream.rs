//! One side's change stream, as the verifier reads it: which documents changed, and whether a
//! namespace's definition did.
//!
//! The source stream says what the applier must still bring over; the destination stream
//! says what changed there, including writes that did not come from the sync.

use std::time::Duration;

use bson::{doc, Bson, RawDocumentBuf, Timestamp};
use mongodb::change_stream::event::ResumeToken;
use mongodb::change_stream::ChangeStream;
use mongodb::Client;

use crate::contract::filter::{Scope, METADATA_DB};
use crate::engine::sync::embedded_verifier::store::StreamPos;
use crate::mongo::{self, codes, error_code};

/// How long the server may hold a read that has nothing to return.
const MAX_AWAIT: Duration = Duration::from_millis(200);

/// What one read found.
#[derive(Debug)]
pub struct Changes {
    /// Documents changed, by namespace, `_id` and the side's time of the change.
    pub documents: Vec<(String, Bson, Timestamp)>,
    /// A namespace was created, dropped, renamed or redefined.
    pub ddl: bool,
    /// The stream had nothing more: it is caught up to `probe`.
    pub idle: bool,
    /// Events read (in scope or not).
    pub events: usize,
    /// The side's time just before the read.
    pub probe: Timestamp,
    /// The side's time of the last event read.
    pub last: Option<Timestamp>,
    pub token: Option<ResumeToken>,
}

pub struct SideStream {
    client: Client,
    stream: ChangeStream<RawDocumentBuf>,
}

/// The stream was opened or resumed from a point the server's oplog no longer holds.
pub fn history_lost(e: &mongodb::error::Error) -> bool {
    error_code(e) == Some(codes::CHANGE_STREAM_HISTORY_LOST)
}

impl SideStream {
    pub async fn open(client: &Client, pos: &StreamPos) -> mongodb::error::Result<Self> {
        let watch = client
            .watch()
            .pipeline(vec![doc! { "$match": { "ns.db": { "$nin": ["admin", "config", "local", METADATA_DB] } } }])
            .show_expanded_events(true)
            .max_await_time(MAX_AWAIT)
            .batch_size(1000);
        let watch = match &pos.token {
            Some(t) => watch.resume_after(t.clone()),
            None => watch.start_at_operation_time(pos.start_at),
        };
        Ok(Self {
            client: client.clone(),
            stream: watch.await?.with_type::<RawDocumentBuf>(),
        })
    }

    /// Reads what the server has now, up to `max` events.
    pub async fn read(&mut self, scope: &Scope, max: usize) -> mongodb::error::Result<Changes> {
        let mut out = Changes {
            documents: Vec::new(),
            ddl: false,
            idle: false,
            events: 0,
            probe: mongo::cluster_time(&self.client).await?,
            last: None,
            token: None,
        };
        while out.events < max {
            let Some(ev) = self.stream.next_if_any().await? else {
                out.idle = true;
                break;
            };
            out.events += 1;
            let ts = ev.get_timestamp("clusterTime").ok();
            out.last = ts.or(out.last);
            let op = ev.get_str("operationType").unwrap_or("");
            let ns = ev.get_document("ns").ok();
            let db = ns.and_then(|n| n.get_str("db").ok()).unwrap_or("");
            let coll = ns.and_then(|n| n.get_str("coll").ok()).unwrap_or("");
            match op {
                "insert" | "update" | "replace" | "delete" if scope.includes(db, coll) => {
                    let id = ev
                        .get_document("documentKey")
                        .ok()
                        .and_then(|k| k.get("_id").ok().flatten())
                        .and_then(|id| Bson::try_from(id.to_raw_bson()).ok());
                    if let (Some(id), Some(ts)) = (id, ts) {
                        out.documents.push((format!("{db}.{coll}"), id, ts));
                    }
                }
                "insert" | "update" | "replace" | "delete" => {}
                _ => {
                    if db.is_empty() || scope.may_include_db(db) {
                        out.ddl = true;
                    }
                }
            }
            // Caught up with the time the read began: what comes after is the next read's.
            // (Waiting for an empty batch instead never ends while writes keep coming, and
            // some servers hold each batch for the whole await time.)
            if ts.is_some_and(|t| t >= out.probe) {
                out.idle = true;
                break;
            }
        }
        out.token = self.stream.resume_token();
        Ok(out)
    }
}
