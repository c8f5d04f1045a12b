//! The closed sets of label values: reconnect outcomes, replay sources, isolation reasons,
//! registry lookup results.

/// How one attempt to bring an upstream stream back ended (`outcome` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reconnect {
    /// The stream is back after a break or failed attempts.
    Ok,
    /// One attempt failed; another follows.
    Failed,
    /// The resume deadline passed; the clients were told `upstream.unavailable`.
    GaveUp,
}

impl Reconnect {
    /// Every outcome.
    pub const ALL: [Reconnect; 3] = [Reconnect::Ok, Reconnect::Failed, Reconnect::GaveUp];

    pub(super) fn label(self) -> &'static str {
        match self {
            Reconnect::Ok => "ok",
            Reconnect::Failed => "failed",
            Reconnect::GaveUp => "gave_up",
        }
    }
}

/// Where resumed events came from (`source` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplaySource {
    /// The gateway's own journal.
    Journal,
}

/// Why data was kept from crossing a tenant boundary (`reason` label of
/// `isolation_violations_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Violation {
    /// An upstream event names another tenant or env in its `routing`.
    ForeignTenant,
    /// An upstream event names another workspace, canvas, projection, panel, thread or resource
    /// than the stream's in its `routing`.
    ForeignScope,
    /// Data that looks like JSON but is not strict JSON, so its routing cannot be checked.
    NotStrictJson,
    /// A `registers_thread` answer names a thread another tenant owns.
    ThreadTakeover,
}

impl Violation {
    /// Every reason.
    pub const ALL: [Violation; 4] = [
        Violation::ForeignTenant,
        Violation::ForeignScope,
        Violation::NotStrictJson,
        Violation::ThreadTakeover,
    ];

    pub(super) fn label(self) -> &'static str {
        match self {
            Violation::ForeignTenant => "foreign_tenant",
            Violation::ForeignScope => "foreign_scope",
            Violation::NotStrictJson => "not_strict_json",
            Violation::ThreadTakeover => "thread_takeover",
        }
    }
}

/// A registry lookup's result (`result` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// An owner, from the cache.
    Hit,
    /// An owner, asked of the source.
    Fetched,
    /// Unknown, from the cache.
    NegativeHit,
    /// Unknown, asked of the source.
    NotFound,
    /// The source failed; a stale answer was used.
    Stale,
    /// The source failed and nothing usable was cached.
    Unavailable,
    /// An owner learned from a `registers_thread` answer.
    Learned,
}

impl Lookup {
    /// Every result.
    pub const ALL: [Lookup; 7] = [
        Lookup::Hit,
        Lookup::Fetched,
        Lookup::NegativeHit,
        Lookup::NotFound,
        Lookup::Stale,
        Lookup::Unavailable,
        Lookup::Learned,
    ];

    pub(super) fn label(self) -> &'static str {
        match self {
            Lookup::Hit => "hit",
            Lookup::Fetched => "fetched",
            Lookup::NegativeHit => "negative_hit",
            Lookup::NotFound => "not_found",
            Lookup::Stale => "stale",
            Lookup::Unavailable => "unavailable",
            Lookup::Learned => "learned",
        }
    }
}
