//! `dlq export`: the matching messages as JSON lines, whole (body,
//! properties, every header, reason, group); removes nothing. `dlq import`
//! reads the same lines back.

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::Context as _;

use super::{dlq_depth, interrupted, select, stop_on_signals, Output, ToolSession};
use crate::{
    broker::{
        dlq_pass::{pass, Fate, Message, Reader, Stop},
        record::record,
    },
    config::BrokerConfig,
    domain::failure::Filter,
};

/// Where the lines go.
enum Sink {
    Stdout(Output),
    File {
        writer: std::io::BufWriter<std::fs::File>,
        error: Option<std::io::Error>,
        stop: Stop,
    },
}

impl Sink {
    fn line(&mut self, line: &str) {
        match self {
            Sink::Stdout(out) => out.line(line),
            Sink::File {
                writer,
                error,
                stop,
            } => {
                if error.is_none() {
                    if let Err(e) = writeln!(writer, "{line}") {
                        *error = Some(e);
                        stop.stop();
                    }
                }
            }
        }
    }
}

struct Exporter<'a> {
    filter: &'a Filter,
    sink: Sink,
    written: u64,
}

impl Reader for Exporter<'_> {
    fn decide(&mut self, d: &Message) -> Fate {
        let (wanted, failed, group) = select(self.filter, d);
        if wanted {
            self.written += 1;
            let line = record(d, &failed.reason, &group.id, failed.replays).to_string();
            self.sink.line(&line);
        }
        Fate::Rotate
    }
}

/// A new file only its owner can read: an export holds whole messages.
fn private_file(path: &Path) -> anyhow::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))
}

/// Writes the matching messages to the file at `path` (the console's
/// download); returns how many. The DLQ keeps them all, in order.
///
/// # Errors
/// When the file cannot be written, the broker cannot be reached, another
/// DLQ operation holds the lock, or `stop` interrupted it.
pub async fn export_to_file(
    broker_cfg: &BrokerConfig,
    filter: &Filter,
    path: &Path,
    stop: &Stop,
) -> anyhow::Result<u64> {
    let file = private_file(path)?;
    in_session!(broker_cfg, "dlq export", |session| async {
        let mut exporter = Exporter {
            filter,
            sink: Sink::File {
                writer: std::io::BufWriter::new(file),
                error: None,
                stop: stop.clone(),
            },
            written: 0,
        };
        let Some(depth) = dlq_depth(&session, broker_cfg).await? else {
            return Ok(0);
        };
        let done = pass(&mut session, broker_cfg, depth, &mut exporter, stop).await;
        if let Some(e) = done.error {
            return Err(e.context("exporting the DLQ"));
        }
        if let Sink::File {
            mut writer, error, ..
        } = exporter.sink
        {
            if let Some(e) = error {
                return Err(anyhow::Error::from(e).context(format!("writing {}", path.display())));
            }
            writer
                .flush()
                .with_context(|| format!("writing {}", path.display()))?;
        }
        if done.stopped {
            return Err(interrupted(done.read));
        }
        Ok(exporter.written)
    })
}

/// Writes the matching messages to `out` (or stdout); the DLQ keeps them
/// all, in order.
///
/// # Errors
/// When the file cannot be written, the broker cannot be reached, another
/// DLQ operation holds the lock, or a signal interrupted it.
pub async fn export(
    broker_cfg: &BrokerConfig,
    filter: &Filter,
    out: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let stop = stop_on_signals()?;
    let sink = match out {
        None => Sink::Stdout(Output::new(stop.clone())),
        Some(path) => Sink::File {
            writer: std::io::BufWriter::new(private_file(path)?),
            error: None,
            stop: stop.clone(),
        },
    };
    let path: Option<PathBuf> = out.map(Path::to_path_buf);
    in_session!(broker_cfg, "dlq export", |session| async {
        let Some(depth) = dlq_depth(&session, broker_cfg).await? else {
            return Ok(ExitCode::SUCCESS);
        };
        let mut exporter = Exporter {
            filter,
            sink,
            written: 0,
        };
        let done = pass(&mut session, broker_cfg, depth, &mut exporter, &stop).await;
        if let Some(e) = done.error {
            return Err(e.context("exporting the DLQ"));
        }
        let written = exporter.written;
        match exporter.sink {
            Sink::Stdout(out) => {
                if done.stopped && !out.closed() {
                    return Err(interrupted(done.read));
                }
            }
            Sink::File {
                mut writer, error, ..
            } => {
                let path = path.as_deref().unwrap_or(Path::new("-"));
                if let Some(e) = error {
                    return Err(
                        anyhow::Error::from(e).context(format!("writing {}", path.display()))
                    );
                }
                writer
                    .flush()
                    .with_context(|| format!("writing {}", path.display()))?;
                if done.stopped {
                    return Err(interrupted(done.read));
                }
                eprintln!("exported {written} messages to {}", path.display());
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}
