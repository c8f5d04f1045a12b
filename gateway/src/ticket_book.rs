//! The used-ticket book: single use of tickets, in memory, bounded in total and per tenant.

use crate::cluster::Cluster;
use railgate_policy::ticket::TicketClaims;
use railgate_policy::{Denial, ErrorCode};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Tickets already used, remembered until they expire, in memory. Bounded in total and per
/// tenant: when a tenant has as many live used tickets as its share, its new tickets are refused
/// (`rate.limited`) rather than forgetting a used one — and other tenants are not affected.
///
/// The book does not survive a restart, so tickets issued before this process started count as
/// used: they are honoured only with a resume grant. [`TicketBook::epoch`] is the first second
/// whose tickets are fresh; `bind` holds READY until it has begun, so every ticket minted
/// against this process (by `POST /auth/tickets` or a backend) is fresh, and none used before a
/// restart is.
///
/// In cluster mode the book is Redis's: a ticket is used once across every replica and across
/// their restarts, so the epoch rule does not apply (see [`crate::cluster`]).
pub struct TicketBook {
    used: Mutex<Used>,
    cap: usize,
    per_tenant: usize,
    epoch: u64,
    cluster: Option<Arc<Cluster>>,
}

#[derive(Default)]
struct Used {
    tickets: HashMap<String, (u64, String)>,
    per_tenant: HashMap<String, usize>,
}

impl Used {
    fn forget_expired(&mut self, now: u64) {
        let per_tenant = &mut self.per_tenant;
        self.tickets.retain(|_, (exp, tenant)| {
            let live = *exp > now;
            if !live {
                if let Some(n) = per_tenant.get_mut(tenant.as_str()) {
                    *n = n.saturating_sub(1);
                }
            }
            live
        });
        self.per_tenant.retain(|_, n| *n > 0);
    }
}

impl TicketBook {
    /// A book holding at most `cap` tickets, `per_tenant` of one tenant; tickets issued before
    /// `epoch` (unix seconds) count as used.
    pub fn new(cap: usize, per_tenant: usize, epoch: u64) -> TicketBook {
        TicketBook {
            used: Mutex::new(Used::default()),
            cap: cap.max(1),
            per_tenant: per_tenant.max(1),
            epoch,
            cluster: None,
        }
    }

    /// The same book, kept in the cluster's Redis when there is one.
    pub fn with_cluster(mut self, cluster: Option<Arc<Cluster>>) -> TicketBook {
        self.cluster = cluster;
        self
    }

    /// Whether the ticket was used: on any replica in cluster mode (`cluster.unavailable` when
    /// that cannot be known), else as [`TicketBook::is_spent`].
    pub async fn spent(&self, t: &TicketClaims) -> Result<bool, Denial> {
        match &self.cluster {
            Some(c) => c.ticket_used(&t.tid).await,
            None => Ok(self.is_spent(t)),
        }
    }

    /// Marks the ticket used: atomically across the cluster in cluster mode, else as
    /// [`TicketBook::consume`].
    pub async fn spend(&self, t: &TicketClaims, now: u64) -> Result<(), Denial> {
        match &self.cluster {
            Some(c) => match c.use_ticket(&t.tid, t.exp).await? {
                true => Ok(()),
                false => Err(Denial::new(ErrorCode::TicketReplayed)),
            },
            None => self.consume(t, now),
        }
    }

    /// The first second whose tickets this process can vouch for.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Whether the ticket was used (here, or — as far as this process can know — before it
    /// started).
    pub fn is_spent(&self, t: &TicketClaims) -> bool {
        t.iat < self.epoch
            || self
                .used
                .lock()
                .map(|u| u.tickets.contains_key(&t.tid))
                .unwrap_or(true)
    }

    /// Marks the ticket used; fails if it already was, or if its tenant's share is full.
    pub fn consume(&self, t: &TicketClaims, now: u64) -> Result<(), Denial> {
        let mut used = self
            .used
            .lock()
            .map_err(|_| Denial::new(ErrorCode::TicketReplayed))?;
        if used.tickets.contains_key(&t.tid) {
            return Err(Denial::new(ErrorCode::TicketReplayed));
        }
        let tenant_full =
            |u: &Used| u.per_tenant.get(&t.tenant_id).copied().unwrap_or(0) >= self.per_tenant;
        if used.tickets.len() >= self.cap || tenant_full(&used) {
            used.forget_expired(now);
            if tenant_full(&used) {
                return Err(Denial::with_message(
                    ErrorCode::RateLimited,
                    "too many live tickets for this tenant",
                ));
            }
            if used.tickets.len() >= self.cap {
                return Err(Denial::with_message(
                    ErrorCode::RateLimited,
                    "too many live tickets",
                ));
            }
        }
        used.tickets
            .insert(t.tid.clone(), (t.exp, t.tenant_id.clone()));
        *used.per_tenant.entry(t.tenant_id.clone()).or_insert(0) += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(tid: &str, tenant: &str, iat: u64, exp: u64) -> TicketClaims {
        TicketClaims {
            tid: tid.into(),
            sub: "u".into(),
            tenant_id: tenant.into(),
            env: "dev".into(),
            thread_id: "th".into(),
            exp,
            iat,
            sx: exp,
            mode: None,
            project_id: None,
            app_id: None,
            surface_id: None,
        }
    }

    #[test]
    fn ticket_book_refuses_a_second_use() {
        let book = TicketBook::new(10, 10, 0);
        let a = claims("a", "t1", 40, 100);
        assert!(book.consume(&a, 50).is_ok());
        assert!(book.is_spent(&a));
        assert_eq!(
            book.consume(&a, 50).map_err(|d| d.code),
            Err(ErrorCode::TicketReplayed)
        );
    }

    #[test]
    fn ticket_book_forgets_only_expired_tickets_when_full() {
        let book = TicketBook::new(2, 10, 0);
        book.consume(&claims("a", "t1", 40, 100), 50).expect("a");
        book.consume(&claims("b", "t2", 40, 200), 50).expect("b");
        let c = claims("c", "t3", 40, 300);
        assert_eq!(
            book.consume(&c, 60).map_err(|d| d.code),
            Err(ErrorCode::RateLimited)
        );
        book.consume(&c, 150).expect("a expired and is forgotten");
        assert!(!book.is_spent(&claims("a", "t1", 40, 100)));
        assert!(book.is_spent(&claims("b", "t2", 40, 200)));
    }

    #[test]
    fn one_tenant_filling_its_share_does_not_refuse_another() {
        let book = TicketBook::new(100, 3, 0);
        for i in 0..3 {
            book.consume(&claims(&format!("a{i}"), "t_flood", 40, 100), 50)
                .expect("within the share");
        }
        assert_eq!(
            book.consume(&claims("a3", "t_flood", 40, 100), 50)
                .map_err(|d| d.code),
            Err(ErrorCode::RateLimited)
        );
        book.consume(&claims("b0", "t_other", 40, 100), 50)
            .expect("another tenant is unaffected");
        book.consume(&claims("a4", "t_flood", 40, 200), 150)
            .expect("the flood's expired tickets free its share");
    }

    #[test]
    fn tickets_issued_before_the_process_started_count_as_used() {
        let book = TicketBook::new(10, 10, 1_000);
        assert!(book.is_spent(&claims("old", "t1", 999, 1_100)));
        assert!(!book.is_spent(&claims("new", "t1", 1_000, 1_100)));
    }
}
