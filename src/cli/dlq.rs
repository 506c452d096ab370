//! The `dlq` subcommands and the filters they share.

use std::path::PathBuf;

use clap::Subcommand;
use time::OffsetDateTime;

use super::OutputFormat;
use crate::domain::filter::{parse_time, Filter};

/// Which DLQ messages a command acts on (several combine with AND; the
/// others stay where they are, in order).
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
pub struct Filters {
    /// Only messages with this reason (api_failed, invalid_payload, delivery_limit, unknown)
    #[arg(long, value_name = "R")]
    pub reason: Option<String>,
    /// Only messages for which this target failed
    #[arg(long, value_name = "T")]
    pub target: Option<String>,
    /// Only messages of this failure group (its 8-hex id, from dlq groups)
    #[arg(long, value_name = "ID")]
    pub group: Option<String>,
    /// Only the message with this message_id (repeatable)
    #[arg(long = "id", value_name = "MESSAGE_ID")]
    pub ids: Vec<String>,
    /// Only messages dead-lettered at or after T (RFC 3339, or a duration back from now: 30m, 2h, 7d)
    #[arg(long, value_name = "T", value_parser = parse_when)]
    pub since: Option<OffsetDateTime>,
    /// Only messages dead-lettered at or before T (RFC 3339, or a duration back from now)
    #[arg(long, value_name = "T", value_parser = parse_when)]
    pub until: Option<OffsetDateTime>,
    /// Only messages whose body or x-bridge-error contains TEXT
    #[arg(long, value_name = "TEXT")]
    pub grep: Option<String>,
}

impl Filters {
    /// The filter; an empty value counts as not given (an empty `--grep`
    /// would otherwise match every message and pass for a filter, so
    /// `purge --grep "" --yes` would remove everything without `--all`).
    pub fn to_filter(&self) -> Filter {
        let given = |v: &Option<String>| v.clone().filter(|s| !s.trim().is_empty());
        Filter {
            reason: given(&self.reason),
            target: given(&self.target),
            group: given(&self.group).map(|g| g.to_ascii_lowercase()),
            ids: self.ids.iter().filter(|i| !i.is_empty()).cloned().collect(),
            since: self.since,
            until: self.until,
            grep: self.grep.clone().filter(|s| !s.is_empty()),
        }
    }
}

fn parse_when(s: &str) -> Result<OffsetDateTime, String> {
    parse_time(s, OffsetDateTime::now_utc())
}

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// Print the DLQ depth and a count per failure reason
    #[command(after_help = "\
Reads every message once (each goes round to the tail: the order is kept).
Reasons: api_failed, invalid_payload, delivery_limit (the broker dead-lettered
it past a quorum queue's delivery limit), unknown. With filters, only the
matching messages are counted.

Examples:
  fanout-bridge dlq stats
  fanout-bridge dlq stats --since 1h --format json | jq .reasons")]
    Stats {
        #[command(flatten)]
        filters: Filters,
        /// How to print the result
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        format: OutputFormat,
    },
    /// Print dead-lettered messages as JSON lines (body and x-bridge-* headers), removing nothing
    #[command(after_help = "\
The messages printed move to the DLQ's tail (copied, confirmed, then the
original removed), so the next peek shows the next ones; a delivery attempt is
never spent. Peeking at every message leaves the order as it was; with a
filter, peek goes round the whole DLQ, so the order stays too.

Examples:
  fanout-bridge dlq peek --limit 5 | jq .
  fanout-bridge dlq peek --id 7f3c0e1a-… --limit 1")]
    Peek {
        /// At most this many messages
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
        limit: u32,
        #[command(flatten)]
        filters: Filters,
    },
    /// Move messages from the DLQ back to the inbound queue (confirmed before removal)
    #[command(after_help = "\
Each message keeps x-bridge-done-targets, so an API that already accepted it is
not called again, and counts x-bridge-replays, so one that fails again stands
out. Fix the cause first (e.g. the API is back), then replay.

With filters, the other messages stay in the DLQ in their order; so does
everything with --dry-run, which moves nothing and spends no delivery attempt.

Examples:
  fanout-bridge dlq replay --limit 100
  fanout-bridge dlq replay            # everything that was in the DLQ when it started
  fanout-bridge dlq replay --group 3f9a2c01 --rate 50
  fanout-bridge dlq replay --reason delivery_limit --dry-run
  fanout-bridge dlq replay --reason api_failed --format json")]
    Replay {
        /// At most this many messages (default: the DLQ depth at start)
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        limit: Option<u32>,
        #[command(flatten)]
        filters: Filters,
        /// At most N messages per second to the inbound queue
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        rate: Option<u32>,
        /// Print what would move; move nothing
        #[arg(long)]
        dry_run: bool,
        /// How to print the result
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        format: OutputFormat,
    },
    /// Print the DLQ's failure groups (one per cause), largest first
    #[command(after_help = "\
A group is a reason, the failed targets and each one's error class (HTTP
status, timeout, connection, tls), or the kind of JSON error. Its 8-hex id is
derived from that cause alone: the same in every command and on every machine.
Use it with --group to peek, export, replay or purge that group.

Examples:
  fanout-bridge dlq groups
  fanout-bridge dlq groups --since 2h --format json | jq '.groups[0]'")]
    Groups {
        #[command(flatten)]
        filters: Filters,
        /// How to print the result
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        format: OutputFormat,
    },
    /// Write the matching messages as JSON lines, whole (body, properties, every header); removes nothing
    #[command(after_help = "\
Each line: message_id, reason, group, replays, body (or body_base64 when it is
not UTF-8), properties and headers. Edit a line and give it to dlq import to
retry the message; dlq purge can then remove the original.

Examples:
  fanout-bridge dlq export --group 3f9a2c01 --out failed.jsonl
  fanout-bridge dlq export --grep customer-42 | jq .body")]
    Export {
        #[command(flatten)]
        filters: Filters,
        /// Write to FILE instead of standard output
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Publish exported lines (edited or not) to the inbound queue, as replay would
    #[command(after_help = "\
Each valid line is published (mandatory, confirmed) with its message_id and
x-bridge-done-targets, and x-bridge-replays counted. A line that is not a valid
export record is reported with its line number and not sent; the exit code is
then 1.

Examples:
  fanout-bridge dlq import failed.jsonl --dry-run
  fanout-bridge dlq import failed.jsonl")]
    Import {
        /// The export file
        file: PathBuf,
        /// Check every line; publish nothing
        #[arg(long)]
        dry_run: bool,
        /// How to print the result
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        format: OutputFormat,
    },
    /// Remove the matching messages from the DLQ for good
    #[command(after_help = "\
Needs --yes to remove, or --dry-run to show what would be removed; without a
filter it also needs --all. The other messages stay, in order. Export first
what you may want back.

Examples:
  fanout-bridge dlq purge --reason invalid_payload --dry-run
  fanout-bridge dlq purge --group 3f9a2c01 --yes")]
    Purge {
        #[command(flatten)]
        filters: Filters,
        /// Every message (needed when no filter is given)
        #[arg(long)]
        all: bool,
        /// Remove them (without it, nothing is removed)
        #[arg(long, conflicts_with = "dry_run")]
        yes: bool,
        /// Show what would be removed; remove nothing
        #[arg(long)]
        dry_run: bool,
        /// How to print the result
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        format: OutputFormat,
    },
}
