//! Reloading the configuration file without a restart (`SIGHUP`, `POST /admin/reload`).
//!
//! The file is read and checked as at startup, with the command line's overrides applied again.
//! A file with any problem changes nothing: the running configuration stays, and the problems
//! are reported. Otherwise routes, limits and caps, SSE and WS settings, keys and ticket secrets,
//! token rules and registry settings are replaced at once for what starts from then on; open
//! streams and sessions keep the configuration they started with. The registry's cache is kept
//! when `[registry]` is unchanged; used tickets are always kept. What needs a restart (the
//! listeners, `workers`, `metrics.tenant_labels`, the used-ticket bounds, presence coalescing,
//! the upstream connection pool's limits) is named in the answer and the log.

use crate::app::Gateway;
use crate::config::{self, Config};
use crate::env::Env;
use std::future::Future;
use std::sync::Arc;

/// What a successful reload changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reloaded {
    /// The number of routes now in force.
    pub routes: usize,
    /// Keys that changed but only take effect after a restart.
    pub restart_needed: Vec<&'static str>,
}

/// The keys whose change a reload cannot apply.
fn restart_needed(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut out = Vec::new();
    let mut check = |changed: bool, key: &'static str| {
        if changed {
            out.push(key);
        }
    };
    check(old.listen != new.listen, "listen");
    check(old.admin_listen != new.admin_listen, "admin_listen");
    check(old.workers != new.workers, "workers");
    check(old.tls != new.tls, "tls");
    check(
        old.tenant_labels != new.tenant_labels,
        "metrics.tenant_labels",
    );
    check(
        old.auth.max_used_tickets != new.auth.max_used_tickets
            || old.auth.max_used_tickets_per_tenant != new.auth.max_used_tickets_per_tenant,
        "auth.max_used_tickets",
    );
    check(
        old.ws.presence_window != new.ws.presence_window
            || old.ws.presence_fanout_max != new.ws.presence_fanout_max,
        "ws.presence_window_ms",
    );
    check(
        old.limits.upstream_idle_timeout != new.limits.upstream_idle_timeout,
        "limits.upstream_idle_timeout_s",
    );
    out
}

/// Reads the config file again and puts it in force, or keeps the running configuration and
/// returns every problem.
pub async fn reload(gw: &Gateway, env: &(dyn Env + Sync)) -> Result<Reloaded, Vec<String>> {
    let Some(from) = gw.reload_from.get() else {
        return Err(vec![
            "no config file to reload: the gateway runs on its embedded defaults".into(),
        ]);
    };
    let text = std::fs::read_to_string(&from.path)
        .map_err(|e| vec![format!("{}: {e}", from.path.display())])?;
    let mut config = config::load(Some(&text), env, &from.flags).map_err(|e| e.0)?;
    if let Some(base) = from.path.parent() {
        config.resolve_paths(base);
    }
    let old = gw.live();
    let restart = restart_needed(&old.config, &config);
    let kept_registry = Some((&old.config.registry, old.registry.clone()));
    let live = Gateway::build_live(config, env, (&gw.metrics, &gw.book), kept_registry)?;
    if live.auth.keys.has_url() {
        if let Err(e) = live.auth.keys.refresh().await {
            tracing::warn!(target: "railgate::lifecycle", error = %e, "JWKS fetch after reload failed; tokens signed by its keys are refused until a refresh succeeds");
        }
    }
    let routes = live.config.routes.len();
    gw.replace(live);
    Ok(Reloaded {
        routes,
        restart_needed: restart,
    })
}

/// Reloads and logs the result (`via`: what asked for it).
pub async fn reload_logged(
    gw: &Gateway,
    env: &(dyn Env + Sync),
    via: &str,
) -> Result<Reloaded, Vec<String>> {
    let result = reload(gw, env).await;
    match &result {
        Ok(r) => tracing::info!(
            target: "railgate::lifecycle",
            via,
            routes = r.routes,
            restart_needed = r.restart_needed.join(", "),
            "configuration reloaded"
        ),
        Err(problems) => tracing::error!(
            target: "railgate::lifecycle",
            via,
            problems = problems.join("; "),
            "configuration not reloaded; the running configuration stays"
        ),
    }
    result
}

/// Installs the `SIGHUP` handler now (before READY: an early `SIGHUP` must not end the
/// process) and returns the task that reloads on each one until the gateway drains.
pub fn on_hangup(gw: Arc<Gateway>) -> std::io::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = signal(SignalKind::hangup())?;
    Ok(async move {
        loop {
            tokio::select! {
                got = hup.recv() => {
                    if got.is_none() {
                        return;
                    }
                    let _ = reload_logged(&gw, &crate::env::ProcessEnv, "SIGHUP").await;
                }
                _ = gw.draining.cancelled() => return,
            }
        }
    })
}
