//! API tokens: generation, hashing, scopes, and which scope each route needs.
//!
//! A token is `fitd_` followed by 64 hexadecimal digits (256 random bits from the operating system).
//! It is shown once, when created; the database keeps only its SHA-256. A request's token is hashed
//! and looked up by hash, then the stored hash is compared with the computed one in constant time,
//! so neither the lookup nor the comparison leaks how much of a guessed token is right. Tokens are
//! looked up on every request (no cache), so a revoked token is refused from the next request on,
//! whether it was revoked over HTTP or with `fitd token revoke` on the database.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::http::Method;
use sha2::{Digest, Sha256};

use crate::store::{self, Store, tokens::TokenRow};

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// Every `GET`: datasets, models, jobs, their events and history, saved models, metrics.
    Read,
    /// Changes to datasets, models, jobs and saved models: uploads, training, cancelling, deleting.
    Train,
    /// Predictions, evaluation and KServe v2 inference.
    Predict,
    /// Managing API tokens.
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 4] = [Scope::Read, Scope::Train, Scope::Predict, Scope::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Train => "train",
            Scope::Predict => "predict",
            Scope::Admin => "admin",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scope {
    type Err = String;

    fn from_str(s: &str) -> Result<Scope, String> {
        Scope::ALL
            .into_iter()
            .find(|scope| scope.as_str() == s)
            .ok_or_else(|| format!("unknown scope {s:?}; expected one of read, train, predict, admin"))
    }
}

/// Scopes in their canonical order without duplicates, as stored (`read,train`).
pub fn scopes_to_string(scopes: &[Scope]) -> String {
    let mut sorted = scopes.to_vec();
    sorted.sort();
    sorted.dedup();
    sorted.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(",")
}

/// The scopes of a stored list; unknown entries (from a newer version) are ignored.
pub fn scopes_from_str(s: &str) -> Vec<Scope> {
    s.split(',').filter_map(|p| p.trim().parse().ok()).collect()
}

/// What a route requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Answered without a token: probes, the dashboard's static files, the API description.
    Public,
    /// Needs a token with this scope (once authentication is enforced).
    Scope(Scope),
}

/// The access rule of a route, by method and path template (`/v1/jobs/{id}`).
///
/// Anything not named here needs `read` for `GET`/`HEAD` and `train` otherwise, so a new route is
/// protected from the start.
pub fn access(method: &Method, path: &str) -> Access {
    const PUBLIC: &[&str] = &[
        "/healthz",
        "/readyz",
        "/v2/health/live",
        "/v2/health/ready",
        "/",
        "/openapi.json",
        "/assets/{file}",
    ];
    const PREDICT: &[&str] = &[
        "/v1/saved-models/{id}/predict",
        "/v1/saved-models/{id}/evaluate",
        "/v2/models/{id}/infer",
        "/v2/models/{id}/versions/{version}/infer",
    ];
    let read_only = method == Method::GET || method == Method::HEAD;
    if read_only && (PUBLIC.contains(&path) || path == "/docs" || path.starts_with("/docs/")) {
        return Access::Public;
    }
    // Signing in and out of the dashboard, and asking whether one is signed in.
    if path == "/v1/session" {
        return Access::Public;
    }
    if path == "/v1/tokens" || path.starts_with("/v1/tokens/") {
        return Access::Scope(Scope::Admin);
    }
    if method == Method::POST && PREDICT.contains(&path) {
        return Access::Scope(Scope::Predict);
    }
    Access::Scope(if read_only { Scope::Read } else { Scope::Train })
}

/// A new token: `fitd_` and 64 hexadecimal digits.
pub fn generate_token() -> anyhow::Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness from the OS: {e}"))?;
    Ok(format!("fitd_{}", hex::encode(bytes)))
}

/// Lowercase hex SHA-256 of a token, what the database stores.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Equality whose time does not depend on where the inputs differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// A freshly created token: its stored row and the secret, shown once.
#[derive(Debug)]
pub struct Created {
    pub row: TokenRow,
    pub token: String,
}

/// Longest token name, in characters.
pub const MAX_NAME_CHARS: usize = 200;

/// Creates a token with these scopes. `name` must be 1-200 characters, `scopes` non-empty.
pub async fn create_token(store: &Store, name: &str, scopes: &[Scope]) -> Result<Created, CreateError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
        return Err(CreateError::Name);
    }
    if scopes.is_empty() {
        return Err(CreateError::NoScopes);
    }
    let token = generate_token()?;
    register(store, name, scopes, &token)
        .await
        .map(|row| Created { row, token })
}

/// Stores a token whose secret the caller already has (a generated one, or an operator's
/// `--admin-token-file`).
async fn register(store: &Store, name: &str, scopes: &[Scope], token: &str) -> Result<TokenRow, CreateError> {
    let row = TokenRow {
        id: store::new_id(),
        name: name.to_string(),
        scopes: scopes_to_string(scopes),
        prefix: token.chars().take(12).collect(),
        created_at: store::now_rfc3339(),
        revoked_at: None,
    };
    store::tokens::insert(store, &row, &hash_token(token)).await?;
    Ok(row)
}

/// Registers the token held in `path` as an admin token with every scope, unless a token with the
/// same secret was registered before (then nothing changes: a revoked one stays revoked).
/// Returns whether it was added.
pub async fn register_token_file(store: &Store, path: &std::path::Path) -> anyhow::Result<bool> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("reading the admin token file {}: {e}", path.display()))?;
    let token = text.trim();
    if token.len() < 32 || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        anyhow::bail!(
            "the admin token file {} must hold one token of at least 32 characters without spaces \
             (e.g. from `openssl rand -hex 32`)",
            path.display()
        );
    }
    if store::tokens::hash_exists(store, &hash_token(token)).await? {
        return Ok(false);
    }
    register(store, "admin (token file)", &Scope::ALL, token)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(true)
}

#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error("name must be 1-{MAX_NAME_CHARS} characters")]
    Name,
    #[error("at least one scope is needed")]
    NoScopes,
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// Who a request is: the token it authenticated with.
#[derive(Debug, Clone)]
pub struct Principal {
    pub token_id: String,
    pub scopes: Vec<Scope>,
}

/// The live token `presented` is, if any.
pub async fn authenticate(store: &Store, presented: &str) -> Result<Option<Principal>, store::Error> {
    let hash = hash_token(presented);
    let Some((row, stored)) = store::tokens::find_live_by_hash(store, &hash).await? else {
        return Ok(None);
    };
    if !constant_time_eq(stored.as_bytes(), hash.as_bytes()) {
        return Ok(None);
    }
    Ok(Some(Principal {
        token_id: row.id,
        scopes: scopes_from_str(&row.scopes),
    }))
}

/// How long a dashboard session lasts.
pub const SESSION_TTL: std::time::Duration = std::time::Duration::from_secs(12 * 3600);
/// Most sessions held; beyond it the one closest to expiring is dropped.
pub const MAX_SESSIONS: usize = 10_000;

/// Dashboard sessions: a random session id (in an `HttpOnly`, `SameSite=Strict` cookie) standing
/// for a token, so the browser never holds the token itself and `EventSource` (which cannot send
/// headers) is authenticated too. Kept in memory by the hash of the id: a restart signs everyone
/// out. The token behind a session is checked on every request, so revoking it ends the session.
#[derive(Debug, Default)]
pub struct Sessions {
    inner: std::sync::Mutex<std::collections::HashMap<String, (String, std::time::Instant)>>,
}

impl Sessions {
    /// A new session for the token `token_id`; returns the session id for the cookie.
    pub fn create(&self, token_id: &str) -> anyhow::Result<String> {
        let id = generate_token()?;
        let now = std::time::Instant::now();
        let mut map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, (_, expires)| *expires > now);
        if map.len() >= MAX_SESSIONS
            && let Some(oldest) = map.iter().min_by_key(|(_, (_, e))| *e).map(|(k, _)| k.clone())
        {
            map.remove(&oldest);
        }
        map.insert(hash_token(&id), (token_id.to_string(), now + SESSION_TTL));
        Ok(id)
    }

    /// The token id of a live session.
    pub fn token_of(&self, session: &str) -> Option<String> {
        let map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&hash_token(session))
            .filter(|(_, expires)| *expires > std::time::Instant::now())
            .map(|(token, _)| token.clone())
    }

    pub fn remove(&self, session: &str) {
        let mut map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(&hash_token(session));
    }
}

/// The principal of a session, if it is live and its token is not revoked (a session of a revoked
/// token is dropped).
pub async fn session_principal(
    store: &Store,
    sessions: &Sessions,
    session: &str,
) -> Result<Option<Principal>, store::Error> {
    let Some(token_id) = sessions.token_of(session) else {
        return Ok(None);
    };
    match store::tokens::get(store, &token_id).await {
        Ok(row) if row.revoked_at.is_none() => Ok(Some(Principal {
            token_id: row.id,
            scopes: scopes_from_str(&row.scopes),
        })),
        Ok(_) | Err(store::Error::NotFound(_)) => {
            sessions.remove(session);
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// How long an open server trusts its last look at the token table before looking again.
pub const OPEN_RECHECK: std::time::Duration = std::time::Duration::from_secs(1);

/// Whether requests must carry a token: from the moment any token exists in the database until the
/// server stops. A token created over HTTP latches it at once; one created by the CLI from another
/// process is seen within [`OPEN_RECHECK`], so an open server does not query the database on every
/// request.
#[derive(Debug, Default)]
pub struct AuthState {
    enforced: AtomicBool,
    checked: std::sync::Mutex<Option<std::time::Instant>>,
}

impl AuthState {
    pub async fn enforced(&self, store: &Store) -> Result<bool, store::Error> {
        if self.enforced.load(Ordering::Acquire) {
            return Ok(true);
        }
        let fresh = self
            .checked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some_and(|t| t.elapsed() < OPEN_RECHECK);
        if fresh {
            return Ok(false);
        }
        let any = store::tokens::any(store).await?;
        if any {
            self.latch();
        } else {
            *self.checked.lock().unwrap_or_else(|p| p.into_inner()) = Some(std::time::Instant::now());
        }
        Ok(any)
    }

    /// From now on every request needs a token (a token was just created).
    pub fn latch(&self) {
        if !self.enforced.swap(true, Ordering::AcqRel) {
            tracing::info!("API tokens exist: every request now needs a token");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_random_and_hashed() {
        let a = generate_token().unwrap();
        let b = generate_token().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 5 + 64);
        assert!(a.starts_with("fitd_"));
        assert_eq!(hash_token(&a).len(), 64);
        assert_ne!(hash_token(&a), hash_token(&b));
    }

    #[test]
    fn constant_time_eq_compares_whole_inputs() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }

    #[test]
    fn scopes_round_trip_in_canonical_order() {
        let s = scopes_to_string(&[Scope::Admin, Scope::Read, Scope::Read]);
        assert_eq!(s, "read,admin");
        assert_eq!(scopes_from_str(&s), vec![Scope::Read, Scope::Admin]);
        assert!("write".parse::<Scope>().is_err());
    }

    #[test]
    fn unknown_routes_default_to_read_or_train() {
        assert_eq!(access(&Method::GET, "/v1/new-thing"), Access::Scope(Scope::Read));
        assert_eq!(
            access(&Method::PATCH, "/v1/new-thing/{id}"),
            Access::Scope(Scope::Train)
        );
        assert_eq!(access(&Method::POST, "/healthz"), Access::Scope(Scope::Train));
        assert_eq!(access(&Method::GET, "/healthz"), Access::Public);
    }
}
