//! A naive, offline cluster copier (no change streams): a reference implementation
//! used to check the fixtures themselves, and a quick way to prepare a destination.

use anyhow::{Context, Result};
use futures::TryStreamExt;
use mongodb::bson::{doc, Document, RawDocumentBuf};
use mongodb::Client;

use super::compare::{list_collection_specs, list_index_specs, user_databases};

/// Copy every user database of `src` into `dst`: collections with their
/// listCollections options, non-`_id` indexes, documents (raw, bypassing
/// validation), then views. Destination namespaces must not exist yet.
pub async fn copy_cluster_naive(src: &Client, dst: &Client) -> Result<()> {
    for dbn in user_databases(src).await? {
        let sdb = src.database(&dbn);
        let ddb = dst.database(&dbn);
        let specs = list_collection_specs(&sdb).await?;
        for (name, spec) in specs
            .iter()
            .filter(|(_, s)| s.get_str("type") != Ok("view"))
        {
            let mut cmd = doc! { "create": name };
            cmd.extend(spec.get_document("options").cloned().unwrap_or_default());
            ddb.run_command(cmd.clone())
                .await
                .with_context(|| format!("{dbn}: {cmd}"))?;
            let mut indexes: Vec<Document> = list_index_specs(&sdb, name)
                .await?
                .into_values()
                .filter(|i| i.get_str("name") != Ok("_id_"))
                .collect();
            if !indexes.is_empty() {
                for i in indexes.iter_mut() {
                    i.insert("v", 2);
                }
                let cmd = doc! { "createIndexes": name, "indexes": indexes };
                ddb.run_command(cmd.clone())
                    .await
                    .with_context(|| format!("{dbn}: {cmd}"))?;
            }
            let docs: Vec<RawDocumentBuf> = sdb
                .collection::<RawDocumentBuf>(name)
                .find(doc! {})
                .await?
                .try_collect()
                .await
                .with_context(|| format!("read {dbn}.{name}"))?;
            if !docs.is_empty() {
                ddb.collection::<RawDocumentBuf>(name)
                    .insert_many(docs)
                    .bypass_document_validation(true)
                    .await
                    .with_context(|| format!("insert into {dbn}.{name}"))?;
            }
        }
        for (name, spec) in specs
            .iter()
            .filter(|(_, s)| s.get_str("type") == Ok("view"))
        {
            let mut cmd = doc! { "create": name };
            cmd.extend(spec.get_document("options").cloned().unwrap_or_default());
            ddb.run_command(cmd.clone())
                .await
                .with_context(|| format!("{dbn}: {cmd}"))?;
        }
    }
    Ok(())
}
