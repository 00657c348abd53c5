//! Signed-in browsers: a random session id in an `HttpOnly`, `SameSite=Strict` cookie, and on
//! the server what the id stands for: the credential the browser signed in with (every page
//! calls the services with it, so its checks, its expiry and its revocation apply to every
//! page), the tenant, the roles, and the form token that every state-changing form carries.
//!
//! Sessions live in memory: a restart signs everyone out. Their number is bounded: one
//! credential holds a few at most (a new one pushes out its own least recently used), and when
//! the table is full of other people's live sessions a sign-in is refused rather than pushing
//! anyone out. Each ends after a time idle and a longest lifetime.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, header};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use recoup_access::{Action, Role};
use subtle::ConstantTimeEq as _;

/// The session cookie's name; over TLS with the `__Host-` prefix, which a browser accepts only
/// from this host, over TLS, for the whole site (no sibling domain can plant one).
pub fn session_cookie(secure: bool) -> &'static str {
    if secure {
        "__Host-recoup_session"
    } else {
        "recoup_session"
    }
}

/// The cookie of the sign-in form's token, set before anyone signed in.
pub fn sign_in_cookie(secure: bool) -> &'static str {
    if secure {
        "__Host-recoup_sign_in"
    } else {
        "recoup_sign_in"
    }
}

/// How many sessions, and for how long.
#[derive(Debug, Clone, Copy)]
pub struct SessionLimits {
    /// Sessions held at once, everyone's together.
    pub max_sessions: usize,
    /// Sessions of one credential at once; a new one pushes out its least recently used.
    pub per_credential: usize,
    /// Live-update streams one session holds open at once.
    pub streams_per_session: usize,
    /// A session unused this long ends.
    pub idle: Duration,
    /// A session ends this long after sign-in, used or not.
    pub lifetime: Duration,
}

impl Default for SessionLimits {
    fn default() -> Self {
        Self {
            max_sessions: 10_000,
            per_credential: 20,
            streams_per_session: 4,
            idle: Duration::from_secs(30 * 60),
            lifetime: Duration::from_secs(12 * 3600),
        }
    }
}

/// Who a session acts as.
#[derive(Debug, Clone)]
pub struct Session {
    /// The id its cookie carries (set when it starts).
    pub id: String,
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
    /// Its live-update streams open now.
    streams: Arc<AtomicUsize>,
}

/// Why no session started.
#[derive(Debug)]
pub enum StartError {
    /// Every place is taken by other credentials' live sessions.
    Full,
    /// The OS gave no randomness for the id.
    Random(String),
}

/// One of a session's live-update streams; its place frees when dropped.
pub struct StreamSlot(Arc<AtomicUsize>);

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
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
    pub fn start(&self, mut session: Session, now: Instant) -> Result<String, StartError> {
        let id = random_token().map_err(StartError::Random)?;
        session.id = id.clone();
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        held.retain(|_, h| self.live(h, now));
        // The credential's own sessions beyond its share: its least recently used goes.
        loop {
            let own = held
                .iter()
                .filter(|(_, h)| h.session.authorization == session.authorization)
                .filter(|(_, h)| h.session.who == session.who);
            if own.clone().count() < self.limits.per_credential.max(1) {
                break;
            }
            let oldest = own
                .min_by_key(|(_, h)| h.last_used)
                .map(|(id, _)| id.clone());
            if let Some(oldest) = oldest {
                held.remove(&oldest);
            }
        }
        if held.len() >= self.limits.max_sessions.max(1) {
            return Err(StartError::Full);
        }
        held.insert(
            id.clone(),
            Held {
                session,
                created: now,
                last_used: now,
                streams: Arc::new(AtomicUsize::new(0)),
            },
        );
        Ok(id)
    }

    /// Whether the session of `id` is live, without counting this as a use.
    pub fn alive(&self, id: &str, now: Instant) -> bool {
        let held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        held.get(id).is_some_and(|h| self.live(h, now))
    }

    /// A place for one more live-update stream of session `id`, if it has one free.
    pub fn stream_slot(&self, id: &str) -> Option<StreamSlot> {
        let held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let streams = held.get(id)?.streams.clone();
        let taken = streams.fetch_add(1, Ordering::Relaxed);
        let slot = StreamSlot(streams);
        (taken < self.limits.streams_per_session).then_some(slot)
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
            id: String::new(),
            authorization: Some(format!("Bearer {tenant}")),
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
            ..SessionLimits::default()
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
    fn a_credential_pushes_out_its_own_sessions_never_others() {
        let sessions = Sessions::new(SessionLimits {
            max_sessions: 3,
            per_credential: 2,
            ..SessionLimits::default()
        });
        let t = |s: u64| Instant::now() + Duration::from_secs(s);
        let a1 = sessions.start(session("a"), t(0)).unwrap();
        let a2 = sessions.start(session("a"), t(1)).unwrap();
        sessions.get(&a1, t(2)).unwrap();
        // A third of a's: its least recently used (a2) goes.
        let a3 = sessions.start(session("a"), t(3)).unwrap();
        assert!(sessions.get(&a2, t(4)).is_none());
        assert!(sessions.get(&a1, t(4)).is_some() && sessions.get(&a3, t(4)).is_some());
        let b = sessions.start(session("b"), t(5)).unwrap();
        // Full of live sessions: c is refused, nobody is pushed out.
        assert!(matches!(
            sessions.start(session("c"), t(6)),
            Err(StartError::Full)
        ));
        for id in [&a1, &a3, &b] {
            assert!(sessions.get(id, t(7)).is_some());
        }
        // Signed out, the place is free again.
        sessions.end(&b);
        assert!(sessions.start(session("c"), t(8)).is_ok());
    }

    #[test]
    fn a_session_holds_a_few_streams_and_frees_them() {
        let sessions = Sessions::new(SessionLimits {
            streams_per_session: 2,
            ..SessionLimits::default()
        });
        let now = Instant::now();
        let id = sessions.start(session("a"), now).unwrap();
        let one = sessions.stream_slot(&id).unwrap();
        let two = sessions.stream_slot(&id).unwrap();
        assert!(sessions.stream_slot(&id).is_none());
        drop(one);
        assert!(sessions.stream_slot(&id).is_some());
        drop(two);
        assert!(sessions.stream_slot("unknown").is_none());
        assert!(sessions.alive(&id, now));
        sessions.end(&id);
        assert!(!sessions.alive(&id, now));
    }

    #[test]
    fn cookies_are_http_only_strict_and_secure_over_tls() {
        let c = set_cookie(session_cookie(true), "abc", Duration::from_secs(60), true);
        assert_eq!(
            c,
            "__Host-recoup_session=abc; Path=/; HttpOnly; SameSite=Strict; Max-Age=60; Secure"
        );
        let plain = set_cookie(session_cookie(false), "abc", Duration::ZERO, false);
        assert!(!plain.contains("Secure") && plain.starts_with("recoup_session="));
        let name = session_cookie(false);
        assert_eq!(cookie("a=1; recoup_session=xyz; b=2", name), Some("xyz"));
        assert_eq!(cookie("recoup_session_x=1", name), None);
        let s = session("t");
        assert!(s.form_token_is(&s.form_token.clone()));
        assert!(!s.form_token_is("nope"));
    }
}
