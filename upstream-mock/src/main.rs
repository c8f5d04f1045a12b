//! `upstream-mock [--listen ADDR] [--data-dir DIR]`.

use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;
use tokio::net::TcpListener;

#[derive(Parser)]
#[command(
    name = "upstream-mock",
    about = "A small but honest chat backend for railgate"
)]
struct Args {
    /// Address to listen on (port 0 picks a free port; see the READY line).
    #[arg(long, default_value = "127.0.0.1:9000")]
    listen: String,
    /// Keep state here (survives kill -9); without it, state is in memory.
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("upstream-mock: cannot start runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(async move {
        let config = upstream_mock::Config {
            data_dir: args.data_dir,
        };
        let store = match upstream_mock::open_store(&config) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("upstream-mock: cannot open data dir: {e}");
                return ExitCode::from(1);
            }
        };
        let listener = match TcpListener::bind(&args.listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("upstream-mock: cannot listen on {}: {e}", args.listen);
                return ExitCode::from(1);
            }
        };
        let shutdown = shutdown_signal();
        match listener.local_addr() {
            Ok(addr) => println!("READY listen={addr}"),
            Err(e) => {
                eprintln!("upstream-mock: {e}");
                return ExitCode::from(1);
            }
        }
        match upstream_mock::run(listener, store, shutdown).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("upstream-mock: {e}");
                ExitCode::from(1)
            }
        }
    })
}

/// Installs the SIGTERM and SIGINT handlers at once (before READY is printed) and completes on
/// either.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let term = signal(SignalKind::terminate());
        let int = signal(SignalKind::interrupt());
        async move {
            match (term, int) {
                (Ok(mut t), Ok(mut i)) => {
                    tokio::select! {
                        _ = t.recv() => {}
                        _ = i.recv() => {}
                    }
                }
                (Ok(mut t), Err(_)) => {
                    t.recv().await;
                }
                (Err(_), Ok(mut i)) => {
                    i.recv().await;
                }
                (Err(_), Err(_)) => std::future::pending().await,
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
