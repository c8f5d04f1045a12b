//! The client connection's bytes before hyper reads them: strict request framing
//! ([`head`], [`chunked`]) applied by [`guard::Guarded`], so that every head hyper parses is
//! one it cannot read differently from the upstream, and every refused head is answered with
//! the envelope ([`guard::Refusal`]).

/// `AsyncWrite` for a wrapper that only watches what is read: every write goes straight to its
/// `inner` stream.
macro_rules! write_through {
    ($wrapper:ident) => {
        impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for $wrapper<S> {
            fn poll_write(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buf: &[u8],
            ) -> std::task::Poll<std::io::Result<usize>> {
                std::pin::Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
            }

            fn poll_write_vectored(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                bufs: &[std::io::IoSlice<'_>],
            ) -> std::task::Poll<std::io::Result<usize>> {
                std::pin::Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
            }

            fn is_write_vectored(&self) -> bool {
                self.inner.is_write_vectored()
            }

            fn poll_flush(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::pin::Pin::new(&mut self.get_mut().inner).poll_flush(cx)
            }

            fn poll_shutdown(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::pin::Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
            }
        }
    };
}

pub mod chunked;
pub mod guard;
pub mod head;
pub mod prefixed;
pub mod response;

pub use guard::{Guarded, Refusal};
pub use prefixed::Prefixed;

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, ReadBuf};

/// How much is read from a socket at once.
const READ_CHUNK: usize = 8 * 1024;

/// Reads once from `io` into a chunk on the stack and hands what arrived (empty at the end of
/// the stream) to `take`. A connection that waits between reads then holds no read buffer: only
/// what `take` keeps.
pub fn poll_read_chunk<S: AsyncRead + Unpin, R>(
    io: &mut S,
    cx: &mut Context<'_>,
    take: impl FnOnce(&[u8]) -> R,
) -> Poll<io::Result<R>> {
    let mut chunk = [MaybeUninit::<u8>::uninit(); READ_CHUNK];
    let mut rb = ReadBuf::uninit(&mut chunk);
    ready!(Pin::new(io).poll_read(cx, &mut rb))?;
    Poll::Ready(Ok(take(rb.filled())))
}
