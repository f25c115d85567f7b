//! The `streamgate` command line: `serve`, `demo` (the gateway over recorded streams), `events` (a provider SSE body as Agent Event JSON lines),
//! `convert` (a provider SSE body re-encoded in another dialect), `tail` (follow a stream of
//! a running gateway, reconnecting) and `status` (what a running gateway holds).
//!
//! Input is read in chunks and decoded as it arrives; output is flushed after every chunk so
//! the commands work live at the end of a pipe.

mod demo;
mod pump;
mod serve;
mod status;
mod tail;

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::builder::TypedValueParser;
use clap::{Parser, Subcommand};
use providers::Dialect;

use pump::{ConvertSink, EventsSink, Outcome, pump};

const EXIT_CODES: &str = "\
Exit codes:
  0  the stream was complete
  1  the stream was cut before its finish reason, or the provider sent an error event:
     everything decoded is printed, then a terminal error (events: `error` +
     `stream.end{reason:\"error\"}`; convert: the target dialect's error frame)
  2  malformed input (the message names the line and byte; decoded events and the
     terminal error are printed as for 1), a frame too large, an unreadable file, or a
     stream the target dialect cannot express (e.g. several choices into Anthropic)
A closed standard output (`| head`) ends the run quietly with 0.";

const EVENTS_EXAMPLES: &str = "\
Examples:
  streamgate events --from anthropic fixtures/anthropic/text_basic.sse
  curl -sN https://api.openai.com/v1/chat/completions ... | streamgate events --from openai
  streamgate events --from openai body.sse --stream-id req-42 | jq -c 'select(.type==\"text.delta\")'

Exit codes: 0 complete, 1 cut or provider error (terminal error event printed), 2 malformed
input or unreadable file.";

const CONVERT_EXAMPLES: &str = "\
Examples:
  streamgate convert --from anthropic --to openai fixtures/anthropic/tool_use_only.sse
  streamgate convert --from openai --to anthropic < body.sse
  streamgate convert --from openai --to openai --no-usage body.sse

Exit codes: 0 complete, 1 cut or provider error (target dialect's error frame printed), 2
malformed input, unreadable file or a stream the target dialect cannot express.";

const TAIL_HELP: &str = "\
Output: the answer's text inline on standard output; every other event as a marker
`[SEQ TYPE key=value ...]` on standard error (with --json: one envelope JSON per line on
standard output). Reconnects are logged on standard error.

Reconnects follow `[streaming.reconnect]` of the configuration (maxAttempts reconnects in a
row without a new event, backoff initialBackoff..maxBackoff ms, jitter).

Examples:
  streamgate tail st_18f0c2a1b3c4d5e6f7
  streamgate tail st_18f0c2a1b3c4d5e6f7 --after 41 --json | jq -r 'select(.type==\"text.delta\").text'

Exit codes: 0 the stream ended with stream.end (reason not `error`), or was finished with
nothing after --after; 1 it ended in error, or the reconnects ran out; 2 bad usage, bad
configuration, unknown stream or --after beyond its end.";

const STATUS_HELP: &str = "\
Examples:
  streamgate status
  streamgate status --routes
  streamgate status --streaming --buffer --url http://10.0.0.5:8080
  streamgate status --streaming --json | jq '.data[] | select(.status==\"live\")'
  streamgate status --json | jq '.routes.routes[] | select(.recent.error_rate > 0.1)'

Exit codes: 0 shown, 1 the gateway answered with an error, 2 bad usage or the gateway
cannot be reached.

The admin key, when the gateway requires one ([server] admin_key_env or admin_key_sha256), is
read from STREAMGATE_ADMIN_KEY.";

/// streamgate: one Agent Event Stream over OpenAI and Anthropic streaming responses.
#[derive(Debug, Parser)]
#[command(name = "streamgate", version, about, after_help = EXIT_CODES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway: OpenAI (`/v1/chat/completions`) and Anthropic (`/v1/messages`) doors
    /// over the configured providers.
    Serve {
        /// TOML configuration (docs/configuration.md); built-in defaults when absent.
        #[arg(long, env = "STREAMGATE_CONFIG", value_name = "FILE")]
        config: Option<PathBuf>,
        /// Address to listen on (overrides `server.listen`; default 127.0.0.1:8080).
        #[arg(long, value_name = "ADDR")]
        listen: Option<SocketAddr>,
        /// Listen on a non-loopback address without gateway keys (same as `[server] open =
        /// true`): anyone who reaches the port spends the provider keys.
        #[arg(long)]
        allow_open: bool,
    },
    /// Run the gateway over a built-in replay of the recorded OpenAI and Anthropic streams (no
    /// keys, no network) and print how to call it.
    Demo {
        /// Address of the gateway (`127.0.0.1:0` picks a free port; the real one is printed).
        #[arg(long, value_name = "ADDR", default_value = crate::config::DEFAULT_LISTEN)]
        listen: SocketAddr,
        /// Print only `{"gateway":URL,"replay":URL}` as the first line of standard output.
        #[arg(long)]
        json: bool,
        /// Make the replay upstream misbehave at random on this fraction of the requests that
        /// name no fault knob (resets, cuts, overloaded events, 429/503/529), to watch the
        /// gateway keep answers whole.
        #[arg(long, value_name = "RATE", num_args = 0..=1, default_missing_value = "0.3")]
        chaos: Option<f64>,
        /// Journal directory. A restarted demo given the same directory (and `--listen`)
        /// continues the streams it was serving. Default: a fresh temporary directory,
        /// removed when the demo stops.
        #[arg(long, value_name = "DIR")]
        journal: Option<PathBuf>,
        /// Listen on a non-loopback address without gateway keys (same as `[server] open =
        /// true`): anyone who reaches the port spends the provider keys.
        #[arg(long)]
        allow_open: bool,
    },
    /// Decode a provider SSE body and print its Agent Events as JSON lines (with envelope).
    #[command(after_help = EVENTS_EXAMPLES)]
    Events {
        /// Dialect of the input body.
        #[arg(long, value_parser = dialect_arg())]
        from: Dialect,
        /// The SSE body; standard input when omitted.
        file: Option<PathBuf>,
        /// Stream id of the envelope; default: the provider's response id from `stream.start`
        /// ("unknown" when the body fails before the answer starts).
        #[arg(long, value_name = "ID")]
        stream_id: Option<String>,
    },
    /// Decode a provider SSE body and print it re-encoded in another (or the same) dialect.
    #[command(after_help = CONVERT_EXAMPLES)]
    Convert {
        /// Dialect of the input body.
        #[arg(long, value_parser = dialect_arg())]
        from: Dialect,
        /// Dialect to write.
        #[arg(long, value_parser = dialect_arg())]
        to: Dialect,
        /// The SSE body; standard input when omitted.
        file: Option<PathBuf>,
        /// Do not write the OpenAI usage-only chunk (`stream_options.include_usage: false`).
        #[arg(long)]
        no_usage: bool,
    },
    /// Follow a stream of a running gateway (`GET /v1/streams/{id}`) to its end, printing
    /// its events as they come, reconnecting on any break without losing or repeating one.
    #[command(after_help = TAIL_HELP)]
    Tail {
        /// The stream id (the `streamgate-stream-id` header of `POST /v1/streams`).
        stream_id: String,
        /// Start after this seq (default: from the first event).
        #[arg(long, value_name = "SEQ")]
        after: Option<u64>,
        /// The gateway's base URL.
        #[arg(long, env = "STREAMGATE_URL", value_name = "URL", default_value = DEFAULT_URL)]
        url: String,
        /// TOML configuration, for `[streaming.reconnect]`; built-in defaults when absent.
        #[arg(long, env = "STREAMGATE_CONFIG", value_name = "FILE")]
        config: Option<PathBuf>,
        /// Print each envelope as one JSON line.
        #[arg(long)]
        json: bool,
    },
    /// Gateway keys (`[keys.NAME]` in the configuration).
    Keys {
        #[command(subcommand)]
        action: KeysAction,
    },
    /// Show what a running gateway holds: its routes with their circuit breaker and recent
    /// error rate (`GET /admin/routes`), then its streams (`GET /admin/streams`).
    #[command(after_help = STATUS_HELP)]
    Status {
        /// Only the streams view.
        #[arg(long)]
        streaming: bool,
        /// Only the routes view (with --streaming: both).
        #[arg(long)]
        routes: bool,
        /// Add each stream's buffer bytes, the memory totals and the journal's figures.
        #[arg(long)]
        buffer: bool,
        /// The gateway's base URL.
        #[arg(long, env = "STREAMGATE_URL", value_name = "URL", default_value = DEFAULT_URL)]
        url: String,
        /// Print the gateway's JSON as is.
        #[arg(long)]
        json: bool,
    },
}

/// `streamgate keys ...`.
#[derive(Debug, Subcommand)]
enum KeysAction {
    /// Print a fresh random key (give it to the client) and the `[keys.NAME]` lines with its
    /// SHA-256 (paste them into the configuration; the key itself is kept nowhere).
    New {
        /// The key's name in the configuration.
        #[arg(default_value = "NAME")]
        name: String,
    },
}

/// Where `tail` and `status` find the gateway by default (`serve`'s default address).
const DEFAULT_URL: &str = "http://127.0.0.1:8080";

/// A dialect name on the command line: every registered dialect, each with its title.
fn dialect_arg() -> impl clap::builder::TypedValueParser<Value = Dialect> {
    let names = providers::dialects::all()
        .map(|w| clap::builder::PossibleValue::new(w.dialect().as_str()).help(w.title()));
    clap::builder::PossibleValuesParser::new(names).try_map(|name| name.parse::<Dialect>())
}

/// Runs the CLI with the process arguments.
pub fn main() -> ExitCode {
    // Usage errors exit with 2 (clap's default), like malformed input.
    let cli = Cli::parse();
    run(cli.command).code()
}

fn run(command: Command) -> Outcome {
    match command {
        Command::Serve {
            config,
            listen,
            allow_open,
        } => match serve::run(config.as_deref(), listen, allow_open) {
            Ok(()) => Outcome::Complete,
            Err(e) => {
                report(&e.to_string());
                Outcome::Bad
            }
        },
        Command::Demo {
            listen,
            json,
            chaos,
            journal,
            allow_open,
        } => match demo::run(listen, json, chaos, journal, allow_open) {
            Ok(()) => Outcome::Complete,
            Err(e) => {
                report(&e.to_string());
                Outcome::Bad
            }
        },
        Command::Events {
            from,
            file,
            stream_id,
        } => with_input(file, |input, name| {
            let stdout = io::stdout();
            let mut sink = EventsSink::new(stdout.lock(), stream_id);
            pump(input, name, from, &mut sink)
        }),
        Command::Convert {
            from,
            to,
            file,
            no_usage,
        } => with_input(file, |input, name| {
            let stdout = io::stdout();
            let mut sink = ConvertSink::new(stdout.lock(), to, !no_usage);
            pump(input, name, from, &mut sink)
        }),
        Command::Tail {
            stream_id,
            after,
            url,
            config,
            json,
        } => tail::run(&tail::Tail {
            id: &stream_id,
            after,
            url: &url,
            config: config.as_deref(),
            json,
        }),
        Command::Keys {
            action: KeysAction::New { name },
        } => new_key(&name),
        Command::Status {
            streaming,
            routes,
            buffer,
            url,
            json,
        } => status::run(&status::Status {
            url: &url,
            routes,
            streams: streaming,
            buffer,
            json,
        }),
    }
}

/// `streamgate keys new NAME`: the key on the first line, the configuration lines after.
fn new_key(name: &str) -> Outcome {
    let check = crate::keys::GatewayKeyConfig {
        env: Some("-".into()),
        ..Default::default()
    };
    if let Err(e) = check.validate(name) {
        report(&e);
        return Outcome::Bad;
    }
    let key = match crate::keys::generate() {
        Ok(key) => key,
        Err(e) => {
            report(&format!("no randomness from the operating system: {e}"));
            return Outcome::Bad;
        }
    };
    let hash = crate::keys::hex(&crate::keys::sha256(&key));
    let stdout = io::stdout();
    let mut out = stdout.lock();
    let written = writeln!(
        out,
        "{key}\n\n# the key above goes to the client; these lines go into the configuration\n[keys.{name}]\nsha256 = \"{hash}\""
    );
    match written {
        Ok(()) => Outcome::Complete,
        Err(_) => Outcome::Bad,
    }
}

/// Opens FILE (or locks stdin) and hands it to `f` with a name for messages.
fn with_input(file: Option<PathBuf>, f: impl FnOnce(&mut dyn Read, &str) -> Outcome) -> Outcome {
    match file {
        Some(path) => {
            let name = path.display().to_string();
            match File::open(&path) {
                Ok(mut file) => f(&mut file, &name),
                Err(e) => {
                    report(&format!("cannot read {name}: {e}"));
                    Outcome::Bad
                }
            }
        }
        None => {
            let stdin = io::stdin();
            let mut lock = stdin.lock();
            f(&mut lock, "<stdin>")
        }
    }
}

/// Writes a one-line `streamgate: ...` message to stderr.
fn report(message: &str) {
    let stderr = io::stderr();
    let mut lock = stderr.lock();
    // Nothing sensible is left to do when stderr itself is gone.
    let _ = writeln!(lock, "streamgate: {message}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_registered_dialect_is_accepted() {
        for from in Dialect::ALL {
            for to in Dialect::ALL {
                let args = [
                    "streamgate",
                    "convert",
                    "--from",
                    from.as_str(),
                    "--to",
                    to.as_str(),
                ];
                let cli = Cli::try_parse_from(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
                let Command::Convert { from: f, to: t, .. } = cli.command else {
                    panic!("{args:?} is not convert");
                };
                assert_eq!((f, t), (from, to));
            }
        }
        assert!(Cli::try_parse_from(["streamgate", "events", "--from", "gemini"]).is_err());
    }
}
