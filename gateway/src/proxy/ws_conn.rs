//! The client's side of an upgraded WebSocket: its configuration, writes bounded in time, and the
//! ways a session ends on it.

use crate::respond;
use futures_util::SinkExt;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use railgate_policy::Denial;
use railgate_policy::ErrorCode;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError, ProtocolError};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// The client's WebSocket.
pub type ClientWs = WebSocketStream<TokioIo<Upgraded>>;

/// More client pings than this within [`PING_WINDOW`] closes the connection.
const PING_FLOOD: u32 = 100;
const PING_WINDOW: Duration = Duration::from_secs(10);

/// How long a closing write may take.
const CLOSE_WRITE: Duration = Duration::from_secs(2);

/// The largest frame a client is sent: a longer message goes out as a first frame and
/// continuations of this size. The WebSocket writer keeps its buffer at the size of the largest
/// frame it ever wrote, for the session's life; unfragmented, one large message (a presence
/// snapshot of a full thread, a 1 MiB upstream message) would stay that large in every session
/// that received it.
pub const FRAGMENT_BYTES: usize = 8 * 1024;

/// Sends a message to the client, fragmented above [`FRAGMENT_BYTES`] (RFC 6455 §5.4: every
/// client reassembles; control frames may go between the fragments).
pub async fn send_message(ws: &mut ClientWs, msg: Message) -> Result<(), WsError> {
    let (data, kind) = match msg {
        Message::Text(t) if t.len() > FRAGMENT_BYTES => (bytes::Bytes::from(t), Data::Text),
        Message::Binary(b) if b.len() > FRAGMENT_BYTES => (b, Data::Binary),
        other => return ws.send(other).await,
    };
    for frame in fragments(data, kind) {
        ws.send(Message::Frame(frame)).await?;
    }
    Ok(())
}

/// A message's payload as frames of at most [`FRAGMENT_BYTES`]: the first with the message's
/// opcode, the rest continuations, the last final. (A text message may split inside a
/// character: only the whole message must be UTF-8.)
fn fragments(data: bytes::Bytes, kind: Data) -> impl Iterator<Item = Frame> {
    let len = data.len();
    (0..len.div_ceil(FRAGMENT_BYTES).max(1)).map(move |i| {
        let (at, end) = (i * FRAGMENT_BYTES, ((i + 1) * FRAGMENT_BYTES).min(len));
        let opcode = OpCode::Data(if i == 0 { kind } else { Data::Continue });
        Frame::message(data.slice(at..end), opcode, end == len)
    })
}

/// Which end of a session a WebSocket configuration is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The client's: mostly quiet, small messages.
    Client,
    /// The upstream's: every event of the thread.
    Upstream,
}

/// Small buffers: memory per idle connection is a headline figure. The reader's buffer is
/// zero-filled up to its size and read into at most that much at a time: 1 KiB on the client's
/// side (its messages are small; a long one takes more reads), 4 KiB on the upstream's, where
/// events arrive in bursts.
pub fn ws_config(max_message: usize, side: Side) -> WebSocketConfig {
    let mut c = WebSocketConfig::default();
    c.read_buffer_size = match side {
        Side::Client => 1024,
        Side::Upstream => 4 * 1024,
    };
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

impl End {
    /// What the access line says of this end: the outcome, and the close code sent (if any).
    pub fn describe(&self) -> (String, Option<u16>) {
        match self {
            End::Deny(d) => (d.code.as_str().to_owned(), Some(d.code.ws_close_code())),
            End::Close(code, reason) => (reason.clone(), Some(*code)),
            End::PeerClosed => ("client_closed".into(), None),
            End::ClientLeft => ("client_left".into(), None),
        }
    }
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

/// The client's liveness: when it last answered, and how often it pings.
pub struct Heartbeat {
    /// When the client last showed it is alive (a pong or a ping).
    pub last_pong: Instant,
    window_start: Instant,
    pings: u32,
}

impl Default for Heartbeat {
    fn default() -> Heartbeat {
        Heartbeat::new()
    }
}

impl Heartbeat {
    /// A client that has just connected.
    pub fn new() -> Heartbeat {
        let now = Instant::now();
        Heartbeat {
            last_pong: now,
            window_start: now,
            pings: 0,
        }
    }

    /// A client ping: proof of life, unless there are too many of them.
    pub fn ping(&mut self) -> Result<(), End> {
        self.last_pong = Instant::now();
        if self.window_start.elapsed() > PING_WINDOW {
            self.window_start = Instant::now();
            self.pings = 0;
        }
        self.pings += 1;
        if self.pings > PING_FLOOD {
            return Err(End::Deny(Denial::with_message(
                ErrorCode::RateLimited,
                "ping flood",
            )));
        }
        Ok(())
    }
}

/// How a session ends when reading from the client fails (RFC 6455 §7.4.1 codes).
pub fn read_failure(e: &WsError) -> End {
    match e {
        WsError::Capacity(CapacityError::MessageTooLong { .. }) => {
            End::Deny(Denial::new(ErrorCode::TooLarge))
        }
        WsError::Capacity(_) => End::Close(1009, "frame too large".into()),
        WsError::Utf8(_) => End::Close(1007, "invalid UTF-8 in a text message".into()),
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => End::ClientLeft,
        WsError::Protocol(_) => End::Close(1002, "protocol error".into()),
        _ => End::ClientLeft,
    }
}

/// Counts a session in `connections_active` until dropped.
pub struct Active(prometheus::IntGauge);

impl Active {
    /// Counts one more session in `gauge`.
    pub fn new(gauge: prometheus::IntGauge) -> Active {
        gauge.inc();
        Active(gauge)
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_message_is_cut_into_final_terminated_continuations_that_rejoin_exactly() {
        let text: String = (0..FRAGMENT_BYTES * 2 + 100)
            .map(|i| char::from(b'a' + (i % 26) as u8))
            .collect();
        let frames: Vec<Frame> = fragments(bytes::Bytes::from(text.clone()), Data::Text).collect();
        let shape: Vec<(OpCode, bool, usize)> = frames
            .iter()
            .map(|f| (f.header().opcode, f.header().is_final, f.payload().len()))
            .collect();
        assert_eq!(
            shape,
            [
                (OpCode::Data(Data::Text), false, FRAGMENT_BYTES),
                (OpCode::Data(Data::Continue), false, FRAGMENT_BYTES),
                (OpCode::Data(Data::Continue), true, 100),
            ]
        );
        let joined: Vec<u8> = frames.iter().flat_map(|f| f.payload().to_vec()).collect();
        assert_eq!(joined, text.as_bytes());
        let exact: Vec<(OpCode, bool, usize)> = fragments(
            bytes::Bytes::from(vec![7u8; FRAGMENT_BYTES * 2]),
            Data::Binary,
        )
        .map(|f| (f.header().opcode, f.header().is_final, f.payload().len()))
        .collect();
        assert_eq!(
            exact,
            [
                (OpCode::Data(Data::Binary), false, FRAGMENT_BYTES),
                (OpCode::Data(Data::Continue), true, FRAGMENT_BYTES),
            ]
        );
    }
}
