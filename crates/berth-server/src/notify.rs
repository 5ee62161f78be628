//! Where a request becomes notification events: who asked, from where, and the targets in
//! Distribution's terms. The queue and the delivery are `berth-notify`'s; handlers call
//! [`Notify::send`] after their operation succeeded and before they answer, so an answered
//! request's events are stored before the client sees the answer.
//!
//! Built only when `notifications` is configured (`Ctx::notify` is `None` otherwise, and no
//! handler does anything for events). The request record follows Distribution's
//! `NewRequestRecord`: `id` is the request's id when the layer in front of the handlers put
//! one in its extensions as a [`RequestId`] (so an event can be joined with the access log
//! and `X-Request-Id`), else a new UUID; an id the client sends is not believed; `addr` is the
//! connection's `ip:port`, or the client a trusted proxy names (`http.trustedproxies`;
//! Distribution believes any `X-Forwarded-For`, berth only its proxies'); `host` is the
//! `Host` header (`:authority` on HTTP/2); `useragent` the `User-Agent`. The actor is the
//! authenticated user (htpasswd user, or a token's subject).

use axum::extract::Request;
use berth_notify::{Action, Actor, Notifier, RequestRecord, Target};
use berth_oci::{Digest, Manifest, Reference, RepoName};
use http::header;

use crate::endpoint::Endpoint;
use crate::{Ctx, auth};

/// The request's id, as the request-id layer (`observe`) assigned it: inserted into the
/// request's extensions, it becomes the events' `request.id`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RequestId(pub uuid::Uuid);

/// The notifier and what every event of this request shares.
pub(crate) struct Notify {
    notifier: Notifier,
    request: RequestRecord,
    actor: Actor,
}

impl Notify {
    pub(crate) fn new(
        notifier: &Notifier,
        request: &Request,
        caller: Option<&auth::Caller>,
        trusted: &[ipnet::IpNet],
    ) -> Notify {
        let headers = request.headers();
        let text = |name: header::HeaderName| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned()
        };
        let id = request
            .extensions()
            .get::<RequestId>()
            .map_or_else(berth_notify::event::new_id, |r| r.0.to_string());
        let peer = request
            .extensions()
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|c| c.0);
        let addr = match (peer, crate::client_address(request, trusted)) {
            (Some(peer), Some(client)) if client != peer.ip().to_canonical() => client.to_string(),
            (Some(peer), _) => {
                std::net::SocketAddr::new(peer.ip().to_canonical(), peer.port()).to_string()
            }
            (None, _) => String::new(),
        };
        let host = headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .or_else(|| request.uri().authority().map(|a| a.to_string()))
            .unwrap_or_default();
        let name = match caller {
            Some(auth::Caller::User(user)) => user.clone(),
            Some(auth::Caller::Token(grant)) => grant.subject.clone(),
            Some(auth::Caller::Anonymous) | None => String::new(),
        };
        Notify {
            notifier: notifier.clone(),
            request: RequestRecord {
                id,
                addr,
                host,
                method: request.method().as_str().to_owned(),
                useragent: text(header::USER_AGENT),
            },
            actor: Actor { name },
        }
    }

    /// Whether any endpoint takes this kind of event (handlers skip extra work otherwise).
    pub(crate) fn wants(&self, action: Action, media_type: &str) -> bool {
        self.notifier.wants(action, media_type)
    }

    /// Stores the request's events; returns once they are durable.
    pub(crate) async fn send(&self, events: &[(Action, Target)]) {
        self.notifier
            .publish(&self.request, &self.actor, events)
            .await;
    }
}

impl Ctx<'_> {
    /// The notifier of this request, when notifications are configured.
    pub(crate) fn notify(&self) -> Option<&Notify> {
        self.notify.as_ref()
    }

    /// A manifest event's target: addressed by digest, with the tag it was named by and,
    /// with `events.includereferences`, what it references.
    pub(crate) fn manifest_target(
        &self,
        notify: &Notify,
        repo: &RepoName,
        reference: &Reference,
        digest: &Digest,
        media_type: &str,
        body: &[u8],
    ) -> Target {
        let digest = digest.to_string();
        let url = self.url(
            &Endpoint::Manifest {
                name: repo.as_str(),
                reference: &digest,
            }
            .path(),
        );
        let tag = match reference {
            Reference::Tag(t) => Some(t.as_str()),
            Reference::Digest(_) => None,
        };
        let mut target = Target::manifest(
            repo.as_str(),
            &digest,
            media_type,
            body.len() as u64,
            url,
            tag,
        );
        if notify.notifier.include_references()
            && let Ok(m) = Manifest::parse(body, Some(media_type))
        {
            // Distribution's `References()`: the config and layers, or an index's manifests.
            target.references = m
                .config
                .into_iter()
                .chain(m.layers)
                .chain(m.manifests)
                .collect();
        }
        target
    }

    /// A blob event's target.
    pub(crate) fn blob_target(&self, repo: &RepoName, digest: &str, size: u64) -> Target {
        let url = self.url(
            &Endpoint::Blob {
                name: repo.as_str(),
                digest,
            }
            .path(),
        );
        Target::blob(repo.as_str(), digest, size, url)
    }
}
