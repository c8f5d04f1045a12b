//! The commands behind `railgate serve` and `railgate check`.

use crate::config::{self, Config, Overrides};
use crate::env::Env;
use crate::startup;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Exit code for bad configuration or usage.
pub const EXIT_USAGE: u8 = 64;

/// Reads the config file: `--config`, else `./railgate.toml` if present, else none (defaults).
pub fn read_config_file(explicit: Option<&Path>) -> Result<Option<(PathBuf, String)>, String> {
    let path = match explicit {
        Some(p) => p.to_path_buf(),
        None => {
            let local = PathBuf::from("railgate.toml");
            if !local.exists() {
                return Ok(None);
            }
            local
        }
    };
    std::fs::read_to_string(&path)
        .map(|t| Some((path.clone(), t)))
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Loads and validates; returns the config and where it came from ([`startup::config_source`]).
/// On failure prints every problem and returns the exit code.
pub fn load(
    explicit: Option<&Path>,
    env: &dyn Env,
    flags: &Overrides,
) -> Result<(Config, String), ExitCode> {
    let file = read_config_file(explicit).map_err(|e| {
        eprintln!("railgate: {e}");
        ExitCode::from(EXIT_USAGE)
    })?;
    let loaded = config::load(file.as_ref().map(|(_, t)| t.as_str()), env, flags);
    let base = file
        .as_ref()
        .and_then(|(p, _)| p.parent())
        .map(Path::to_path_buf);
    let source = startup::config_source(file.as_ref().map(|(p, _)| p.as_path()));
    loaded
        .map(|mut c| {
            if let Some(base) = base {
                c.resolve_paths(&base);
            }
            (c, source)
        })
        .map_err(|errs| {
            let from = file
                .as_ref()
                .map(|(p, _)| p.display().to_string())
                .unwrap_or_else(|| "embedded defaults".into());
            eprintln!(
                "railgate: configuration ({from}) has {} problem(s):",
                errs.0.len()
            );
            for e in &errs.0 {
                eprintln!("  {e}");
            }
            ExitCode::from(EXIT_USAGE)
        })
}

/// `railgate check`: validates the config and the key/registry files it names.
pub fn check(explicit: Option<&Path>, env: &dyn Env) -> ExitCode {
    let (config, _) = match load(explicit, env, &Overrides::default()) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let warning = startup::no_credentials_warning(&config.auth, env);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("railgate: {e}");
            return ExitCode::from(1);
        }
    };
    let built = runtime.block_on(async { crate::Gateway::new(config, env).map(|_| ()) });
    match built {
        Ok(()) => {
            println!("configuration is valid");
            if let Some(w) = warning {
                eprintln!("railgate: warning: {w}");
            }
            ExitCode::SUCCESS
        }
        Err(problems) => {
            eprintln!("railgate: configuration has {} problem(s):", problems.len());
            for p in problems {
                eprintln!("  {p}");
            }
            ExitCode::from(EXIT_USAGE)
        }
    }
}

/// `railgate serve`.
pub fn serve(explicit: Option<&Path>, env: &dyn Env, flags: &Overrides) -> ExitCode {
    let (config, source) = match load(explicit, env, flags) {
        Ok(c) => c,
        Err(code) => return code,
    };
    crate::init_logging();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if config.workers > 0 {
        builder.worker_threads(config.workers);
    }
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("railgate: cannot start runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(async move {
        let gw = match crate::Gateway::new(config, env) {
            Ok(g) => g,
            Err(problems) => {
                for p in problems {
                    eprintln!("railgate: {p}");
                }
                return ExitCode::from(EXIT_USAGE);
            }
        };
        let listeners = match crate::bind(&gw).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("railgate: cannot listen on {e}");
                return ExitCode::from(1);
            }
        };
        let shutdown = shutdown_signal();
        match crate::ready_line(&listeners) {
            Ok(line) => {
                println!("{line}");
                startup::log_started(&gw.config, env, &source, &line);
            }
            Err(e) => {
                eprintln!("railgate: {e}");
                return ExitCode::from(1);
            }
        }
        let ran = crate::run(gw, listeners, shutdown).await;
        tracing::info!(target: "railgate::lifecycle", ok = ran.is_ok(), "stopped");
        match ran {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("railgate: {e}");
                ExitCode::from(1)
            }
        }
    })
}

/// Installs the SIGTERM and SIGINT handlers at once and completes on either. Call it before
/// printing READY: a signal sent right after READY must find the handler, not the default
/// action (which would end the process without a drain).
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> {
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
