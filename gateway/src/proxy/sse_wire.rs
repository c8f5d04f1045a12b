//! An upstream SSE stream on its own connection, spoken directly: the request head written once,
//! the response head read by [`crate::wire::response`], the body (chunked, with a length, or to
//! the end of the connection) decoded as it arrives. An HTTP client library would hold a request
//! channel and 8 KiB read and write buffers for the stream's whole life; here a read goes to a
//! chunk on the stack and its data straight to the event parser, so an idle stream holds its
//! socket and a few words of state.

use crate::outbound::UpstreamIo;
use crate::wire::poll_read_chunk;
use crate::wire::response::{decode, head_too_large, parse_head, Framing};
use std::future::poll_fn;
use std::task::{ready, Context, Poll};
use tokio::io::AsyncWriteExt;

/// A response's status and the start of its body.
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// The body, when the status is 200.
    pub body: Wire,
}

/// The body side of an upstream SSE response.
pub struct Wire {
    io: UpstreamIo,
    framing: Framing,
    /// Bytes read with the head that belong to the body.
    early: Vec<u8>,
    ended: bool,
}

/// Sends a request `head` (a GET without a body) and reads the response head (skipping interim
/// 1xx answers).
pub async fn exchange(mut io: UpstreamIo, head: &[u8]) -> Result<Answer, String> {
    let sent = async {
        io.write_all(head).await?;
        io.flush().await
    };
    sent.await.map_err(|e| format!("write: {e}"))?;
    let mut buf = Vec::new();
    loop {
        match parse_head(&buf, false, |_, _| {})? {
            Some(head) if (100..200).contains(&head.status) => {
                buf.drain(..head.used);
            }
            Some(head) => {
                buf.drain(..head.used);
                return Ok(Answer {
                    status: head.status,
                    body: Wire {
                        ended: head.framing == Framing::Length(0),
                        io,
                        framing: head.framing,
                        early: buf,
                    },
                });
            }
            None => {
                if head_too_large(buf.len()) {
                    return Err("response head too large".into());
                }
                let n = poll_fn(|cx| {
                    poll_read_chunk(&mut io, cx, |got| {
                        buf.extend_from_slice(got);
                        got.len()
                    })
                })
                .await
                .map_err(|e| format!("read: {e}"))?;
                if n == 0 {
                    return Err("connection ended before the answer".into());
                }
            }
        }
    }
}

impl Wire {
    /// Reads the next piece of the body and hands its data to `sink`: `Some(Ok(()))` once some
    /// data was handed, `None` at the body's end, an error when the connection broke or the
    /// framing did (both end the stream like a broken connection; the data before a framing
    /// error is handed all the same). A read goes to a chunk on the stack and its data goes to
    /// `sink` from there: no copy, no allocation.
    pub fn poll_data(
        &mut self,
        cx: &mut Context<'_>,
        mut sink: impl FnMut(&[u8]),
    ) -> Poll<Option<Result<(), String>>> {
        loop {
            if self.ended {
                return Poll::Ready(None);
            }
            let decoded = if self.early.is_empty() {
                let (framing, ended) = (&mut self.framing, &mut self.ended);
                let read = poll_read_chunk(&mut self.io, cx, |got| {
                    (!got.is_empty()).then(|| decode(framing, ended, got, &mut sink))
                });
                match ready!(read) {
                    Err(e) => return Poll::Ready(Some(Err(format!("read: {e}")))),
                    Ok(None) => return Poll::Ready(self.at_eof()),
                    Ok(Some(decoded)) => decoded,
                }
            } else {
                let early = std::mem::take(&mut self.early);
                decode(&mut self.framing, &mut self.ended, &early, &mut sink)
            };
            match decoded {
                Ok(0) => continue,
                Ok(_) => return Poll::Ready(Some(Ok(()))),
                Err(why) => {
                    self.ended = true;
                    return Poll::Ready(Some(Err(why.into())));
                }
            }
        }
    }

    /// The connection ended: the body's end when it has no framing, an error otherwise.
    fn at_eof(&mut self) -> Option<Result<(), String>> {
        self.ended = true;
        match &self.framing {
            Framing::ToEnd => None,
            _ => Some(Err("the connection ended inside the body".into())),
        }
    }
}

#[cfg(test)]
#[path = "sse_wire_tests.rs"]
mod tests;
