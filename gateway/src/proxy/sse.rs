//! The SSE rail's entry, after admission: the cursor, choosing a hub, and the response.
//!
//! Resume order: a cursor the thread's journal holds is served from the journal (then live); any
//! other cursor is asked of the upstream (`Last-Event-ID`); if neither can resume, the answer is
//! `chat.cursor_invalid` (410). With `share_upstream`, clients without a cursor (or with one the
//! journal holds) join the thread's shared hub; a client whose cursor only the upstream can serve
//! gets a private stream.

use crate::admission::{Admitted, GRANT_COOKIE};
use crate::app::Gateway;
use crate::body::Body;
use crate::caps::StreamSlot;
use crate::clock;
use crate::cluster::journal::Place as ClusterPlace;
use crate::cluster::Cluster;
use crate::config::route::Captures;
use crate::config::{Rail, Route};
use crate::journal::Limits;
use crate::outcome::{Outcome, StreamLog};
use crate::proxy::forwarded::Forwarding;
use crate::proxy::reconnect::credential_end;
use crate::proxy::sse_body::{Finish, OpenStream, OwnFrames, SseBody, Timers};
use crate::proxy::sse_client::Client;
use crate::proxy::sse_cluster;
use crate::proxy::sse_hub::{Hub, Joining, Sharing};
use crate::proxy::sse_placement;
use crate::proxy::sse_queue::Chunk;
use crate::proxy::sse_screen::ThreadJournal;
use crate::proxy::sse_upstream::{self, connect, Connect, Stream, UpstreamSpec};
use crate::proxy::upstream;
use crate::sse::frames::render;
use http::{header, HeaderValue, Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use railgate_policy::ticket::{encode_grant, Grant};
use railgate_policy::{Denial, ErrorCode};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// What admission and the rail's own checks produced for one stream.
pub struct Checked<'a> {
    /// The admitted caller.
    pub admitted: &'a Admitted,
    /// The cursor, checked (`cursor_of`).
    pub cursor: Option<String>,
    /// The stream's place among its tenant's open streams.
    pub slot: StreamSlot,
    /// The request's outcome so far, for the stream's access line.
    pub out: Outcome,
}

/// Serves one admitted SSE request.
pub async fn serve(
    gw: &Arc<Gateway>,
    route: &Arc<Route>,
    caps: &Captures,
    req: Request<Incoming>,
    checked: Checked<'_>,
    fwd: &Forwarding,
) -> Result<Response<Body>, Denial> {
    let Checked {
        admitted,
        cursor,
        slot,
        out,
    } = checked;
    let thread = admitted
        .thread_id
        .clone()
        .ok_or(Denial::new(ErrorCode::RouteNotFound))?;
    let uri = upstream::uri(
        route,
        caps,
        req.uri().path(),
        req.uri().query(),
        &["last_event_id"],
        upstream::Scheme::Http,
    )?;
    // Written into the upstream request's head: nothing keeps a value that points into the
    // connection's read buffer.
    let spec = UpstreamSpec::new(
        uri,
        req.headers(),
        &admitted.ctx,
        fwd,
        gw.live().outbound.tls_for(&route.name).clone(),
    );
    let client = Client::new(gw, route, &thread, admitted, req.version());
    let key = route.stream_key(&thread, &admitted.ctx);
    let stream = Opening {
        gw,
        route,
        thread: &thread,
        journal: journal(gw, route, &key),
        key,
        spec: Arc::new(spec),
    };
    let (left, connected_in) = stream.open(&client, cursor).await?;
    let mut log = StreamLog::new(out, fwd.peer.ip, 200);
    log.tally.upstream_connect = connected_in;
    let open = OpenStream {
        gauge: gw.metrics.active(&route.name, Rail::Sse),
        slot,
        log,
    };
    Ok(response(
        gw,
        admitted,
        client,
        (left, open),
        req.uri().path(),
    ))
}

/// The journal of a stream on a route, with the configured bounds.
fn journal(gw: &Gateway, route: &Route, key: &str) -> Arc<Mutex<ThreadJournal>> {
    let limits = Limits {
        events: gw.live().config.sse.journal_events,
        bytes: gw.live().config.sse.journal_bytes,
        age: gw.live().config.sse.journal_age,
    };
    gw.hubs.journals.get(&route.name, key, limits)
}

/// Attaching one client to a hub of its thread.
struct Opening<'a> {
    gw: &'a Arc<Gateway>,
    route: &'a Arc<Route>,
    thread: &'a str,
    /// The stream's key (`Route::stream_key`): journal and shared hub.
    key: String,
    /// Shared with the upstream side's task (which holds it for the stream's life).
    spec: Arc<UpstreamSpec>,
    journal: Arc<Mutex<ThreadJournal>>,
}

impl Opening<'_> {
    /// Attaches the client; returns what its body signals when it leaves, and how long the
    /// upstream connection took when the client got one of its own.
    async fn open(
        self,
        client: &Client,
        cursor: Option<String>,
    ) -> Result<(Arc<Notify>, Option<Duration>), Denial> {
        let mut in_journal = self.in_journal(cursor.as_deref());
        let cursor = match cursor {
            Some(c) if !in_journal => {
                let moved = self.replay_from_cluster(client, &c).await;
                in_journal = moved.is_some() && self.in_journal(moved.as_deref());
                Some(moved.unwrap_or(c))
            }
            other => other,
        };
        match cursor {
            Some(c) if in_journal => Ok((self.resume_from_journal(client, c), None)),
            None if self.route.share_upstream => {
                let (left, hub) = self.shared_live(client);
                hub.placement.wait(sse_placement::WAIT).await;
                Ok((left, None))
            }
            cursor => {
                let started = std::time::Instant::now();
                let left = self.private(client, cursor).await?;
                Ok((left, Some(started.elapsed())))
            }
        }
    }

    fn in_journal(&self, cursor: Option<&str>) -> bool {
        cursor.is_some_and(|c| {
            self.journal
                .lock()
                .map(|mut j| j.after(c, std::time::Instant::now()).is_some())
                .unwrap_or(false)
        })
    }

    /// Where this stream's journal lives in the cluster (durable routes in cluster mode).
    fn cluster_place(&self) -> Option<(&Arc<Cluster>, ClusterPlace)> {
        let cluster = self
            .gw
            .cluster
            .as_ref()
            .filter(|_| self.route.resumable())?;
        let sse = &self.gw.live().config.sse;
        let place = ClusterPlace {
            route: self.route.name.clone(),
            key: self.key.clone(),
            max_events: sse.journal_events,
            age_s: sse.journal_age.as_secs(),
        };
        Some((cluster, place))
    }

    /// A cursor this replica's journal does not hold, looked up in the cluster's: what follows
    /// it there is replayed to the client (`resume_cursor` with source `cluster`), and the id
    /// of the last one replayed is where the stream goes on. `None`: not there either, or more
    /// than the client's queue holds before its response starts (the upstream resumes then).
    async fn replay_from_cluster(&self, client: &Client, cursor: &str) -> Option<String> {
        let (cluster, place) = self.cluster_place()?;
        let events = cluster.journal_after(&place, cursor).await?;
        if events.len() + 1 >= self.gw.live().config.sse.client_queue_events {
            return None;
        }
        client.announce(cursor, "cluster");
        let mut at = cursor.to_owned();
        for ev in &events {
            if let Some(b) = render(ev, &client.stamp) {
                client.tx.send(Chunk::Raw(b)).await.ok()?;
            }
            if let Some(id) = ev.id.as_deref().filter(|i| !i.is_empty()) {
                at = id.to_owned();
            }
        }
        Some(at)
    }

    fn hub(&self, client: &Client, cursor: Option<&str>, sharing: Sharing) -> Arc<Hub> {
        let hub = Hub::new(
            self.gw.hubs.metrics_of(&self.gw.metrics, &self.route.name),
            self.route.clone(),
            (self.thread.to_owned(), self.key.clone()),
            client.stamp.clone(),
            self.journal.clone(),
            cursor,
            sharing,
        );
        if let Some((cluster, place)) = self.cluster_place() {
            hub.mirror.to(cluster.journal_writer(place));
            if sharing == Sharing::Shared {
                hub.placement.pending();
            }
        }
        hub
    }

    fn spawn(&self, hub: Arc<Hub>, first: Option<Box<Stream>>) {
        let (gw, spec) = (self.gw.clone(), self.spec.clone());
        match self
            .cluster_place()
            .filter(|_| hub.sharing() == Sharing::Shared)
        {
            Some((cluster, place)) => {
                let run = sse_cluster::run(gw, hub, spec, cluster.clone(), place);
                self.gw.streams.spawn(run);
            }
            None => {
                self.gw
                    .streams
                    .spawn(sse_upstream::run(gw, hub, spec, first));
            }
        }
    }

    /// Journal resume: announce, then replay with backpressure and join live.
    fn resume_from_journal(&self, client: &Client, cursor: String) -> Arc<Notify> {
        client.announce(&cursor, "journal");
        let (hub, joining, run_private) = if self.route.share_upstream {
            // A hub made for this client reads the upstream after the journal's newest event,
            // not from now: the client is replayed up to that event, then fed from the hub.
            let newest = self
                .journal
                .lock()
                .ok()
                .and_then(|j| j.last_id().map(str::to_owned));
            // Registered as joining under the registry lock, so the hub cannot stop meanwhile.
            let joined = self.gw.hubs.join_shared(
                &self.route.name,
                &self.key,
                || self.hub(client, newest.as_deref(), Sharing::Shared),
                Joining::new,
            );
            if joined.created {
                self.spawn(joined.hub.clone(), None);
            }
            (joined.hub, joined.attached, false)
        } else {
            let hub = self.hub(client, Some(&cursor), Sharing::Private);
            let joining = Joining::new(&hub);
            (hub, joining, true)
        };
        let left = hub.left.clone();
        let (gw, sub, spec) = (self.gw.clone(), client.sub(&hub), self.spec.clone());
        self.gw.streams.spawn(async move {
            hub.catch_up_and_join(sub, cursor, joining).await;
            if run_private {
                sse_upstream::run(gw, hub, spec, None).await;
            }
        });
        left
    }

    /// No cursor on a shared route: join the thread's hub live.
    fn shared_live(&self, client: &Client) -> (Arc<Notify>, Arc<Hub>) {
        let joined = self.gw.hubs.join_shared(
            &self.route.name,
            &self.key,
            || self.hub(client, None, Sharing::Shared),
            |h| h.subscribe(client.sub(h)),
        );
        let left = joined.hub.left.clone();
        if joined.created {
            self.spawn(joined.hub.clone(), None);
        }
        (left, joined.hub)
    }

    /// A private stream; the first connect decides statuses (404, 410) while we can still answer.
    async fn private(
        &self,
        client: &Client,
        cursor: Option<String>,
    ) -> Result<Arc<Notify>, Denial> {
        let hub = self.hub(client, cursor.as_deref(), Sharing::Private);
        let first = match connect(self.gw, &self.spec, cursor.as_deref()).await {
            Connect::Gone(code) => return Err(Denial::new(code)),
            Connect::Streaming(body) => {
                if let Some(c) = &cursor {
                    client.announce(c, "upstream");
                }
                Some(body)
            }
            Connect::Retry(why) => {
                tracing::info!(route = %self.route.name, thread_id = self.thread, reason = %why, "upstream not reachable yet; keeping the stream open");
                if let Some(c) = cursor {
                    hub.set_pending_resume(c);
                }
                None
            }
        };
        hub.subscribe(client.sub(&hub));
        let left = hub.left.clone();
        self.spawn(hub, first);
        Ok(left)
    }
}

fn response(
    gw: &Gateway,
    admitted: &Admitted,
    client: Client,
    (left, open): (Arc<Notify>, OpenStream),
    path: &str,
) -> Response<Body> {
    let trace = &admitted.ctx.trace_id;
    let own = OwnFrames {
        trace_id: trace.as_str().into(),
    };
    let timers = Timers {
        expires_at: credential_end(
            admitted.ctx.expires_at,
            gw.live().config.auth.leeway_s,
            clock::now(),
        ),
        draining: gw.draining.clone(),
        keepalive_every: gw.live().config.sse.keepalive,
    };
    let finish = Finish {
        stamp: client.stamp,
    };
    let body = SseBody::new(client.rx, client.end, own, timers, open, Some(left), finish);
    let mut resp = Response::new(body.boxed());
    resp.extensions_mut().insert(crate::stream_out::Streams);
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // (Names made at compile time: a name given as text is parsed and copied per stream.)
    const X_ACCEL_BUFFERING: http::HeaderName = http::HeaderName::from_static("x-accel-buffering");
    h.insert(X_ACCEL_BUFFERING, HeaderValue::from_static("no"));
    if let Ok(v) = HeaderValue::from_str(trace) {
        h.insert(crate::header_names::X_REQUEST_ID, v);
    }
    if let Some(cookie) = grant_cookie(gw, admitted, path) {
        h.insert(header::SET_COOKIE, cookie);
    }
    resp
}

/// The resume grant for a stream opened with a first-use ticket: lets the same `EventSource`
/// reconnect (the ticket itself is spent) until the ticket's session end.
fn grant_cookie(gw: &Gateway, admitted: &Admitted, path: &str) -> Option<HeaderValue> {
    let t = admitted.verified.ticket.as_ref()?;
    let live = gw.live();
    let secrets = live.auth.tickets.as_ref()?;
    if admitted.verified.ticket_resumed {
        return None;
    }
    let grant = encode_grant(&Grant::for_ticket(t), secrets);
    let max_age = t.sx.saturating_sub(clock::now());
    let secure = if gw.live().config.auth.cookie_secure {
        "; Secure"
    } else {
        ""
    };
    let cookie = format!(
        "{GRANT_COOKIE}={grant}; Max-Age={max_age}; Path={path}; HttpOnly; SameSite=Strict{secure}"
    );
    HeaderValue::from_str(&cookie).ok()
}
