//! The process environment behind a trait, so tests pass a map instead of mutating the process.

use std::collections::HashMap;

/// Read access to environment variables.
pub trait Env {
    /// The variable's value, if set and valid UTF-8.
    fn get(&self, name: &str) -> Option<String>;
}

/// The real process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl Env for HashMap<String, String> {
    fn get(&self, name: &str) -> Option<String> {
        HashMap::get(self, name).cloned()
    }
}

/// The variable names of CONTRACT §2.
pub mod names {
    /// HS256 secret.
    pub const JWT_SIGNING: &str = "AUTH_JWT_SIGNING";
    /// Ticket HMAC key.
    pub const TICKET_SECRET: &str = "ENGINES_TICKET_SECRET";
    /// Previous ticket key, still accepted.
    pub const TICKET_SECRET_PREVIOUS: &str = "ENGINES_TICKET_SECRET_PREVIOUS";
    /// Deployment env.
    pub const ENV: &str = "ENV";
    /// Bearer token for `/admin/*`.
    pub const ADMIN_TOKEN: &str = "RAILGATE_ADMIN_TOKEN";
}
