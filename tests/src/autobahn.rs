//! Support for running the Autobahn|Testsuite fuzzing client through railgate.
//!
//! The suite's client cannot add request headers or send a hello, yet the WebSocket rail admits
//! nobody without them. [`Injector`] is a loopback TCP relay placed between the suite and the
//! gateway: it adds `Authorization` and the context headers to each upgrade request and, once the
//! gateway answers 101, writes the hello as the first (masked) client frame. Everything else is
//! relayed byte for byte, so the suite's frames reach the gateway exactly as it sent them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;

/// Largest request or response head the relay reads.
const MAX_HEAD: usize = 16 * 1024;
/// How long the relay waits for a head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// The header-and-hello relay in front of the gateway.
pub struct Injector {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

struct Plan {
    target: String,
    headers: String,
    hello: Vec<u8>,
}

/// A masked text frame, as a client sends it.
pub fn client_text_frame(text: &str) -> Vec<u8> {
    let mut frame = Frame::message(text.as_bytes().to_vec(), OpCode::Data(Data::Text), true);
    frame.header_mut().mask = Some(rand::random());
    let mut out = Vec::with_capacity(text.len() + 14);
    frame.format(&mut out).expect("a frame formats into a Vec");
    out
}

impl Injector {
    /// Listens on a loopback port; each connection is relayed to `target` with `headers` added
    /// to its upgrade request and `hello` sent first after the 101.
    pub async fn start(target: &str, headers: &[(String, String)], hello: &str) -> Injector {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let plan = Arc::new(Plan {
            target: target.to_owned(),
            headers: headers
                .iter()
                .map(|(k, v)| format!("{k}: {v}\r\n"))
                .collect(),
            hello: client_text_frame(hello),
        });
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(relay(client, plan.clone()));
            }
        });
        Injector { addr, task }
    }

    /// Where the suite connects.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Injector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads until the end of an HTTP head; returns (head, bytes read past it).
async fn read_head(s: &mut TcpStream) -> Option<(Vec<u8>, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(end + 4);
            return Some((buf, rest));
        }
        if buf.len() > MAX_HEAD {
            return None;
        }
        let n = tokio::time::timeout(HEAD_TIMEOUT, s.read(&mut chunk))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn relay(mut client: TcpStream, plan: Arc<Plan>) {
    let Ok(mut gw) = TcpStream::connect(&plan.target).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = gw.set_nodelay(true);
    let Some((head, client_rest)) = read_head(&mut client).await else {
        return;
    };
    let Some(line_end) = head.windows(2).position(|w| w == b"\r\n") else {
        return;
    };
    let mut request = head[..line_end + 2].to_vec();
    request.extend_from_slice(plan.headers.as_bytes());
    request.extend_from_slice(&head[line_end + 2..]);
    if gw.write_all(&request).await.is_err() {
        return;
    }
    let Some((answer, gw_rest)) = read_head(&mut gw).await else {
        return;
    };
    if client.write_all(&answer).await.is_err() || client.write_all(&gw_rest).await.is_err() {
        return;
    }
    if answer.starts_with(b"HTTP/1.1 101") && gw.write_all(&plan.hello).await.is_err() {
        return;
    }
    if gw.write_all(&client_rest).await.is_err() {
        return;
    }
    let _ = tokio::io::copy_bidirectional(&mut client, &mut gw).await;
}

#[cfg(test)]
mod tests {
    use super::client_text_frame;

    #[test]
    fn hello_frames_are_masked_text_frames() {
        let f = client_text_frame("hi");
        assert_eq!(f[0], 0x81, "FIN + text");
        assert_eq!(f[1], 0x80 | 2, "masked, length 2");
        let mask = [f[2], f[3], f[4], f[5]];
        assert_eq!([f[6] ^ mask[0], f[7] ^ mask[1]], *b"hi");
        let long = client_text_frame(&"x".repeat(300));
        assert_eq!(long[1], 0x80 | 126);
        assert_eq!(u16::from_be_bytes([long[2], long[3]]), 300);
    }
}
