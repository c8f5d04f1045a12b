//! The context fields of a request, their wire names and their syntax.

use crate::ErrorCode;

/// A context field that can be required by a route and must agree across sources.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Field {
    /// `tenant_id` / `X-Tenant-Id`.
    Tenant,
    /// `mode` / `X-Mode`.
    Mode,
    /// `project_id` / `X-Project-Id`.
    Project,
    /// `app_id` / `X-App-Id`.
    App,
    /// `surface_id` / `X-Surface-Id`.
    Surface,
    /// `env` / `X-Env`.
    Env,
    /// `workspace_id` / `X-Workspace-Id`.
    Workspace,
    /// `canvas_id` / `X-Canvas-Id`.
    Canvas,
    /// `projection_id` / `X-Projection-Id`.
    Projection,
    /// `panel_id` / `X-Panel-Id`.
    Panel,
}

impl Field {
    /// Every field, in the order missing fields are reported.
    pub const ALL: [Field; 10] = [
        Field::Tenant,
        Field::Mode,
        Field::Project,
        Field::App,
        Field::Surface,
        Field::Env,
        Field::Workspace,
        Field::Canvas,
        Field::Projection,
        Field::Panel,
    ];

    /// The fields that narrow a resource to a part of it (a workspace's canvas, a canvas's
    /// projection or panel): streams, journals and presence are kept apart by them, and an
    /// event naming another value than its stream's is dropped.
    pub const SCOPES: [Field; 4] = [
        Field::Workspace,
        Field::Canvas,
        Field::Projection,
        Field::Panel,
    ];

    /// Index into per-field arrays.
    pub fn index(self) -> usize {
        self as usize
    }

    /// JSON key in the WS hello, tokens, tickets and `routing` (`tenant_id`, `env`, ...).
    pub fn key(self) -> &'static str {
        match self {
            Field::Tenant => "tenant_id",
            Field::Mode => "mode",
            Field::Project => "project_id",
            Field::App => "app_id",
            Field::Surface => "surface_id",
            Field::Env => "env",
            Field::Workspace => "workspace_id",
            Field::Canvas => "canvas_id",
            Field::Projection => "projection_id",
            Field::Panel => "panel_id",
        }
    }

    /// Lower-case HTTP header name.
    pub fn header(self) -> &'static str {
        match self {
            Field::Tenant => "x-tenant-id",
            Field::Mode => "x-mode",
            Field::Project => "x-project-id",
            Field::App => "x-app-id",
            Field::Surface => "x-surface-id",
            Field::Env => "x-env",
            Field::Workspace => "x-workspace-id",
            Field::Canvas => "x-canvas-id",
            Field::Projection => "x-projection-id",
            Field::Panel => "x-panel-id",
        }
    }

    /// Name used in a route's `require` list (`tenant`, `mode`, `project`, ...).
    pub fn short(self) -> &'static str {
        match self {
            Field::Tenant => "tenant",
            Field::Mode => "mode",
            Field::Project => "project",
            Field::App => "app",
            Field::Surface => "surface",
            Field::Env => "env",
            Field::Workspace => "workspace",
            Field::Canvas => "canvas",
            Field::Projection => "projection",
            Field::Panel => "panel",
        }
    }

    /// Parses a `require` entry: the short name or the JSON key.
    pub fn parse(name: &str) -> Option<Field> {
        Field::ALL
            .into_iter()
            .find(|f| f.short() == name || f.key() == name)
    }

    /// `auth.<field>_missing`.
    pub fn missing_code(self) -> ErrorCode {
        match self {
            Field::Tenant => ErrorCode::TenantMissing,
            Field::Mode => ErrorCode::ModeMissing,
            Field::Project => ErrorCode::ProjectMissing,
            Field::App => ErrorCode::AppMissing,
            Field::Surface => ErrorCode::SurfaceMissing,
            Field::Env => ErrorCode::EnvMissing,
            Field::Workspace => ErrorCode::WorkspaceMissing,
            Field::Canvas => ErrorCode::CanvasMissing,
            Field::Projection => ErrorCode::ProjectionMissing,
            Field::Panel => ErrorCode::PanelMissing,
        }
    }
}

/// The bytes a context value may hold, by byte: ASCII letters and digits, `.`, `_`, `:`, `@`, `-`.
const VALUE_BYTE: [bool; 256] = {
    let mut table = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        table[i] = b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'@' | b'-');
        i += 1;
    }
    table
};

/// Whether `value` matches `^[A-Za-z0-9._:@-]{1,128}$`, the syntax of every context value
/// (checked without an early exit: a refused value is rare, and every request checks several).
pub fn valid_value(value: &[u8]) -> bool {
    (1..=128).contains(&value.len())
        && value
            .iter()
            .fold(true, |ok, &b| ok & VALUE_BYTE[usize::from(b)])
}

/// The trace-id of a W3C `traceparent` value, if it is valid.
pub fn traceparent_trace_id(value: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(value).ok()?;
    let mut parts = text.split('-');
    let (version, trace, parent, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let lower_hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let ok = lower_hex(version, 2)
        && version != "ff"
        && lower_hex(trace, 32)
        && lower_hex(parent, 16)
        && lower_hex(flags, 2)
        && trace.bytes().any(|b| b != b'0')
        && parent.bytes().any(|b| b != b'0')
        && (version != "00" || parts.next().is_none());
    ok.then_some(trace)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every byte, alone and among valid ones, and every length around the bounds.
    #[test]
    fn a_value_is_valid_exactly_by_its_syntax() {
        for b in 0..=255u8 {
            let allowed = b.is_ascii_alphanumeric() || b".-_:@".contains(&b);
            assert_eq!(valid_value(&[b]), allowed, "byte {b}");
            assert_eq!(valid_value(&[b'a', b, b'z']), allowed, "byte {b} inside");
        }
        assert!(!valid_value(b""));
        assert!(valid_value(&[b'x'; 128]));
        assert!(!valid_value(&[b'x'; 129]));
    }
}
