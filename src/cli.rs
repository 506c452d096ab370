//! The command line: subcommands and their flags. Settings of the worker and
//! of the broker come from the environment (`BRIDGE_*`), not from flags.

use std::{net::SocketAddr, path::PathBuf};

use clap::{Parser, Subcommand, ValueEnum};
mod dlq;

pub use dlq::{DlqCommand, Filters};

const AFTER_HELP: &str = "\
Settings come from BRIDGE_* environment variables (all of them: `fanout-bridge run --help`), e.g.
  BRIDGE_AMQP_URL=amqp://guest:guest@127.0.0.1:5672/%2f

Examples:
  fanout-bridge demo                      # try it: stand-in APIs + worker + 1000 messages
  BRIDGE_USER_API_URL=http://users.internal/users \\
  BRIDGE_LOG_API_URL=http://logs.internal/logs fanout-bridge run
  fanout-bridge publish registrations.jsonl
  fanout-bridge dlq stats
  fanout-bridge check                     # configuration, broker, queues, targets
  fanout-bridge completions bash > ~/.local/share/bash-completion/completions/fanout-bridge";

/// `run --help`: an example, then every setting, its default and meaning,
/// rendered from the settings table (`crate::config::table`). Kept beside the
/// flags so that `--help` and the man page say the same.
pub fn run_long_help() -> String {
    format!(
        "\
Example:
  BRIDGE_USER_API_URL=http://127.0.0.1:8080/users \\
  BRIDGE_LOG_API_URL=http://127.0.0.1:8080/logs \\
  fanout-bridge run

Metrics, /healthz and /readyz are served on BRIDGE_METRICS_ADDR.
SIGTERM or Ctrl-C drains in-flight messages for BRIDGE_SHUTDOWN_GRACE_MS, then exits 0.

{}",
        crate::config::table::help()
    )
}

/// How a command prints its result on stdout.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Lines for people
    #[default]
    Text,
    /// One JSON object (shapes in docs/cli.md)
    Json,
}

#[derive(Debug, Parser)]
#[command(
    name = "fanout-bridge",
    version,
    about = "Consume JSON messages from RabbitMQ and deliver each to a user-management API and a logging API at once",
    after_help = AFTER_HELP
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the worker: consume BRIDGE_QUEUE, call both APIs, ack or dead-letter
    #[command(after_help = "\
Example:
  BRIDGE_USER_API_URL=http://127.0.0.1:8080/users \\
  BRIDGE_LOG_API_URL=http://127.0.0.1:8080/logs \\
  fanout-bridge run

Metrics, /healthz and /readyz are served on BRIDGE_METRICS_ADDR (default 0.0.0.0:9464).
SIGTERM or Ctrl-C drains in-flight messages for BRIDGE_SHUTDOWN_GRACE_MS, then exits 0.
Every setting, its default and meaning: `fanout-bridge run --help`.",
        after_long_help = run_long_help())]
    Run,

    /// Publish JSON lines (from FILE, or stdin) to the inbound queue, with confirms
    #[command(after_help = "\
Each non-blank line is one message, published persistent with a fresh message_id.
A line that is not JSON is reported with its line number and not sent; the
others are, and the exit code is then 1.

Examples:
  fanout-bridge publish registrations.jsonl
  echo '{\"user\":\"ada\"}' | fanout-bridge publish --format json")]
    Publish {
        /// File of JSON lines; `-` or nothing reads stdin
        file: Option<PathBuf>,
        /// How to print the result
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        format: OutputFormat,
    },

    /// Inspect and replay the dead-letter queue (BRIDGE_DLQ)
    #[command(after_help = "\
Reading the DLQ never costs a message a delivery attempt: each message read
is copied to the DLQ's tail (confirmed), then the original is removed. A full
read (stats) keeps the order; peek --limit N moves the first N to the tail.

Examples:
  fanout-bridge dlq stats --format json
  fanout-bridge dlq peek --limit 5
  fanout-bridge dlq replay --reason api_failed --dry-run
  fanout-bridge dlq replay --limit 100")]
    Dlq {
        #[command(subcommand)]
        action: DlqCommand,
    },

    /// Serve the DLQ web console: depth, failure groups, messages; replay, export, purge
    #[command(after_help = "\
Open http://127.0.0.1:9465/ (the default --listen) in a browser. The page shows
the DLQ depth (live) and a chart of the last hour, the failure groups of the
latest read (a full pass over the DLQ: \"Read again\" to refresh), a group's
messages (filterable as the dlq commands), a message whole, and replays,
exports or purges a group or selected messages after a confirmation. The same
data as JSON for scripts under /api/ (docs/console.md).

Listening on an address other than loopback needs BRIDGE_CONSOLE_TOKEN; with
it set, every request needs the token (Authorization: Bearer, or the login
form). Requests whose Host is not the console's own address are refused.

Examples:
  fanout-bridge console
  curl -s http://127.0.0.1:9465/api/groups | jq '.groups[0]'
  BRIDGE_CONSOLE_TOKEN=$(openssl rand -hex 24) fanout-bridge console --listen 0.0.0.0:9465
  fanout-bridge console --listen 0.0.0.0:9465 --allow-host dlq.internal.example:443")]
    Console {
        /// Address to listen on (other than loopback needs BRIDGE_CONSOLE_TOKEN)
        #[arg(long, default_value = "127.0.0.1:9465")]
        listen: SocketAddr,
        /// Another Host the console answers to, HOST or HOST:PORT (a reverse proxy's or a port-forward's name); repeatable
        #[arg(long = "allow-host", value_name = "HOST")]
        allow_hosts: Vec<String>,
    },

    /// Serve a stand-in for both APIs (POST on any path), for trying things out and benchmarks
    #[command(after_help = "\
Example:
  fanout-bridge demo-api --listen 127.0.0.1:8080 --latency-ms 20 --fail-rate 0.05
  # then BRIDGE_USER_API_URL=http://127.0.0.1:8080/users BRIDGE_LOG_API_URL=http://127.0.0.1:8080/logs")]
    DemoApi {
        /// Address to listen on
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Delay before each answer, in milliseconds
        #[arg(long, default_value_t = 0)]
        latency_ms: u64,
        /// Fraction of requests answered 503 (0.0 to 1.0)
        #[arg(long, default_value_t = 0.0, value_parser = parse_fraction)]
        fail_rate: f64,
    },

    /// First run: stand-in APIs, the worker, N sample messages, a tally; runs until Ctrl-C
    #[command(after_help = "\
Needs a broker at BRIDGE_AMQP_URL (default amqp://guest:guest@127.0.0.1:5672/%2f),
e.g. `docker compose up -d rabbitmq`. Uses BRIDGE_QUEUE and BRIDGE_DLQ.

Example:
  fanout-bridge demo --count 500")]
    Demo {
        /// How many sample registrations to publish
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
        count: u64,
    },

    /// Check the configuration and try every dependency once: broker nodes, queues, targets
    #[command(after_help = "\
Reads the same BRIDGE_* settings as `run` and prints one line per check: the
configuration, each broker node (connect), the inbound queue and the DLQ
(absent, or present with the arguments the worker declares), each target
(TCP, and the TLS handshake for https://, through the proxy the worker would
use). Nothing is published, consumed or created.
Exit codes: 0 every check passed, 1 a dependency failed, 2 bad configuration.

Examples:
  fanout-bridge check
  fanout-bridge check --format json | jq '.checks[] | select(.ok | not)'")]
    Check {
        /// How to print the result
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        format: OutputFormat,
    },

    /// Exit 0 when the worker's /readyz answers 200, else 1 (a container healthcheck without curl)
    #[command(after_help = "\
Asks http://BRIDGE_METRICS_ADDR/readyz (an unspecified address such as
0.0.0.0 or :: is asked on loopback), or URL, with a 3 s timeout.

Examples:
  fanout-bridge healthcheck
  fanout-bridge healthcheck --url http://127.0.0.1:9464/readyz
  # docker-compose.yml: healthcheck: {test: [\"CMD\", \"fanout-bridge\", \"healthcheck\"]}")]
    Healthcheck {
        /// The readiness URL (http://HOST:PORT[/PATH]; /readyz when no path is given)
        #[arg(long, value_name = "URL")]
        url: Option<String>,
    },

    /// Print a completion script for SHELL
    #[command(after_help = "\
Examples:
  fanout-bridge completions bash > ~/.local/share/bash-completion/completions/fanout-bridge
  fanout-bridge completions zsh > \"${fpath[1]}/_fanout-bridge\"
  fanout-bridge completions fish > ~/.config/fish/completions/fanout-bridge.fish")]
    Completions {
        /// The shell to complete for
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },

    /// Print the man page (roff), or write one page per command into a directory
    #[command(
        hide = true,
        after_help = "\
Examples:
  fanout-bridge man > /usr/local/share/man/man1/fanout-bridge.1
  fanout-bridge man --dir /usr/local/share/man/man1   # also fanout-bridge-run.1, fanout-bridge-dlq-replay.1, …"
    )]
    Man {
        /// Write fanout-bridge.1 and a page per subcommand here instead of printing
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

impl Command {
    /// The log filter when `RUST_LOG` is unset: the worker reports every
    /// message at `info`; the tools print their results on stdout and log
    /// only problems; the demo keeps its terminal for the progress bar.
    pub fn default_log_filter(&self) -> &'static str {
        match self {
            Command::Run | Command::DemoApi { .. } => "info",
            // Each check reports its own failure, and the console's depth
            // sampler its own; lapin's log of a channel that a passive
            // declare of an absent queue closed is noise.
            Command::Check { .. } => "warn,lapin=off",
            Command::Console { .. } => "info,lapin=off",
            Command::Publish { .. }
            | Command::Dlq { .. }
            | Command::Healthcheck { .. }
            | Command::Completions { .. }
            | Command::Man { .. } => "warn",
            Command::Demo { .. } => "error",
        }
    }
}

fn parse_fraction(s: &str) -> Result<f64, String> {
    let f: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if (0.0..=1.0).contains(&f) {
        Ok(f)
    } else {
        Err("must be between 0.0 and 1.0".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_subcommands() {
        let cli = Cli::try_parse_from(["fanout-bridge", "dlq", "peek", "--limit", "3"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Dlq {
                action: DlqCommand::Peek { limit: 3, .. }
            }
        ));
        assert!(Cli::try_parse_from(["fanout-bridge", "demo-api", "--fail-rate", "2"]).is_err());
        assert!(Cli::try_parse_from(["fanout-bridge", "dlq", "replay", "--limit", "0"]).is_err());
    }
}
