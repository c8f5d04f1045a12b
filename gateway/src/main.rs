//! The `railgate` command line: parses arguments and hands off to the library.

use clap::{Parser, Subcommand};
use railgate::clock::now;
use railgate::env::ProcessEnv;
use railgate::mint;
use railgate_policy::ticket::TicketRequest;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "railgate",
    version,
    about = "Reverse-proxy sidecar for safe SSE, WebSocket and HTTP chat rails"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (the default command).
    Serve {
        /// Config file (default: ./railgate.toml if present, else the embedded defaults).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Client listener, overriding the config.
        #[arg(long)]
        listen: Option<String>,
        /// Admin listener, overriding the config.
        #[arg(long)]
        admin_listen: Option<String>,
        /// Default upstream base URL, overriding the config.
        #[arg(long)]
        upstream: Option<String>,
    },
    /// Start an embedded mock upstream and a gateway with fresh secrets, and print client commands.
    Demo,
    /// Validate a config; print every problem with its key path; exit 0 or 64.
    Check {
        /// Config file (default: ./railgate.toml if present, else the embedded defaults).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Print an HS256 JWT signed with AUTH_JWT_SIGNING (development helper).
    Token {
        /// Tenant granted by the token (`tenant_id` claim).
        #[arg(long)]
        tenant: String,
        /// Subject.
        #[arg(long, default_value = "dev-user")]
        sub: String,
        /// `env` claim.
        #[arg(long)]
        env: Option<String>,
        /// Lifetime (`1h`, `15m`, `90s`, or seconds).
        #[arg(long, default_value = "1h")]
        ttl: String,
        /// Extra claim `k=v` (v is parsed as JSON when it is JSON), repeatable.
        #[arg(long = "claim")]
        claims: Vec<String>,
        /// Config file whose `env` the token's `env` claim takes when `--env` is not given
        /// (default: ./railgate.toml if present; without a file the token has no `env` claim).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Print a single-use ticket signed with ENGINES_TICKET_SECRET.
    Ticket {
        /// Tenant.
        #[arg(long)]
        tenant: String,
        /// Subject.
        #[arg(long)]
        sub: String,
        /// Thread the ticket opens.
        #[arg(long)]
        thread: String,
        /// Mode.
        #[arg(long)]
        mode: Option<String>,
        /// Project.
        #[arg(long)]
        project: Option<String>,
        /// App.
        #[arg(long)]
        app: Option<String>,
        /// Surface.
        #[arg(long)]
        surface: Option<String>,
        /// Lifetime (default 60s, at most 300s).
        #[arg(long, default_value = "60s")]
        ttl: String,
        /// Config file whose `env` the ticket is bound to (default: ./railgate.toml if
        /// present, else `ENV`, else `dev`).
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

fn usage_error(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("railgate: {msg}");
    ExitCode::from(64)
}

/// Prints a minted credential, or the usage error.
fn print_minted(minted: Result<String, mint::MintError>) -> ExitCode {
    match minted {
        Ok(t) => {
            println!("{t}");
            ExitCode::SUCCESS
        }
        Err(e) => usage_error(e),
    }
}

fn token(spec: mint::TokenSpec, env: &ProcessEnv) -> ExitCode {
    print_minted(mint::token(&spec, env, now()))
}

fn ticket(request: TicketRequest, env: &ProcessEnv) -> ExitCode {
    print_minted(mint::ticket(request, env, now(), mint::random_hex_id()))
}

/// `railgate token`: the `env` claim is `--env`, else the config file's `env` (no file: none).
fn token_command(
    mut spec: mint::TokenSpec,
    ttl: &str,
    config: Option<&std::path::Path>,
    env: &ProcessEnv,
) -> ExitCode {
    spec.ttl = match mint::parse_ttl(ttl) {
        Ok(t) => t,
        Err(e) => return usage_error(e),
    };
    if spec.env.is_none() {
        spec.env = match railgate::cli::file_env(config, env) {
            Ok(e) => e,
            Err(code) => return code,
        };
    }
    token(spec, env)
}

/// `railgate ticket`: bound to the config's `env`; notes the fields the stream routes require
/// that the ticket does not carry.
fn ticket_command(
    mut request: TicketRequest,
    ttl: &str,
    config: Option<&std::path::Path>,
    env: &ProcessEnv,
) -> ExitCode {
    request.ttl_s = match mint::parse_ttl(ttl) {
        Ok(t) => Some(t.as_secs()),
        Err(e) => return usage_error(e),
    };
    let (cfg, _) = match railgate::cli::load(config, env, &Default::default()) {
        Ok(c) => c,
        Err(code) => return code,
    };
    request.env = cfg.env.clone();
    if let Some(note) = railgate::cli::ticket_hint(&cfg, &request) {
        eprintln!("railgate: note: {note}");
    }
    ticket(request, env)
}

#[cfg(feature = "demo")]
fn demo() -> ExitCode {
    railgate::demo::run()
}

#[cfg(not(feature = "demo"))]
fn demo() -> ExitCode {
    usage_error("this build has no demo (it was built without the `demo` feature)")
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // `--help` and `--version` print to stdout and succeed; a usage error exits 64.
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(railgate::cli::EXIT_USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let env = ProcessEnv;
    match cli.command {
        Some(Command::Token {
            tenant,
            sub,
            env: claim_env,
            ttl,
            claims,
            config,
        }) => token_command(
            mint::TokenSpec {
                tenant,
                sub,
                env: claim_env,
                ttl: Default::default(),
                claims,
            },
            &ttl,
            config.as_deref(),
            &env,
        ),
        Some(Command::Ticket {
            tenant,
            sub,
            thread,
            mode,
            project,
            app,
            surface,
            ttl,
            config,
        }) => ticket_command(
            TicketRequest {
                sub,
                tenant_id: tenant,
                env: String::new(),
                thread_id: thread,
                ttl_s: None,
                session_expires_at: None,
                mode,
                project_id: project,
                app_id: app,
                surface_id: surface,
            },
            &ttl,
            config.as_deref(),
            &env,
        ),
        Some(Command::Serve {
            config,
            listen,
            admin_listen,
            upstream,
        }) => {
            let flags = railgate::config::Overrides {
                listen,
                admin_listen,
                upstream,
            };
            railgate::cli::serve(config.as_deref(), &env, &flags)
        }
        Some(Command::Check { config }) => railgate::cli::check(config.as_deref(), &env),
        Some(Command::Demo) => demo(),
        None => railgate::cli::serve(None, &env, &railgate::config::Overrides::default()),
    }
}

/// jemalloc instead of the system allocator: per-connection memory, allocation cost on the
/// request path and a long-running process's fragmentation are all lower with it
/// (docs/BENCHMARKS.md, "Optimisations made"). Its thread cache is set deeper than jemalloc's
/// default when it is built (`.cargo/config.toml`; docs/BENCHMARKS.md, item 49).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
