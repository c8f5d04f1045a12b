//! What an upstream event's `routing` claims ([`Claims`]), and whether that crosses a stream's
//! boundary.

use super::{Crossing, Stamp};

/// Every `routing` member an event's data names, by key (`None`: not a string). Independent of
/// any stream: one event's claims are checked against each stream's [`Stamp`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Claims(pub(super) Vec<(String, Option<String>)>);

impl Claims {
    /// Whether these claims name a tenant or env other than the stream's, or another value of
    /// one of the stream's scope keys.
    pub fn crossing(&self, st: &Stamp) -> Option<Crossing> {
        let claimed = |key: &str, own: &str| {
            self.0
                .iter()
                .any(|(k, v)| k == key && v.as_deref() != Some(own))
        };
        if claimed("tenant_id", &st.tenant) || claimed("env", &st.env) {
            return Some(Crossing::Tenant);
        }
        st.scope
            .iter()
            .find(|(k, own)| claimed(k, own))
            .map(|(k, _)| Crossing::Scope(k.clone()))
    }

    /// The memory they hold, about: their text and a pair's room.
    pub fn weight(&self) -> usize {
        let pair = std::mem::size_of::<(String, Option<String>)>();
        (self.0.iter())
            .map(|(k, v)| pair + k.len() + v.as_ref().map_or(0, String::len))
            .sum()
    }
}
