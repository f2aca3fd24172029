//! Bearer tokens (docs/reference.md#security-model): verifying them on every `/v1` request
//! and minting them for `allot token`.
//!
//! Two algorithms are accepted, each pinned to its own key: HS256 with
//! `api.jwt_secret` and EdDSA with the Ed25519 public key at `api.jwt_public_key`.
//! A token naming any other algorithm (`none` included) is refused before its
//! signature is looked at. `exp`, `iss`, `aud` and `sub` are required; `exp` must
//! lie in the future and no further ahead than `api.max_token_ttl`; `iss` and
//! `aud` must be the configured ones. A `tenant` role needs a valid `tenant` claim,
//! which then decides everything the token may see.

use std::time::Duration;

use allot_schemas::config::ApiConfig;
use allot_schemas::tenant::TenantId;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::error::{ApiError, AuthFailure};

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// One tenant's own data, and SQL over its own events.
    Tenant,
    /// Every tenant's billing, allocation, health, usage and noisy flags; no SQL.
    Finance,
    /// Everything, including SQL over all tenants.
    Admin,
}

impl Role {
    /// The claim's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Tenant => "tenant",
            Role::Finance => "finance",
            Role::Admin => "admin",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(text: &str) -> Result<Role, String> {
        match text {
            "tenant" => Ok(Role::Tenant),
            "finance" => Ok(Role::Finance),
            "admin" => Ok(Role::Admin),
            other => Err(format!(
                "{other:?} is not a role (tenant, finance or admin)"
            )),
        }
    }
}

/// The claims allot writes into a token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// Who the token is for.
    pub sub: String,
    /// Its role.
    pub role: Role,
    /// The tenant, for role `tenant`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Issuer.
    pub iss: String,
    /// Audience.
    pub aud: String,
    /// Issued at, Unix seconds.
    pub iat: i64,
    /// Expiry, Unix seconds.
    pub exp: i64,
}

/// The claims read from a token (issuer and audience are checked by the decoder).
#[derive(Debug, Deserialize)]
struct TokenClaims {
    sub: String,
    role: Role,
    #[serde(default)]
    tenant: Option<String>,
    exp: i64,
    #[serde(default)]
    nbf: Option<i64>,
}

/// Who made a request, from a verified token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The `sub` claim.
    pub sub: String,
    /// The role.
    pub role: Role,
    /// The tenant, for role `tenant`.
    pub tenant: Option<TenantId>,
}

impl Principal {
    /// The key of its rate limit and SQL slots: the verified tenant claim, or
    /// the subject for finance and admin tokens.
    pub fn limit_key(&self) -> String {
        match &self.tenant {
            Some(tenant) => format!("tenant:{tenant}"),
            None => format!("sub:{}", self.sub),
        }
    }

    /// The scope of the caller's SQL (`POST /v1/sql`, the wire protocols): a
    /// tenant token its own tenant, admin every tenant; `None` for finance,
    /// which may not run SQL.
    pub fn sql_scope(&self) -> Option<allot_lake::session::Scope> {
        match (self.role, &self.tenant) {
            (Role::Tenant, Some(tenant)) => {
                Some(allot_lake::session::Scope::Tenant(tenant.to_string()))
            }
            (Role::Admin, _) => Some(allot_lake::session::Scope::AllTenants),
            (Role::Finance, _) | (Role::Tenant, None) => None,
        }
    }

    /// The tenant a tenant token is confined to; `None` for finance and admin.
    pub fn confined_to(&self) -> Option<&str> {
        match self.role {
            Role::Tenant => self.tenant.as_ref().map(TenantId::as_str),
            Role::Finance | Role::Admin => None,
        }
    }
}

/// Verifies bearer tokens against the configured keys.
pub struct Authenticator {
    hs256: Option<DecodingKey>,
    eddsa: Option<DecodingKey>,
    issuer: String,
    audience: String,
    max_ttl_secs: i64,
    /// Clock skew tolerated on `exp`, `nbf` and the lifetime cap (`api.clock_skew`).
    leeway_secs: i64,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("hs256", &self.hs256.is_some())
            .field("eddsa", &self.eddsa.is_some())
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish()
    }
}

fn ttl_secs(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX)
}

impl Authenticator {
    /// Reads the keys of `api`; at least one of `jwt_secret` and `jwt_public_key`
    /// must be set.
    pub fn new(api: &ApiConfig) -> Result<Authenticator, ApiError> {
        let hs256 = match &api.jwt_secret {
            Some(secret) => Some(
                DecodingKey::from_secret(secret.expose().as_bytes()).map_err(|e| {
                    ApiError::Setup {
                        key: "api.jwt_secret",
                        message: e.to_string(),
                    }
                })?,
            ),
            None => None,
        };
        let eddsa = match &api.jwt_public_key {
            Some(path) => {
                let pem = std::fs::read(path).map_err(|e| ApiError::Setup {
                    key: "api.jwt_public_key",
                    message: format!("cannot read {path}: {e}"),
                })?;
                Some(DecodingKey::from_ed_pem(&pem).map_err(|e| ApiError::Setup {
                    key: "api.jwt_public_key",
                    message: format!("{path} is not an Ed25519 public key in PEM: {e}"),
                })?)
            }
            None => None,
        };
        if hs256.is_none() && eddsa.is_none() {
            return Err(ApiError::Setup {
                key: "api.jwt_secret",
                message: "set api.jwt_secret (HS256) or api.jwt_public_key (EdDSA) to serve"
                    .to_string(),
            });
        }
        Ok(Authenticator {
            hs256,
            eddsa,
            issuer: api.issuer.clone(),
            audience: api.audience.clone(),
            max_ttl_secs: ttl_secs(api.max_token_ttl.0),
            leeway_secs: ttl_secs(api.clock_skew.0),
        })
    }

    /// Verifies `token` as of `now_secs` (Unix seconds).
    pub fn verify(&self, token: &str, now_secs: i64) -> Result<Principal, AuthFailure> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| header_failure(token))?;
        let key = match header.alg {
            Algorithm::HS256 => self.hs256.as_ref(),
            Algorithm::EdDSA => self.eddsa.as_ref(),
            _ => None,
        }
        .ok_or(AuthFailure::Algorithm)?;
        let mut validation = Validation::new(header.alg);
        validation.algorithms = vec![header.alg];
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        // Time is checked below against the server's clock.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        let data =
            jsonwebtoken::decode::<TokenClaims>(token, key, &validation).map_err(|e| {
                match e.kind() {
                    ErrorKind::InvalidSignature => AuthFailure::Signature,
                    ErrorKind::InvalidAlgorithm
                    | ErrorKind::InvalidAlgorithmName
                    | ErrorKind::MissingAlgorithm => AuthFailure::Algorithm,
                    ErrorKind::InvalidIssuer => AuthFailure::Issuer,
                    ErrorKind::InvalidAudience => AuthFailure::Audience,
                    ErrorKind::MissingRequiredClaim(_) | ErrorKind::InvalidClaimFormat(_) => {
                        AuthFailure::Claims
                    }
                    _ => AuthFailure::Malformed,
                }
            })?;
        let claims = data.claims;
        let leeway = self.leeway_secs;
        if claims.exp <= now_secs.saturating_sub(leeway) {
            return Err(AuthFailure::Expired);
        }
        if claims.exp > now_secs.saturating_add(self.max_ttl_secs.saturating_add(leeway)) {
            return Err(AuthFailure::LifetimeTooLong);
        }
        if claims
            .nbf
            .is_some_and(|nbf| nbf > now_secs.saturating_add(leeway))
        {
            return Err(AuthFailure::NotYetValid);
        }
        if claims.sub.is_empty() {
            return Err(AuthFailure::Claims);
        }
        let tenant = match claims.role {
            Role::Tenant => match claims.tenant.map(TenantId::try_from) {
                Some(Ok(tenant)) => Some(tenant),
                _ => return Err(AuthFailure::Claims),
            },
            Role::Finance | Role::Admin => None,
        };
        Ok(Principal {
            sub: claims.sub,
            role: claims.role,
            tenant,
        })
    }
}

/// Why a token's header does not parse: an `alg` the decoder does not know
/// (such as `none`) is an algorithm failure, anything else a malformed token.
fn header_failure(token: &str) -> AuthFailure {
    use base64::Engine;
    let header = token.split('.').next().unwrap_or_default();
    let alg = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header.trim_end_matches('='))
        .ok()
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
        .and_then(|value| value.get("alg").cloned());
    match alg {
        Some(serde_json::Value::String(_)) => AuthFailure::Algorithm,
        _ => AuthFailure::Malformed,
    }
}

/// What `allot token` is asked for.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    /// The `sub` claim.
    pub sub: String,
    /// The role.
    pub role: Role,
    /// The tenant (required for, and only for, role `tenant`).
    pub tenant: Option<String>,
    /// Lifetime; at most `api.max_token_ttl`.
    pub ttl: Duration,
}

/// Signs a token for `request` as of `now_secs`: EdDSA with
/// `api.jwt_private_key` when it is set, else HS256 with `api.jwt_secret`.
/// Every error is the caller's (a flag or config key) except a failed signature.
pub fn mint_token(
    api: &ApiConfig,
    request: &TokenRequest,
    now_secs: i64,
) -> Result<String, ApiError> {
    let bad = |message: String| ApiError::BadRequest(message);
    match (request.role, &request.tenant) {
        (Role::Tenant, None) => return Err(bad("--role tenant needs --tenant".to_string())),
        (Role::Tenant, Some(t)) => {
            TenantId::parse(t).map_err(|e| bad(format!("--tenant {e}")))?;
        }
        (Role::Finance | Role::Admin, Some(_)) => {
            return Err(bad(format!(
                "--tenant is only for --role tenant; a {} token sees every tenant",
                request.role.as_str()
            )));
        }
        _ => {}
    }
    if request.ttl.is_zero() || request.ttl > api.max_token_ttl.0 {
        return Err(bad(format!(
            "--ttl must be above 0 and at most api.max_token_ttl ({}s)",
            api.max_token_ttl.0.as_secs()
        )));
    }
    if request.sub.is_empty() {
        return Err(bad("--sub must not be empty".to_string()));
    }
    let (algorithm, key) = match (&api.jwt_private_key, &api.jwt_secret) {
        (Some(path), _) => {
            let pem = std::fs::read(path).map_err(|e| ApiError::Setup {
                key: "api.jwt_private_key",
                message: format!("cannot read {path}: {e}"),
            })?;
            let key = EncodingKey::from_ed_pem(&pem).map_err(|e| ApiError::Setup {
                key: "api.jwt_private_key",
                message: format!("{path} is not an Ed25519 private key in PKCS#8 PEM: {e}"),
            })?;
            (Algorithm::EdDSA, key)
        }
        (None, Some(secret)) => (
            Algorithm::HS256,
            EncodingKey::from_secret(secret.expose().as_bytes()).map_err(|e| ApiError::Setup {
                key: "api.jwt_secret",
                message: e.to_string(),
            })?,
        ),
        (None, None) => {
            return Err(ApiError::Setup {
                key: "api.jwt_secret",
                message: "set api.jwt_secret (HS256) or api.jwt_private_key (EdDSA) to mint tokens"
                    .to_string(),
            });
        }
    };
    let claims = Claims {
        sub: request.sub.clone(),
        role: request.role,
        tenant: request.tenant.clone(),
        iss: api.issuer.clone(),
        aud: api.audience.clone(),
        iat: now_secs,
        exp: now_secs.saturating_add(ttl_secs(request.ttl)),
    };
    jsonwebtoken::encode(&Header::new(algorithm), &claims, &key)
        .map_err(|e| ApiError::Internal(format!("cannot sign the token: {e}")))
}

#[cfg(test)]
mod tests {
    use allot_schemas::config::Config;

    use super::*;

    const NOW: i64 = 1_772_000_000;

    fn api() -> ApiConfig {
        Config::from_toml_str(
            "[api]\njwt_secret = \"a-test-secret-of-at-least-32-bytes\"\nmax_token_ttl = \"1h\"",
            "test",
            Vec::new(),
        )
        .unwrap()
        .api
    }

    fn request(role: Role, tenant: Option<&str>, ttl_secs: u64) -> TokenRequest {
        TokenRequest {
            sub: "someone".to_string(),
            role,
            tenant: tenant.map(str::to_string),
            ttl: Duration::from_secs(ttl_secs),
        }
    }

    #[test]
    fn a_minted_token_verifies_with_its_claims() {
        let api = api();
        let auth = Authenticator::new(&api).unwrap();
        let token = mint_token(&api, &request(Role::Tenant, Some("acme"), 900), NOW).unwrap();
        let principal = auth.verify(&token, NOW).unwrap();
        assert_eq!(principal.role, Role::Tenant);
        assert_eq!(principal.confined_to(), Some("acme"));
        assert_eq!(principal.limit_key(), "tenant:acme");
        assert_eq!(
            auth.verify(&token, NOW + 900 + 30),
            Err(AuthFailure::Expired)
        );
    }

    #[test]
    fn the_clock_skew_leeway_is_the_configured_one() {
        let api = api();
        let token = mint_token(&api, &request(Role::Finance, None, 900), NOW).unwrap();
        let expired_40s_ago = NOW + 900 + 40;
        assert_eq!(
            Authenticator::new(&api)
                .unwrap()
                .verify(&token, expired_40s_ago),
            Err(AuthFailure::Expired)
        );
        let lenient = ApiConfig {
            clock_skew: allot_schemas::config::HumanDuration(Duration::from_secs(60)),
            ..api
        };
        assert!(
            Authenticator::new(&lenient)
                .unwrap()
                .verify(&token, expired_40s_ago)
                .is_ok()
        );
    }

    #[test]
    fn minting_refuses_what_the_server_would_refuse() {
        let api = api();
        assert!(mint_token(&api, &request(Role::Tenant, None, 60), NOW).is_err());
        assert!(mint_token(&api, &request(Role::Tenant, Some("../x"), 60), NOW).is_err());
        assert!(mint_token(&api, &request(Role::Finance, Some("acme"), 60), NOW).is_err());
        assert!(mint_token(&api, &request(Role::Admin, None, 7200), NOW).is_err());
    }

    #[test]
    fn a_token_from_too_far_ahead_is_refused() {
        let mut long = api();
        long.max_token_ttl.0 = Duration::from_secs(86_400);
        let token = mint_token(&long, &request(Role::Admin, None, 86_400), NOW).unwrap();
        let auth = Authenticator::new(&api()).unwrap();
        assert_eq!(auth.verify(&token, NOW), Err(AuthFailure::LifetimeTooLong));
    }

    #[test]
    fn an_unsigned_token_is_refused_for_its_algorithm() {
        let auth = Authenticator::new(&api()).unwrap();
        // {"alg":"none","typ":"JWT"} . {"sub":"x","role":"admin",...}
        let header = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0";
        let claims = "eyJzdWIiOiJ4Iiwicm9sZSI6ImFkbWluIiwiaXNzIjoiYWxsb3QiLCJhdWQiOiJhbGxvdCIsImV4cCI6MTc3MjAwMDkwMH0";
        assert_eq!(
            auth.verify(&format!("{header}.{claims}."), NOW),
            Err(AuthFailure::Algorithm)
        );
    }
}
