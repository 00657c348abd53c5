//! Signed-in browsers: a random session id in an `HttpOnly`, `SameSite=Strict` cookie, and on
//! the server what the id stands for: the credential the browser signed in with (every page
//! calls the services with it, so its checks, its expiry and its revocation apply to every
//! page), the tenant, the roles, and the form token that every state-changing form carries.
//!
//! Sessions live in memory: a restart signs everyone out. Their number is bounded (the least
//! recently used goes first), and each ends after a time idle and a longest lifetime.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, header};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use recoup_access::{Action, Role};
use subtle::ConstantTimeEq as _;

/// The session cookie's name.
pub const COOKIE: &str = "recoup_session";
/// The cookie of the sign-in form's token, set before anyone signed in.
pub const SIGN_IN_COOKIE: &str = "recoup_sign_in";

/// How many sessions, and for how long.
#[derive(Debug, Clone, Copy)]
pub struct SessionLimits {
    /// Sessions held at once; a new one pushes out the least recently used.
    pub max_sessions: usize,
    /// A session unused this long ends.
    pub idle: Duration,
    /// A session ends this long after sign-in, used or not.
    pub lifetime: Duration,
}

impl Default for SessionLimits {
    fn default() -> Self {
        Self {
            max_sessions: 10_000,
            idle: Duration::from_secs(30 * 60),
            lifetime: Duration::from_secs(12 * 3600),
        }
    }
}

/// Who a session acts as.
#[derive(Debug, Clone)]
pub struct Session {
    /// The `authorization` value the services get: `Bearer <key or token>`; `None` when the
    /// process runs without credentials.
    pub authorization: Option<String>,
    /// `key:<id>`, `jwt:<subject>`, or `anonymous`.
    pub who: String,
    pub tenant: String,
    pub roles: Vec<Role>,
    /// The token every state-changing form of this session carries.
    pub form_token: String,
}

impl Session {
    /// Whether one of the session's roles allows `action` (what the pages offer; the services
    /// decide again on every call).
    pub fn may(&self, action: Action) -> bool {
        self.roles.iter().any(|r| r.allows(action))
    }

    /// Whether `token` is this session's form token (compared in constant time).
    pub fn form_token_is(&self, token: &str) -> bool {
        self.form_token.as_bytes().ct_eq(token.as_bytes()).into()
    }
}

struct Held {
    session: Session,
    created: Instant,
    last_used: Instant,
}

/// The sessions of this process.
pub struct Sessions {
    limits: SessionLimits,
    held: Mutex<HashMap<String, Held>>,
}

impl Sessions {
    pub fn new(limits: SessionLimits) -> Self {
        Self {
            limits,
            held: Mutex::new(HashMap::new()),
        }
    }

    pub fn limits(&self) -> SessionLimits {
        self.limits
    }

    /// Starts a session; its id, for the cookie.
    pub fn start(&self, session: Session, now: Instant) -> Result<String, String> {
        let id = random_token()?;
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        held.retain(|_, h| self.live(h, now));
        while held.len() >= self.limits.max_sessions.max(1) {
            let oldest = held
                .iter()
                .min_by_key(|(_, h)| h.last_used)
                .map(|(id, _)| id.clone());
            match oldest {
                Some(id) => held.remove(&id),
                None => break,
            };
        }
        held.insert(
            id.clone(),
            Held {
                session,
                created: now,
                last_used: now,
            },
        );
        Ok(id)
    }

    /// The session of `id`, if it is live; using it keeps it from ending idle.
    pub fn get(&self, id: &str, now: Instant) -> Option<Session> {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let live = held.get(id).is_some_and(|h| self.live(h, now));
        if !live {
            held.remove(id);
            return None;
        }
        let h = held.get_mut(id)?;
        h.last_used = now;
        Some(h.session.clone())
    }

    /// Ends the session of `id` (sign-out).
    pub fn end(&self, id: &str) {
        self.held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id);
    }

    fn live(&self, h: &Held, now: Instant) -> bool {
        now.duration_since(h.last_used) < self.limits.idle
            && now.duration_since(h.created) < self.limits.lifetime
    }
}

/// 32 bytes from the OS's generator, URL-safe base64.
pub fn random_token() -> Result<String, String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| format!("no randomness from the OS: {e}"))?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// A `Set-Cookie` value: `HttpOnly`, `SameSite=Strict`, the whole site, `Secure` when the
/// browser reaches recoup over TLS; `max_age` zero removes the cookie.
pub fn set_cookie(name: &str, value: &str, max_age: Duration, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!(
        "{name}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
        max_age.as_secs()
    )
}

/// The value of cookie `name` in a `Cookie` header.
pub fn cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|pair| {
        let (k, v) = pair.trim().split_once('=')?;
        (k == name).then_some(v)
    })
}

/// The value of cookie `name` among a request's `Cookie` headers.
pub fn cookie_of<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| cookie(v, name))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn session(tenant: &str) -> Session {
        Session {
            authorization: None,
            who: "anonymous".into(),
            tenant: tenant.into(),
            roles: vec![Role::Viewer],
            form_token: random_token().unwrap(),
        }
    }

    #[test]
    fn a_session_ends_idle_after_its_lifetime_and_at_sign_out() {
        let limits = SessionLimits {
            max_sessions: 10,
            idle: Duration::from_secs(60),
            lifetime: Duration::from_secs(300),
        };
        let sessions = Sessions::new(limits);
        let t0 = Instant::now();
        let id = sessions.start(session("acme"), t0).unwrap();
        assert_eq!(sessions.get(&id, t0).unwrap().tenant, "acme");
        // Used every 50 s: it stays until its lifetime ends.
        let mut t = t0;
        for _ in 0..5 {
            t += Duration::from_secs(50);
            assert!(sessions.get(&id, t).is_some(), "{:?}", t - t0);
        }
        assert!(sessions.get(&id, t0 + Duration::from_secs(301)).is_none());
        let id = sessions.start(session("acme"), t0).unwrap();
        assert!(sessions.get(&id, t0 + Duration::from_secs(61)).is_none());
        let id = sessions.start(session("acme"), t0).unwrap();
        sessions.end(&id);
        assert!(sessions.get(&id, t0).is_none());
    }

    #[test]
    fn the_least_recently_used_session_makes_room() {
        let sessions = Sessions::new(SessionLimits {
            max_sessions: 2,
            ..SessionLimits::default()
        });
        let t0 = Instant::now();
        let a = sessions.start(session("a"), t0).unwrap();
        let b = sessions
            .start(session("b"), t0 + Duration::from_secs(1))
            .unwrap();
        sessions.get(&a, t0 + Duration::from_secs(2)).unwrap();
        let c = sessions
            .start(session("c"), t0 + Duration::from_secs(3))
            .unwrap();
        let now = t0 + Duration::from_secs(4);
        assert!(sessions.get(&a, now).is_some());
        assert!(sessions.get(&b, now).is_none(), "b was used least recently");
        assert!(sessions.get(&c, now).is_some());
    }

    #[test]
    fn cookies_are_http_only_strict_and_secure_over_tls() {
        let c = set_cookie(COOKIE, "abc", Duration::from_secs(60), true);
        assert_eq!(
            c,
            "recoup_session=abc; Path=/; HttpOnly; SameSite=Strict; Max-Age=60; Secure"
        );
        assert!(!set_cookie(COOKIE, "abc", Duration::ZERO, false).contains("Secure"));
        assert_eq!(cookie("a=1; recoup_session=xyz; b=2", COOKIE), Some("xyz"));
        assert_eq!(cookie("recoup_session_x=1", COOKIE), None);
        let s = session("t");
        assert!(s.form_token_is(&s.form_token.clone()));
        assert!(!s.form_token_is("nope"));
    }
}
