//! Every error code's status, retry flag and close code, and the envelope's exact JSON.

use railgate_policy::{Denial, ErrorCode};

#[test]
fn every_code_has_its_contract_status_retry_flag_and_close_code() {
    use ErrorCode::*;
    let table: &[(ErrorCode, &str, u16, bool, u16)] = &[
        (TokenMissing, "auth.token_missing", 401, false, 4003),
        (TokenInvalid, "auth.token_invalid", 401, false, 4003),
        (TokenExpired, "auth.token_expired", 401, false, 4003),
        (TicketInvalid, "auth.ticket_invalid", 401, false, 4003),
        (TicketReplayed, "auth.ticket_replayed", 401, false, 4003),
        (TenantMissing, "auth.tenant_missing", 400, false, 4003),
        (ModeMissing, "auth.mode_missing", 400, false, 4003),
        (ProjectMissing, "auth.project_missing", 400, false, 4003),
        (AppMissing, "auth.app_missing", 400, false, 4003),
        (SurfaceMissing, "auth.surface_missing", 400, false, 4003),
        (EnvMissing, "auth.env_missing", 400, false, 4003),
        (WorkspaceMissing, "auth.workspace_missing", 400, false, 4003),
        (CanvasMissing, "auth.canvas_missing", 400, false, 4003),
        (
            ProjectionMissing,
            "auth.projection_missing",
            400,
            false,
            4003,
        ),
        (PanelMissing, "auth.panel_missing", 400, false, 4003),
        (ModeInvalid, "auth.mode_invalid", 400, false, 4003),
        (TenantMismatch, "auth.tenant_mismatch", 403, false, 4003),
        (EnvMismatch, "auth.env_mismatch", 403, false, 4003),
        (ContextMismatch, "auth.context_mismatch", 403, false, 4003),
        (HeaderInvalid, "request.header_invalid", 400, false, 4003),
        (PathInvalid, "request.path_invalid", 400, false, 4003),
        (Malformed, "request.malformed", 400, false, 4003),
        (
            OriginForbidden,
            "request.origin_forbidden",
            403,
            false,
            4003,
        ),
        (TooLarge, "request.too_large", 413, false, 1009),
        (HeadersTooLarge, "request.too_large", 431, false, 1009),
        (RouteNotFound, "route.not_found", 404, false, 4003),
        (ThreadNotFound, "chat.thread_not_found", 404, false, 4003),
        (ThreadForbidden, "chat.thread_forbidden", 403, false, 4003),
        (CursorInvalid, "chat.cursor_invalid", 410, false, 4003),
        (SlowConsumer, "stream.slow_consumer", 503, true, 4008),
        (UpstreamUnavailable, "upstream.unavailable", 503, true, 1011),
        (UpstreamTimeout, "upstream.timeout", 504, true, 1011),
        (RegistryUnavailable, "registry.unavailable", 503, true, 1011),
        (ClusterUnavailable, "cluster.unavailable", 503, true, 1011),
        (Draining, "gateway.draining", 503, true, 1001),
        (Overloaded, "gateway.overloaded", 503, true, 1013),
        (FeatureDisabled, "feature.disabled", 403, false, 4003),
        (RateLimited, "rate.limited", 429, true, 1013),
    ];
    assert_eq!(table.len(), ErrorCode::ALL.len(), "table covers every code");
    for (code, wire, status, retry, close) in table {
        assert_eq!(code.as_str(), *wire);
        assert_eq!(code.http_status(), *status, "{wire}");
        assert_eq!(code.retryable(), *retry, "{wire}");
        assert_eq!(code.ws_close_code(), *close, "{wire}");
    }
}

#[test]
fn every_auth_request_and_chat_code_closes_with_4003_except_oversize() {
    for code in ErrorCode::ALL {
        let s = code.as_str();
        if (s.starts_with("auth.") || s.starts_with("chat.") || s.starts_with("request."))
            && s != "request.too_large"
        {
            assert_eq!(code.ws_close_code(), 4003, "{s}");
        }
    }
}

#[test]
fn auth_rejections_are_the_credential_and_context_codes() {
    use ErrorCode::*;
    let auth: Vec<ErrorCode> = ErrorCode::ALL
        .iter()
        .copied()
        .filter(|c| c.is_auth_rejection())
        .collect();
    assert_eq!(
        auth,
        vec![
            TokenMissing,
            TokenInvalid,
            TokenExpired,
            TicketInvalid,
            TicketReplayed,
            TenantMissing,
            ModeMissing,
            ProjectMissing,
            AppMissing,
            SurfaceMissing,
            EnvMissing,
            WorkspaceMissing,
            CanvasMissing,
            ProjectionMissing,
            PanelMissing,
            ModeInvalid,
            TenantMismatch,
            EnvMismatch,
            ContextMismatch,
            HeaderInvalid,
        ]
    );
}

#[test]
fn envelope_json_is_exact() {
    let d = Denial::with_message(ErrorCode::TenantMissing, "X-Tenant-Id header is required");
    assert_eq!(
        d.envelope("4bf92f3577b34da6a3ce929d0e0e4736").to_json(),
        r#"{"error":{"code":"auth.tenant_missing","message":"X-Tenant-Id header is required","http_status":400,"retryable":false,"trace_id":"4bf92f3577b34da6a3ce929d0e0e4736"}}"#
    );
    let d = Denial::new(ErrorCode::SlowConsumer);
    assert_eq!(
        d.envelope("t").to_json(),
        r#"{"error":{"code":"stream.slow_consumer","message":"client fell too far behind","http_status":503,"retryable":true,"trace_id":"t"}}"#
    );
}

#[test]
fn envelope_escapes_control_characters_so_it_stays_one_line() {
    let d = Denial::with_message(ErrorCode::HeaderInvalid, "bad\r\nvalue\u{0}");
    let json = d.envelope("a\nb").to_json();
    assert!(!json.contains('\n') && !json.contains('\r'), "{json}");
    assert!(json.contains(r#"bad\r\nvalue\u0000"#), "{json}");
}

#[test]
fn wire_codes_are_found_by_name() {
    for code in ErrorCode::ALL {
        let found = ErrorCode::from_wire(code.as_str()).expect("known");
        assert_eq!(found.as_str(), code.as_str());
    }
    assert_eq!(ErrorCode::from_wire("nope"), None);
    assert_eq!(
        ErrorCode::from_wire("request.too_large"),
        Some(ErrorCode::TooLarge)
    );
}
