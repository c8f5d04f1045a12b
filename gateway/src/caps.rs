//! Caps on what one gateway holds open: client connections in total, connections that have not
//! authenticated yet (in total and per client address), and open streams (SSE and WebSocket) per
//! tenant. Each slot is a guard that frees itself on drop, so no path can leak one.
//!
//! A connection counts as unauthenticated from its accept until a request on it is admitted (a
//! WebSocket: until its hello is); slow heads and silent upgraded sockets end at their deadlines
//! (`header_read_timeout_s`, `ws.hello_timeout_s`), and until then they cannot crowd out more
//! than their address's share.

use railgate_policy::{Denial, ErrorCode};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// The configured bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Bounds {
    /// Client connections open at once.
    pub connections: usize,
    /// Connections not yet authenticated, in total.
    pub unauthenticated: usize,
    /// Connections not yet authenticated, per client address.
    pub unauthenticated_per_address: usize,
    /// Open SSE and WebSocket streams of one tenant.
    pub streams_per_tenant: usize,
}

/// Which cap refused (the `cap` label of `capacity_refusals_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cap {
    /// `max_connections`.
    Connections,
    /// `max_unauthenticated`.
    Unauthenticated,
    /// `max_unauthenticated_per_address`.
    UnauthenticatedPerAddress,
    /// `max_streams_per_tenant`.
    TenantStreams,
}

impl Cap {
    /// Every cap.
    pub const ALL: [Cap; 4] = [
        Cap::Connections,
        Cap::Unauthenticated,
        Cap::UnauthenticatedPerAddress,
        Cap::TenantStreams,
    ];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Cap::Connections => "connections",
            Cap::Unauthenticated => "unauthenticated",
            Cap::UnauthenticatedPerAddress => "unauthenticated_per_address",
            Cap::TenantStreams => "tenant_streams",
        }
    }

    /// The refusal a client gets (`gateway.overloaded`: 503, or close 1013).
    pub fn denial(self) -> Denial {
        let why = match self {
            Cap::Connections => "too many connections",
            Cap::Unauthenticated => "too many connections waiting to authenticate",
            Cap::UnauthenticatedPerAddress => {
                "too many connections from this address waiting to authenticate"
            }
            Cap::TenantStreams => "too many open streams for this tenant",
        };
        Denial::with_message(ErrorCode::Overloaded, why)
    }
}

#[derive(Default)]
struct Counts {
    /// The bounds in force (a reload may change them; what is open stays open).
    bounds: Bounds,
    connections: usize,
    unauthenticated: usize,
    per_address: HashMap<IpAddr, usize>,
    streams: HashMap<String, usize>,
}

/// The gateway's open slots.
pub struct Caps {
    counts: Mutex<Counts>,
}

fn decrement<K: std::hash::Hash + Eq>(map: &mut HashMap<K, usize>, key: &K) {
    if let Some(n) = map.get_mut(key) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            map.remove(key);
        }
    }
}

impl Caps {
    /// Caps with these bounds.
    pub fn new(bounds: Bounds) -> Arc<Caps> {
        Arc::new(Caps {
            counts: Mutex::new(Counts {
                bounds,
                ..Counts::default()
            }),
        })
    }

    /// New bounds for what opens from now on (a reload).
    pub fn set_bounds(&self, bounds: Bounds) {
        self.lock().bounds = bounds;
    }

    fn lock(&self) -> MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A slot for a new connection from `ip`, unauthenticated until [`Connection::authenticated`].
    pub fn connect(self: &Arc<Caps>, ip: IpAddr) -> Result<Arc<Connection>, Cap> {
        let mut c = self.lock();
        let from_ip = c.per_address.get(&ip).copied().unwrap_or(0);
        if c.connections >= c.bounds.connections {
            return Err(Cap::Connections);
        }
        if from_ip >= c.bounds.unauthenticated_per_address {
            return Err(Cap::UnauthenticatedPerAddress);
        }
        if c.unauthenticated >= c.bounds.unauthenticated {
            return Err(Cap::Unauthenticated);
        }
        c.connections += 1;
        c.unauthenticated += 1;
        *c.per_address.entry(ip).or_insert(0) += 1;
        Ok(Arc::new(Connection {
            caps: self.clone(),
            ip,
            unauthenticated: AtomicBool::new(true),
        }))
    }

    /// A slot for one open stream of `tenant`.
    pub fn stream(self: &Arc<Caps>, tenant: &str) -> Result<StreamSlot, Cap> {
        let mut c = self.lock();
        let bound = c.bounds.streams_per_tenant;
        let open = c.streams.entry(tenant.to_owned()).or_insert(0);
        if *open >= bound {
            return Err(Cap::TenantStreams);
        }
        *open += 1;
        Ok(StreamSlot {
            caps: self.clone(),
            tenant: tenant.to_owned(),
        })
    }
}

/// One accepted client connection's slot.
pub struct Connection {
    caps: Arc<Caps>,
    ip: IpAddr,
    unauthenticated: AtomicBool,
}

impl Connection {
    /// A request (or hello) on this connection was admitted: it no longer counts as
    /// unauthenticated. Only the first call does anything.
    pub fn authenticated(&self) {
        if self.unauthenticated.swap(false, Ordering::AcqRel) {
            let mut c = self.caps.lock();
            c.unauthenticated = c.unauthenticated.saturating_sub(1);
            decrement(&mut c.per_address, &self.ip);
        }
    }
}

impl Connection {
    /// Whether a request (or hello) on this connection was admitted.
    pub fn is_authenticated(&self) -> bool {
        !self.unauthenticated.load(Ordering::Acquire)
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.authenticated();
        let mut c = self.caps.lock();
        c.connections = c.connections.saturating_sub(1);
    }
}

/// One open stream's slot in its tenant's count.
pub struct StreamSlot {
    caps: Arc<Caps>,
    tenant: String,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut c = self.caps.lock();
        decrement(&mut c.streams, &self.tenant);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps() -> Arc<Caps> {
        Caps::new(Bounds {
            connections: 4,
            unauthenticated: 3,
            unauthenticated_per_address: 2,
            streams_per_tenant: 1,
        })
    }

    #[test]
    fn unauthenticated_connections_are_capped_per_address_and_in_total() {
        let c = caps();
        let (a, b, d) = (
            "10.0.0.1".parse().expect("ip"),
            "10.0.0.2".parse().expect("ip"),
            "10.0.0.3".parse().expect("ip"),
        );
        let a1 = c.connect(a).expect("a1");
        let _a2 = c.connect(a).expect("a2");
        assert_eq!(c.connect(a).err(), Some(Cap::UnauthenticatedPerAddress));
        let b1 = c.connect(b).expect("b1");
        assert_eq!(c.connect(d).err(), Some(Cap::Unauthenticated));
        a1.authenticated();
        a1.authenticated();
        let _a3 = c
            .connect(a)
            .expect("a1 authenticated: its address has room again");
        assert_eq!(c.connect(d).err(), Some(Cap::Connections), "4 open");
        drop(a1);
        assert_eq!(
            c.connect(d).err(),
            Some(Cap::Unauthenticated),
            "a connection slot is free, but three still wait to authenticate"
        );
        b1.authenticated();
        let _d1 = c.connect(d).expect("both kinds of slot free");
    }

    #[test]
    fn streams_are_capped_per_tenant() {
        let c = caps();
        let s = c.stream("t_a").expect("first");
        assert_eq!(c.stream("t_a").err(), Some(Cap::TenantStreams));
        let _b = c.stream("t_b").expect("another tenant");
        drop(s);
        let _again = c.stream("t_a").expect("freed");
    }
}
