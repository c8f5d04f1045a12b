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

/// The config file's path and text, when there is one.
type File = Option<(PathBuf, String)>;

/// Prints problems, each with the file and line it is written at when it can be found there.
fn print_problems(file: &File, problems: &[String]) {
    let from = file
        .as_ref()
        .map(|(p, _)| p.display().to_string())
        .unwrap_or_else(|| startup::DEFAULTS_SOURCE.into());
    eprintln!(
        "railgate: configuration ({from}) has {} problem(s):",
        problems.len()
    );
    for e in problems {
        let key = e.split_once(": ").map_or(e.as_str(), |(k, _)| k);
        let line = file
            .as_ref()
            .and_then(|(_, text)| config::locate::line_of(text, key));
        match line {
            Some(n) => eprintln!("  {from}:{n}: {e}"),
            None => eprintln!("  {e}"),
        }
    }
}

/// Reads the config file and everything in it, resolving file paths against its directory.
fn read_all(
    explicit: Option<&Path>,
    env: &dyn Env,
    flags: &Overrides,
) -> Result<(File, Option<Config>, Vec<String>), ExitCode> {
    let file = read_config_file(explicit).map_err(|e| {
        eprintln!("railgate: {e}");
        ExitCode::from(EXIT_USAGE)
    })?;
    let (config, problems) = config::load_all(file.as_ref().map(|(_, t)| t.as_str()), env, flags);
    let base = file
        .as_ref()
        .and_then(|(p, _)| p.parent())
        .map(Path::to_path_buf);
    let config = config.map(|mut c| {
        if let Some(base) = base {
            c.resolve_paths(&base);
        }
        c
    });
    Ok((file, config, problems))
}

/// Loads and validates; returns the config and the file it came from (`None`: the embedded
/// defaults).
/// On failure prints every problem and returns the exit code.
pub fn load(
    explicit: Option<&Path>,
    env: &dyn Env,
    flags: &Overrides,
) -> Result<(Config, Option<PathBuf>), ExitCode> {
    let (file, config, problems) = read_all(explicit, env, flags)?;
    match config {
        Some(c) if problems.is_empty() => Ok((c, file.map(|(p, _)| p))),
        _ => {
            print_problems(&file, &problems);
            Err(ExitCode::from(EXIT_USAGE))
        }
    }
}

/// `railgate check`: validates the config and the key and registry files it names, and prints
/// every problem at once.
pub fn check(explicit: Option<&Path>, env: &dyn Env) -> ExitCode {
    let (file, config, mut problems) = match read_all(explicit, env, &Overrides::default()) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let warning = config
        .as_ref()
        .and_then(|c| startup::no_credentials_warning(&c.auth, env));
    if let Some(config) = config {
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
        if let Err(files) = runtime.block_on(async { crate::Gateway::new(config, env).map(|_| ()) })
        {
            problems.extend(files);
        }
    }
    if !problems.is_empty() {
        print_problems(&file, &problems);
        return ExitCode::from(EXIT_USAGE);
    }
    println!("configuration is valid");
    if let Some(w) = warning {
        eprintln!("railgate: warning: {w}");
    }
    ExitCode::SUCCESS
}

/// The `env` of the config file (`--config`, or ./railgate.toml if present); `None` without
/// a file.
pub fn file_env(explicit: Option<&Path>, env: &dyn Env) -> Result<Option<String>, ExitCode> {
    let (config, path) = load(explicit, env, &Overrides::default())?;
    Ok(path.map(|_| config.env))
}

/// What a ticket lacks for the config's stream routes: the fields they require that it does
/// not carry (an `EventSource` cannot send them as headers).
pub fn ticket_hint(
    config: &Config,
    request: &railgate_policy::ticket::TicketRequest,
) -> Option<String> {
    use railgate_policy::field::Field;
    let carried = [
        (Field::Mode, request.mode.is_some()),
        (Field::Project, request.project_id.is_some()),
        (Field::App, request.app_id.is_some()),
        (Field::Surface, request.surface_id.is_some()),
    ];
    let mut missing: Vec<&str> = Vec::new();
    for route in config
        .routes
        .iter()
        .filter(|r| r.kind != config::Rail::Http)
    {
        for (field, has) in carried {
            if !has && route.require.contains(&field) && !missing.contains(&field.key()) {
                missing.push(field.key());
            }
        }
    }
    (!missing.is_empty()).then(|| {
        format!(
            "the stream routes require {}; this ticket does not carry them, so a client must \
             send them as headers (an EventSource cannot): pass --mode/--project/--app/--surface",
            missing.join(", ")
        )
    })
}

/// `railgate serve`.
pub fn serve(explicit: Option<&Path>, env: &dyn Env, flags: &Overrides) -> ExitCode {
    let (config, path) = match load(explicit, env, flags) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let source = startup::config_source(path.as_deref());
    crate::init_logging();
    let runtime = match crate::runtime::build(config.workers) {
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
        if let Some(path) = path {
            let _ = gw.reload_from.set(crate::app::ReloadFrom {
                path,
                flags: flags.clone(),
            });
        }
        let shutdown = shutdown_signal();
        match crate::reload::on_hangup(gw.clone()) {
            Ok(reloads) => drop(tokio::spawn(reloads)),
            Err(e) => {
                eprintln!("railgate: cannot install the SIGHUP handler: {e}");
                return ExitCode::from(1);
            }
        }
        match crate::ready_line(&listeners) {
            Ok(line) => {
                println!("{line}");
                startup::log_started(&gw.live().config, env, &source, &line);
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
