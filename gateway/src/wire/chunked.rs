//! Follows a chunked body byte by byte: a request body only to know where it ends (hyper decodes
//! it), an upstream SSE response to decode it ([`Chunked::decode`]). Strict: hex sizes without
//! whitespace, CRLF line ends only, bounded extensions and trailers.

use super::head::is_field_byte;

/// Most hex digits in a chunk size (16 fill a `u64`).
const MAX_SIZE_DIGITS: u8 = 16;
/// Most bytes of one chunk's extensions.
const MAX_EXTENSION_BYTES: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum At {
    Size { digits: u8, value: u64 },
    Extension { value: u64, bytes: usize },
    SizeLf { value: u64 },
    Data(u64),
    DataCr,
    DataLf,
    TrailerStart,
    Trailer,
    TrailerLf,
    EndLf,
    Done,
}

/// Where a chunked body stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunked {
    at: At,
    trailer_bytes: usize,
    max_trailer_bytes: usize,
}

impl Chunked {
    /// A body about to start; its trailers may take at most `max_trailer_bytes`.
    pub fn new(max_trailer_bytes: usize) -> Self {
        Chunked {
            at: At::Size {
                digits: 0,
                value: 0,
            },
            trailer_bytes: 0,
            max_trailer_bytes,
        }
    }

    /// Reads `input` up to the end of the body at most. Returns how many bytes were read as
    /// good body bytes, and whether the body ended there or why its framing broke after them.
    pub fn advance(&mut self, input: &[u8]) -> (usize, Result<bool, &'static str>) {
        self.walk(input, |_| {})
    }

    /// Reads `input`, handing each run of the chunks' data to `data` (the runs that came before
    /// a framing error included); `Ok(true)` once the body ended.
    pub fn decode(&mut self, input: &[u8], data: impl FnMut(&[u8])) -> Result<bool, &'static str> {
        self.walk(input, data).1
    }

    /// [`Chunked::advance`], handing each run of chunk data to `data`: how many bytes of
    /// `input` were read (fewer when the body ended or broke before its end) and the outcome.
    pub fn walk(
        &mut self,
        input: &[u8],
        mut data: impl FnMut(&[u8]),
    ) -> (usize, Result<bool, &'static str>) {
        let mut i = 0;
        while i < input.len() && self.at != At::Done {
            if let At::Data(left) = self.at {
                let take = left.min((input.len() - i) as u64);
                data(&input[i..i + take as usize]);
                i += take as usize;
                self.at = if take == left {
                    At::DataCr
                } else {
                    At::Data(left - take)
                };
                continue;
            }
            match self.step(input[i]) {
                Ok(at) => self.at = at,
                Err(why) => return (i, Err(why)),
            }
            i += 1;
        }
        (i, Ok(self.at == At::Done))
    }

    fn step(&mut self, b: u8) -> Result<At, &'static str> {
        Ok(match (self.at, b) {
            (At::Size { digits, value }, _) if b.is_ascii_hexdigit() => {
                if digits == MAX_SIZE_DIGITS {
                    return Err("chunk size has too many digits");
                }
                let d = (b as char).to_digit(16).unwrap_or(0);
                At::Size {
                    digits: digits + 1,
                    value: value << 4 | u64::from(d),
                }
            }
            (At::Size { digits: 1.., value }, b';') => At::Extension { value, bytes: 0 },
            (At::Size { digits: 1.., value }, b'\r') => At::SizeLf { value },
            (At::Size { .. }, _) => return Err("chunk size is not hexadecimal"),
            (At::Extension { value, .. }, b'\r') => At::SizeLf { value },
            (At::Extension { value, bytes }, _) if is_field_byte(b) => {
                if bytes == MAX_EXTENSION_BYTES {
                    return Err("chunk extension too long");
                }
                At::Extension {
                    value,
                    bytes: bytes + 1,
                }
            }
            (At::SizeLf { value: 0 }, b'\n') => At::TrailerStart,
            (At::SizeLf { value }, b'\n') => At::Data(value),
            (At::DataCr, b'\r') => At::DataLf,
            (At::DataLf, b'\n') => At::Size {
                digits: 0,
                value: 0,
            },
            (At::TrailerStart, b'\r') => At::EndLf,
            (At::TrailerStart | At::Trailer, _) if is_field_byte(b) => {
                self.trailer_bytes += 1;
                if self.trailer_bytes > self.max_trailer_bytes {
                    return Err("chunked trailers too long");
                }
                At::Trailer
            }
            (At::Trailer, b'\r') => At::TrailerLf,
            (At::TrailerLf, b'\n') => At::TrailerStart,
            (At::EndLf, b'\n') => At::Done,
            _ => return Err("chunked framing is broken (bare LF, or data longer than its size)"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::Chunked;

    fn whole(body: &[u8]) -> Result<(usize, bool), &'static str> {
        let (n, end) = Chunked::new(1024).advance(body);
        end.map(|done| (n, done))
    }

    #[test]
    fn a_body_ends_exactly_after_its_last_chunk_and_trailers() {
        let body = b"5\r\nhello\r\n1a;x=y\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-T: 1\r\n\r\nNEXT";
        assert_eq!(whole(body), Ok((body.len() - 4, true)));
        assert_eq!(whole(b"0\r\n\r\n"), Ok((5, true)));
    }

    #[test]
    fn byte_by_byte_gives_the_same_end() {
        let body = b"3\r\nabc\r\n0\r\n\r\nGET";
        let mut c = Chunked::new(64);
        let mut used = 0;
        for (i, b) in body.iter().enumerate() {
            let (n, done) = c.advance(std::slice::from_ref(b));
            let done = done.expect("valid");
            used += n;
            if done {
                assert_eq!(i + 1, 13);
                break;
            }
        }
        assert_eq!(used, 13);
    }

    #[test]
    fn broken_framing_is_refused() {
        for bad in [
            &b"zz\r\n"[..],
            b"\r\n",
            b"5 \r\nhello\r\n",
            b"5\nhello\r\n",
            b"5\r\nhello\n0\r\n\r\n",
            b"5\r\nhelloX\r\n",
            b"0\r\n\n",
            b"0\r\nX-T: 1\n\r\n",
            b"11111111111111111\r\n",
            b"-1\r\n",
            b"5\r\nhello\r\n0\r\nX:\x00\r\n\r\n",
        ] {
            assert!(
                whole(bad).is_err(),
                "{:?} accepted",
                String::from_utf8_lossy(bad)
            );
        }
        let long_trailer = [b"0\r\nX: ".as_slice(), &[b'a'; 2000], b"\r\n\r\n"].concat();
        assert_eq!(whole(&long_trailer), Err("chunked trailers too long"));
    }
}
