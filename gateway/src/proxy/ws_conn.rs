//! The client's side of an upgraded WebSocket: its configuration, writes bounded in time, and the
//! ways a session ends on it.

use crate::respond;
use futures_util::SinkExt;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use railgate_policy::Denial;
use std::time::Duration;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// The client's WebSocket.
pub type ClientWs = WebSocketStream<TokioIo<Upgraded>>;

/// How long a closing write may take.
const CLOSE_WRITE: Duration = Duration::from_secs(2);

/// Small buffers: memory per idle connection is a headline figure.
pub fn ws_config(max_message: usize) -> WebSocketConfig {
    let mut c = WebSocketConfig::default();
    c.read_buffer_size = 4 * 1024;
    c.write_buffer_size = 0;
    c.max_write_buffer_size = max_message.saturating_mul(2).max(64 * 1024);
    c.max_message_size = Some(max_message);
    c.max_frame_size = Some(max_message);
    c
}

/// How a session ends.
#[derive(Debug)]
pub enum End {
    /// Refused: the envelope, then its close code.
    Deny(Denial),
    /// A close frame with this code and reason, no envelope.
    Close(u16, String),
    /// The client sent its close frame (or its stream ended): answer it.
    PeerClosed,
    /// The client is gone: nothing to send.
    ClientLeft,
}

/// Ends the session on the client's socket as `end` says (each write bounded in time).
pub async fn finish(ws: &mut ClientWs, end: End, trace: &str) {
    match end {
        End::Deny(d) => {
            let close = respond::ws(&d, trace);
            let _ = tokio::time::timeout(CLOSE_WRITE, ws.send(Message::text(close.envelope))).await;
            close_plain(ws, close.code, close.reason).await;
        }
        End::Close(code, reason) => close_plain(ws, code, &reason).await,
        End::PeerClosed => {
            // Sends the reply to the client's close frame, queued by the read.
            let _ = tokio::time::timeout(CLOSE_WRITE, ws.flush()).await;
        }
        End::ClientLeft => {}
    }
}

async fn close_plain(ws: &mut ClientWs, code: u16, reason: &str) {
    let frame = CloseFrame {
        code: CloseCode::from(code),
        reason: reason.chars().take(123).collect::<String>().into(),
    };
    let _ = tokio::time::timeout(CLOSE_WRITE, ws.send(Message::Close(Some(frame)))).await;
    let _ = tokio::time::timeout(CLOSE_WRITE, ws.flush()).await;
}
