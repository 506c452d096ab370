//! The matching messages one page at a time, for the console's
//! `/api/messages`: one full pass (a rotation: the order stays) counts every
//! match and keeps the records of the requested page.

use serde::Serialize;
use serde_json::Value;

use super::{dlq_depth, interrupted, select, ToolSession};
use crate::broker::record::record;
use crate::{
    broker::dlq_pass::{pass, Fate, Message, Reader, Stop},
    config::BrokerConfig,
    domain::failure::Filter,
};

/// Body bytes one page keeps at most: past it the page ends early and
/// `next_offset` says where the next one starts (memory is bounded by bytes,
/// not only by a count).
pub const PAGE_BYTES: usize = 32 * 1024 * 1024;

/// One page of matching messages, each an export record (`dlq export`'s
/// line).
#[derive(Debug, Default, Serialize)]
pub struct MessagePage {
    /// How many messages match, on every page.
    pub total: u64,
    pub offset: u64,
    /// Where the next page starts, when there is one.
    pub next_offset: Option<u64>,
    pub messages: Vec<Value>,
}

struct Lister<'a> {
    filter: &'a Filter,
    offset: u64,
    limit: usize,
    page: MessagePage,
    bytes: usize,
    full: bool,
}

impl Reader for Lister<'_> {
    fn decide(&mut self, d: &Message) -> Fate {
        let (wanted, failed, group) = select(self.filter, d);
        if wanted {
            let index = self.page.total;
            self.page.total += 1;
            if index >= self.offset && !self.full {
                let fits = self.page.messages.is_empty() || self.bytes + d.data.len() <= PAGE_BYTES;
                if self.page.messages.len() < self.limit && fits {
                    self.bytes += d.data.len();
                    self.page
                        .messages
                        .push(record(d, &failed.reason, &group.id, failed.replays));
                } else {
                    self.full = true;
                    self.page.next_offset = Some(index);
                }
            }
        }
        Fate::Rotate
    }
}

/// Reads the whole DLQ once and returns the matches `offset..offset+limit`
/// (fewer when their bodies pass [`PAGE_BYTES`]) and how many match in all.
///
/// # Errors
/// When the broker cannot be reached, another DLQ operation holds the lock,
/// a copy is not confirmed, or `stop` interrupted it.
pub async fn list_messages(
    broker_cfg: &BrokerConfig,
    filter: &Filter,
    offset: u64,
    limit: usize,
    stop: &Stop,
) -> anyhow::Result<MessagePage> {
    in_session!(broker_cfg, "dlq list", |session| async {
        let mut lister = Lister {
            filter,
            offset,
            limit,
            page: MessagePage {
                offset,
                ..MessagePage::default()
            },
            bytes: 0,
            full: false,
        };
        let Some(depth) = dlq_depth(&session, broker_cfg).await? else {
            return Ok(lister.page);
        };
        let done = pass(&mut session, broker_cfg, depth, &mut lister, stop).await;
        if let Some(e) = done.error {
            return Err(e.context("reading the DLQ's messages"));
        }
        if done.stopped {
            return Err(interrupted(done.read));
        }
        Ok(lister.page)
    })
}
