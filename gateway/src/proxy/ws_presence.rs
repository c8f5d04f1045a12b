//! A WebSocket session's presence: its place in this gateway's registry ([`crate::presence`])
//! and, in cluster mode, in the other replicas' ([`crate::cluster::presence`]).

use crate::app::Gateway;
use crate::clock;
use crate::cluster;
use crate::presence::{Member, Place};
use railgate_policy::{Field, RequestContext};
use tokio::sync::mpsc;

/// Joins the session's place; the presence messages for it arrive on `tx`.
pub async fn join(
    gw: &Gateway,
    ctx: &RequestContext,
    place: &Place,
    session: u64,
    tx: mpsc::Sender<String>,
) {
    let member = Member {
        session,
        actor_id: ctx.user_id.clone(),
        surface_id: ctx.get(Field::Surface).map(str::to_owned),
        joined_at: clock::now(),
    };
    gw.presence
        .join(ctx.tenant_id(), ctx.env(), place, member.clone(), tx);
    let room = (ctx.tenant_id(), ctx.env());
    cluster::presence::joined(gw.cluster.as_deref(), room, place, &member).await;
}

/// Leaves the session's place.
pub async fn leave(gw: &Gateway, ctx: &RequestContext, place: &Place, session: u64) {
    gw.presence
        .leave(ctx.tenant_id(), ctx.env(), place, session);
    let room = (ctx.tenant_id(), ctx.env());
    cluster::presence::left(gw.cluster.as_deref(), room, place, session).await;
}
