//! One DLQ operation at a time: a lock held on the broker.

use lapin::types::FieldTable;

use super::tool_session::ToolSession;

/// Another DLQ operation holds the lock: this one did nothing.
#[derive(Debug, thiserror::Error)]
#[error(
    "another DLQ operation is running on {dlq} (a dlq command or the console holds {lock}); \
     try again when it is done"
)]
pub struct DlqBusy {
    pub dlq: String,
    pub lock: String,
}

/// The name of a DLQ's lock queue.
pub fn lock_name(dlq: &str) -> String {
    format!("{dlq}.lock")
}

/// Takes the DLQ's lock for as long as `session` is open: an exclusive,
/// auto-deleted queue `<dlq>.lock`, which the broker gives one connection at
/// a time and drops when that connection goes (a `kill -9` included), so two
/// readers never read each other's copies and a crashed one frees it.
///
/// # Errors
/// [`DlqBusy`] when another connection holds it; a broker error otherwise.
pub async fn lock(session: &ToolSession, dlq: &str) -> anyhow::Result<()> {
    let name = lock_name(dlq);
    let channel = session.scratch_channel().await?;
    let declared = channel
        .queue_declare(
            name.as_str().into(),
            lapin::options::QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await;
    super::close_channel(&channel).await;
    match declared {
        Ok(_) => Ok(()),
        Err(e) if super::is_resource_locked(&e) => Err(DlqBusy {
            dlq: dlq.to_owned(),
            lock: name,
        }
        .into()),
        Err(e) => Err(anyhow::Error::from(e).context("taking the DLQ's lock")),
    }
}
