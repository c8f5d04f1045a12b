//! A connection whose first bytes were read before its protocol was known (to tell HTTP/2's
//! preface from an HTTP/1.1 request): they are read again first, then the socket. Reading them
//! instead of peeking saves a system call on every connection: the first read usually holds the
//! whole request head.

use bytes::{Buf, Bytes};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};

/// The HTTP/2 connection preface.
pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How much the first read may take (a request head usually fits).
const FIRST_READ: usize = 8 * 1024;

/// `inner`, with what is left of `prefix` read first.
pub struct Prefixed<S> {
    prefix: Bytes,
    inner: S,
}

impl<S> Prefixed<S> {
    /// `inner` read after `prefix`.
    pub fn new(prefix: Bytes, inner: S) -> Prefixed<S> {
        Prefixed { prefix, inner }
    }
}

/// Reads what a plain connection opens with until it is known whether that is the HTTP/2
/// preface: at the first byte that differs from it (an HTTP/1 request differs within two
/// bytes), else once the whole preface is there. Returns the verdict and every byte read;
/// `None` when the client went away or sent nothing before `deadline`.
pub async fn opening<S: AsyncRead + Unpin>(
    io: &mut S,
    deadline: tokio::time::Instant,
) -> Option<(bool, Bytes)> {
    let mut buf = Vec::with_capacity(FIRST_READ);
    loop {
        let n = tokio::time::timeout_at(deadline, io.read_buf(&mut buf))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
        // The buffer outgrows the preface before it can fill up: the loop ends first. What was
        // read is kept in an allocation of its own size: the 8 KiB buffer, freed only once the
        // bytes are read again, would outlive the connection's first long-lived allocations and
        // leave a touched hole among them (about 3.5 KiB per idle stream, docs/BENCHMARKS.md).
        let seen = buf.len().min(H2_PREFACE.len());
        if buf[..seen] != H2_PREFACE[..seen] {
            return Some((false, buf.into_boxed_slice().into()));
        }
        if seen == H2_PREFACE.len() {
            return Some((true, buf.into_boxed_slice().into()));
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.prefix.is_empty() {
            return Pin::new(&mut this.inner).poll_read(cx, out);
        }
        let n = out.remaining().min(this.prefix.len());
        out.put_slice(&this.prefix[..n]);
        this.prefix.advance(n);
        if this.prefix.is_empty() {
            // Give the first read's buffer back now, not with the connection.
            this.prefix = Bytes::new();
        }
        Poll::Ready(Ok(()))
    }
}

write_through!(Prefixed);

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::AsyncWriteExt;

    fn soon() -> tokio::time::Instant {
        tokio::time::Instant::now() + Duration::from_secs(5)
    }

    #[tokio::test]
    async fn an_http1_request_is_told_at_its_first_read_and_read_again_whole() {
        let (mut client, mut server) = tokio::io::duplex(64 * 1024);
        let head = b"GET /sse/chat/th_1 HTTP/1.1\r\nhost: x\r\n\r\n";
        client.write_all(head).await.expect("write");
        let (h2, first) = opening(&mut server, soon()).await.expect("ok");
        assert!(!h2);
        assert_eq!(&first[..], &head[..]);
        client.write_all(b"more").await.expect("ok");
        let mut io = Prefixed::new(first, server);
        let mut got = vec![0u8; head.len() + 4];
        io.read_exact(&mut got).await.expect("ok");
        assert_eq!(&got[..head.len()], &head[..]);
        assert_eq!(&got[head.len()..], b"more");
    }

    #[tokio::test]
    async fn the_preface_is_told_when_it_arrives_in_pieces() {
        let (mut client, mut server) = tokio::io::duplex(64 * 1024);
        let task = tokio::spawn(async move {
            for piece in H2_PREFACE.chunks(5) {
                client.write_all(piece).await.expect("ok");
                tokio::task::yield_now().await;
            }
            client.write_all(b"\0\0\0\x04").await.expect("ok");
            client
        });
        let (h2, first) = opening(&mut server, soon()).await.expect("ok");
        assert!(h2);
        let _client = task.await.expect("ok");
        let mut io = Prefixed::new(first, server);
        let mut got = vec![0u8; H2_PREFACE.len() + 4];
        io.read_exact(&mut got).await.expect("ok");
        assert_eq!(&got[..H2_PREFACE.len()], H2_PREFACE);
        assert_eq!(&got[H2_PREFACE.len()..], b"\0\0\0\x04");
    }

    #[tokio::test]
    async fn a_prefix_of_the_preface_then_another_byte_is_http1() {
        let (mut client, mut server) = tokio::io::duplex(1024);
        client.write_all(b"PRI * HTTP/1.1\r\n").await.expect("ok");
        let (h2, first) = opening(&mut server, soon()).await.expect("ok");
        assert!(!h2);
        assert_eq!(&first[..], b"PRI * HTTP/1.1\r\n");
    }

    #[tokio::test]
    async fn silence_or_a_hang_up_is_none() {
        let (client, mut server) = tokio::io::duplex(1024);
        drop(client);
        assert!(opening(&mut server, soon()).await.is_none());
        let (mut client, mut server) = tokio::io::duplex(1024);
        client.write_all(b"PRI * HT").await.expect("ok");
        let deadline = tokio::time::Instant::now() + Duration::from_millis(50);
        assert!(opening(&mut server, deadline).await.is_none());
    }

    #[tokio::test]
    async fn a_small_reader_gets_the_prefix_in_parts() {
        let (_client, server) = tokio::io::duplex(1024);
        let mut io = Prefixed::new(Bytes::from_static(b"abcdef"), server);
        let mut two = [0u8; 4];
        let n = io.read(&mut two).await.expect("ok");
        assert_eq!(&two[..n], b"abcd");
        let n = io.read(&mut two).await.expect("ok");
        assert_eq!(&two[..n], b"ef");
    }
}
