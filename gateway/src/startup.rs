//! What the gateway says about itself when it starts and stops: one line with where its
//! configuration came from, its listeners, routes, upstreams, credential sources and registry;
//! a loud warning when no credential can ever be accepted.

use crate::config::{AuthConfig, Config, RegistrySource};
use crate::env::Env;

/// The source of a configuration read from no file.
pub const DEFAULTS_SOURCE: &str = "embedded defaults";

/// Where the configuration in force came from.
pub fn config_source(path: Option<&std::path::Path>) -> String {
    path.map_or_else(|| DEFAULTS_SOURCE.into(), |p| p.display().to_string())
}

/// The credential sources `auth` names that are actually set (an unset secret variable is not
/// a source).
pub fn credential_sources(auth: &AuthConfig, env: &dyn Env) -> Vec<String> {
    let set = |name: &str| env.get(name).is_some_and(|v| !v.trim().is_empty());
    let mut out = Vec::new();
    if set(&auth.jwt_hs256_secret_env) {
        out.push(format!("HS256 secret ${}", auth.jwt_hs256_secret_env));
    }
    for k in &auth.public_keys {
        out.push(format!("PEM key {}", k.pem_file.display()));
    }
    if let Some(f) = &auth.jwks_file {
        out.push(format!("JWKS file {}", f.display()));
    }
    if let Some(u) = &auth.jwks_url {
        out.push(format!("JWKS {u}"));
    }
    if set(&auth.ticket_secret_env) {
        out.push(format!("ticket secret ${}", auth.ticket_secret_env));
    }
    out
}

/// The warning to give when nothing can authenticate a request: every request would be refused
/// with 401.
pub fn no_credentials_warning(auth: &AuthConfig, env: &dyn Env) -> Option<String> {
    if !credential_sources(auth, env).is_empty() {
        return None;
    }
    Some(format!(
        "no JWT key and no ticket secret are configured: every request will be refused with \
         401 (set ${} or [auth] jwks_url / jwks_file / public_keys, and ${} for tickets)",
        auth.jwt_hs256_secret_env, auth.ticket_secret_env
    ))
}

fn registry(config: &Config) -> String {
    match &config.registry.source {
        RegistrySource::Upstream { url } => format!("{url}/registry/threads/{{id}}"),
        RegistrySource::File { path } => format!("file {}", path.display()),
    }
}

/// Logs the startup line (after READY).
pub fn log_started(config: &Config, env: &dyn Env, source: &str, ready: &str) {
    let routes: Vec<String> = config
        .routes
        .iter()
        .map(|r| {
            format!(
                "{} {} {} -> {}",
                r.name,
                r.kind.label(),
                r.pattern.as_str(),
                r.upstream
            )
        })
        .collect();
    let mut upstreams: Vec<&str> = config.routes.iter().map(|r| r.upstream.as_str()).collect();
    upstreams.sort_unstable();
    upstreams.dedup();
    let creds = credential_sources(&config.auth, env);
    let handle = tokio::runtime::Handle::current();
    let runtime = match handle.runtime_flavor() {
        tokio::runtime::RuntimeFlavor::CurrentThread => "current_thread",
        _ => "multi_thread",
    };
    tracing::info!(
        target: "railgate::lifecycle",
        version = env!("CARGO_PKG_VERSION"),
        config = source,
        listeners = ready.trim_start_matches("READY "),
        routes = routes.join("; "),
        upstreams = upstreams.join(", "),
        credentials = if creds.is_empty() { "none".into() } else { creds.join(", ") },
        registry = registry(config),
        workers = handle.metrics().num_workers(),
        runtime,
        "started"
    );
    if let Some(w) = no_credentials_warning(&config.auth, env) {
        tracing::warn!(target: "railgate::lifecycle", "{w}");
    }
}

#[cfg(test)]
mod tests {
    use super::{credential_sources, no_credentials_warning};
    use std::collections::HashMap;

    #[test]
    fn sources_are_only_what_is_set() {
        let config =
            crate::config::load(None, &HashMap::new(), &Default::default()).expect("defaults");
        let none: HashMap<String, String> = HashMap::new();
        assert!(credential_sources(&config.auth, &none).is_empty());
        assert!(no_credentials_warning(&config.auth, &none)
            .expect("warned")
            .contains("every request will be refused with 401"));
        let blank = HashMap::from([("AUTH_JWT_SIGNING".to_owned(), " ".to_owned())]);
        assert!(no_credentials_warning(&config.auth, &blank).is_some());
        let set = HashMap::from([
            ("AUTH_JWT_SIGNING".to_owned(), "s".to_owned()),
            ("ENGINES_TICKET_SECRET".to_owned(), "t".to_owned()),
        ]);
        assert_eq!(
            credential_sources(&config.auth, &set),
            vec![
                "HS256 secret $AUTH_JWT_SIGNING".to_owned(),
                "ticket secret $ENGINES_TICKET_SECRET".to_owned()
            ]
        );
        assert!(no_credentials_warning(&config.auth, &set).is_none());
    }
}
