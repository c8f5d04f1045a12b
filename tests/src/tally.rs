//! A load client's check of one SSE stream's numeric `id:` sequence.

/// One client's `id:` sequence: events seen, ids skipped, ids repeated or going backwards.
#[derive(Default, Clone, Copy)]
pub struct Tally {
    /// Distinct ids seen.
    pub events: u64,
    /// Ids skipped between two seen ones.
    pub gaps: u64,
    /// Ids seen again, or going backwards.
    pub repeats: u64,
    /// The largest id seen.
    pub last: Option<u64>,
    /// The stream ended after it had connected.
    pub ended: bool,
}

impl Tally {
    /// Reads the complete lines of `data` (with `carry` holding a partial line).
    pub fn feed(&mut self, data: &[u8], carry: &mut Vec<u8>) {
        carry.extend_from_slice(data);
        let Some(end) = carry.iter().rposition(|b| *b == b'\n') else {
            return;
        };
        for line in carry[..end].split(|b| *b == b'\n') {
            let Some(id) = line
                .strip_prefix(b"id: ")
                .and_then(|v| std::str::from_utf8(v).ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
            else {
                continue;
            };
            match self.last {
                Some(last) if id <= last => self.repeats += 1,
                Some(last) => {
                    self.events += 1;
                    self.gaps += id - last - 1;
                }
                None => self.events += 1,
            }
            self.last = Some(self.last.map_or(id, |l| l.max(id)));
        }
        carry.drain(..=end);
    }
}

#[cfg(test)]
mod tests {
    use super::Tally;

    #[test]
    fn counts_gaps_and_repeats_across_split_frames() {
        let (mut t, mut carry) = (Tally::default(), Vec::new());
        t.feed(b"event: m\nid: 1\ndata: {}\n\nid: 2\nda", &mut carry);
        t.feed(b"ta: {}\n\nid: 5\n\nid: 5\n\nid: 3\n\ni", &mut carry);
        t.feed(b"d: 6\n\n", &mut carry);
        assert_eq!((t.events, t.gaps, t.repeats, t.last), (4, 2, 2, Some(6)));
    }
}
