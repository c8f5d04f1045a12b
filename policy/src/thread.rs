//! The access decision of a verified context against a thread's ownership record.

use crate::context::RequestContext;
use crate::field::Field;
use crate::{Denial, ErrorCode};
use serde::{Deserialize, Serialize};

/// Who owns a thread.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThreadRecord {
    /// Owning tenant.
    pub tenant_id: String,
    /// Env the thread lives in.
    pub env: String,
    /// Owning project, when the registry records one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_id: Option<String>,
    /// Routes switched off for this resource (the registry's counterpart of a tenant's
    /// `disabled_routes`): a request for it on one of them is `feature.disabled`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disabled_routes: Vec<String>,
}

/// Whether `kind` can name a kind of owned resource (`thread`, `canvas`, …): 1–32 bytes of
/// `a-z`, `0-9` and `_`, starting with a letter. It goes into registry URLs and cache keys.
pub fn valid_kind(kind: &str) -> bool {
    kind.len() <= 32
        && kind.starts_with(|c: char| c.is_ascii_lowercase())
        && kind
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// Decides whether `ctx` may use a thread whose record is `record` (`None`: unknown thread).
///
/// A record in another tenant or env is `chat.thread_forbidden`; with `hide_foreign` it is
/// answered exactly like an unknown thread so ids cannot be probed. When both the record and the
/// context name a project, they must agree too.
pub fn check_access(
    ctx: &RequestContext,
    record: Option<&ThreadRecord>,
    hide_foreign: bool,
) -> Result<(), Denial> {
    let Some(record) = record else {
        return Err(Denial::new(ErrorCode::ThreadNotFound));
    };
    let project_clash = match (&record.project_id, ctx.get(Field::Project)) {
        (Some(owner), Some(asked)) => owner != asked,
        _ => false,
    };
    let foreign = record.tenant_id != ctx.tenant_id() || record.env != ctx.env() || project_clash;
    match (foreign, hide_foreign) {
        (false, _) => Ok(()),
        (true, true) => Err(Denial::new(ErrorCode::ThreadNotFound)),
        (true, false) => Err(Denial::new(ErrorCode::ThreadForbidden)),
    }
}
