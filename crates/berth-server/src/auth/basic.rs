//! Basic credentials against the htpasswd file: the one path where a client's password is
//! checked, so the one place the failed-login limits ([`super::limiter`]) apply.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use http::HeaderValue;

use super::{Auth, Caller, Htpasswd, limiter};

impl Auth {
    /// Checks Basic credentials against the htpasswd file, counting the guess before it is
    /// checked ([`limiter`]): the caller, or why not.
    pub(super) async fn basic_login(
        &self,
        file: &Arc<Htpasswd>,
        value: &HeaderValue,
        peer: Option<IpAddr>,
    ) -> Result<Caller, Refusal> {
        let Some((user, password)) = basic_credentials(value) else {
            let _failure = self.limiter.attempt(peer, None).map_err(Refusal::TooMany)?;
            return Err(Refusal::Wrong("invalid authorization header"));
        };
        // containers/image (skopeo, podman) answers a Basic challenge without
        // credentials with an empty user and password: that is anonymous.
        if user.is_empty() && password.is_empty() {
            return Ok(Caller::Anonymous);
        }
        if let Some(left) = self.limiter.locked(peer, Some(&user)) {
            return Err(Refusal::TooMany(left));
        }
        // A password verified recently is right: nothing to count or check (a locked-out
        // client was refused above, so this is no way around the limit).
        if file.remembered(&user, &password) {
            return Ok(Caller::User(user));
        }
        let ok = loop {
            match self.checks.turn(file.check_key(&user, &password)) {
                // The same user and password are being checked: wait for that answer. A
                // right one is accepted uncounted, as any right guess; a wrong one counts as
                // a failure of its own (so a burst of one wrong password locks out as fast
                // as a burst of different ones).
                limiter::Turn::Wait(mut answer) => {
                    if let Ok(ok) = answer.wait_for(Option::is_some).await.map(|a| *a) {
                        let ok = ok.unwrap_or(false);
                        if !ok {
                            let _failure = self
                                .limiter
                                .attempt(peer, Some(&user))
                                .map_err(Refusal::TooMany)?;
                        }
                        break ok;
                    }
                }
                limiter::Turn::Run(leader) => {
                    let attempt = self
                        .limiter
                        .attempt(peer, Some(&user))
                        .map_err(Refusal::TooMany)?;
                    let permit = self.limiter.checking().await;
                    let (file, u, p) = (file.clone(), user.clone(), password.clone());
                    let ok = tokio::task::spawn_blocking(move || {
                        let _permit = permit;
                        file.verify(&u, &p)
                    })
                    .await
                    .unwrap_or(false);
                    leader.finish(ok);
                    if ok {
                        attempt.succeeded();
                    }
                    break ok;
                }
            }
        };
        if ok {
            Ok(Caller::User(user))
        } else {
            tracing::info!(user = %user, peer = ?peer, "authentication failed");
            Err(Refusal::Wrong("invalid username or password"))
        }
    }
}

/// Why [`Auth::basic_login`] refused.
pub(super) enum Refusal {
    /// Too many failed guesses: try again after this long.
    TooMany(Duration),
    /// Wrong or malformed credentials: a 401 with this message.
    Wrong(&'static str),
}

/// `Basic base64(user:password)`.
fn basic_credentials(value: &HeaderValue) -> Option<(String, String)> {
    let value = value.to_str().ok()?;
    let (scheme, rest) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_header() {
        let v = HeaderValue::from_static("Basic YWxpY2U6czpl");
        assert_eq!(basic_credentials(&v), Some(("alice".into(), "s:e".into())));
        assert_eq!(
            basic_credentials(&HeaderValue::from_static("Bearer x")),
            None
        );
    }
}
