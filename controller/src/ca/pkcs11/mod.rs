//! Root keys in a PKCS#11 token: an HSM, SoftHSM2, or a cloud KMS through its PKCS#11
//! library.
//!
//! [`Token::open`] loads the module (once per process, as the standard asks), finds the token
//! by label and logs in as its user. Root keys are generated *in* the token
//! ([`Token::generate`]) as token objects labelled with the configured key label,
//! `CKA_SENSITIVE` and never `CKA_EXTRACTABLE`, so the private key cannot leave it; and
//! found again by that label ([`Token::keys`]) — the certificate in the CA Secret says which
//! of the labelled keys is the root's. A [`TokenKey`] is a [`KeyDevice`]: it asks the token
//! to sign (`CKM_ECDSA` over a digest made here, or `CKM_EDDSA`) and turns the token's raw
//! signature into what X.509 carries. Roots sign through it — their own certificate and
//! each signing intermediate — so with our own root leaf issuance never waits on the token.
//! With an upstream authority there is no root of ours, and the token holds each replica's
//! signing intermediate keys instead (labelled `<key label>.intermediate`, each with an end
//! day after which [`Token::destroy_ended`] removes it): then every leaf is signed by the
//! token.
//!
//! A lost session (a network HSM restarted, a KMS session expired) is reopened and logged in
//! again once per signature before the signature is given up.

mod key;

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::SystemTime;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::Date;
use signer_core::CaKeyType;

pub use key::TokenKey;
use key::{curve_params, public_point};

pub use crate::config::{Pin, TokenConfig};

/// Why the token cannot be used. Never includes the PIN or key material.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("loading the PKCS#11 module {}: {source}", module.display())]
    Module { module: PathBuf, source: CkError },
    #[error("no token labelled {0:?} in the PKCS#11 module (tokens: {1})")]
    NoToken(String, String),
    #[error("logging in to token {0:?}: {1}")]
    Login(String, CkError),
    #[error("token {token:?}: {what}: {source}")]
    Call {
        token: String,
        what: &'static str,
        source: CkError,
    },
    #[error("token {0:?}: {1}")]
    Key(String, String),
}

/// The PKCS#11 modules this process has loaded and initialised, by path. A module is
/// initialised once per process and never finalised: two [`Token`]s of one module share it.
static MODULES: LazyLock<Mutex<HashMap<PathBuf, Pkcs11>>> = LazyLock::new(Default::default);

/// Every call this process makes into a module holds this for reading; [`Token::reload`]
/// holds it for writing, so no call is under way while a module starts over.
static CALLS: RwLock<()> = RwLock::new(());

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn module(path: &Path) -> Result<Pkcs11, TokenError> {
    let mut modules = lock(&MODULES);
    if let Some(m) = modules.get(path) {
        return Ok(m.clone());
    }
    let failed = |source| TokenError::Module {
        module: path.to_owned(),
        source,
    };
    let m = Pkcs11::new(path).map_err(failed)?;
    match m.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => return Err(failed(e)),
    }
    modules.insert(path.to_owned(), m.clone());
    Ok(m)
}

/// A logged-in session with the token that holds the root keys.
pub struct Token {
    pkcs11: Pkcs11,
    slot: Slot,
    config: TokenConfig,
    session: Mutex<Session>,
    /// Set when this process generated or destroyed a key since the module last read the
    /// token afresh (see [`Token::reload_if_written`]).
    wrote: AtomicBool,
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("module", &self.config.module)
            .field("token", &self.config.token_label)
            .field("key_label", &self.config.key_label)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "token {:?} (keys labelled {:?})",
            self.config.token_label, self.config.key_label
        )
    }
}

/// Whether `e` means the session is gone and a new one may succeed.
fn session_lost(e: &CkError) -> bool {
    matches!(
        e,
        CkError::Pkcs11(
            RvError::SessionHandleInvalid
                | RvError::SessionClosed
                | RvError::UserNotLoggedIn
                | RvError::DeviceRemoved
                | RvError::TokenNotPresent,
            _
        )
    )
}

impl Token {
    /// Loads the module, finds the token labelled `config.token_label` and logs in.
    pub fn open(config: TokenConfig) -> Result<Arc<Token>, TokenError> {
        let pkcs11 = module(&config.module)?;
        let _calls = CALLS.read().unwrap_or_else(PoisonError::into_inner);
        let slots = pkcs11
            .get_slots_with_token()
            .map_err(|source| TokenError::Call {
                token: config.token_label.clone(),
                what: "listing the slots",
                source,
            })?;
        let mut labels = Vec::new();
        let mut found = None;
        for slot in slots {
            // A slot whose token cannot be read (removed meanwhile) is not the one.
            let Ok(info) = pkcs11.get_token_info(slot) else {
                continue;
            };
            let label = info.label().trim_end().to_owned();
            if label == config.token_label {
                found = Some(slot);
                break;
            }
            labels.push(format!("{label:?}"));
        }
        let slot = found
            .ok_or_else(|| TokenError::NoToken(config.token_label.clone(), labels.join(", ")))?;
        let session = Self::login(&pkcs11, slot, &config)?;
        Ok(Arc::new(Token {
            pkcs11,
            slot,
            config,
            session: Mutex::new(session),
            wrote: AtomicBool::new(false),
        }))
    }

    fn login(pkcs11: &Pkcs11, slot: Slot, config: &TokenConfig) -> Result<Session, TokenError> {
        let session = pkcs11
            .open_rw_session(slot)
            .map_err(|e| TokenError::Login(config.token_label.clone(), e))?;
        // The login state is the application's, shared by its sessions.
        match session.login(UserType::User, Some(config.pin.secret())) {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(session),
            Err(e) => Err(TokenError::Login(config.token_label.clone(), e)),
        }
    }

    /// Runs `f` with the session; when the session turns out to be lost, opens and logs in a
    /// new one and runs `f` once more.
    fn with_session<T>(
        &self,
        what: &'static str,
        f: impl Fn(&Session) -> Result<T, CkError>,
    ) -> Result<T, TokenError> {
        let _calls = CALLS.read().unwrap_or_else(PoisonError::into_inner);
        let mut session = lock(&self.session);
        let result = match f(&session) {
            Err(e) if session_lost(&e) => {
                *session = Self::login(&self.pkcs11, self.slot, &self.config)?;
                f(&session)
            }
            other => other,
        };
        result.map_err(|source| TokenError::Call {
            token: self.config.token_label.clone(),
            what,
            source,
        })
    }

    /// Makes the module read the token afresh if this process wrote to it (generated or
    /// destroyed a key) since it last did; whether it did. A module may cache a token's
    /// objects per process: SoftHSM2's file store, when it writes its own change, takes
    /// another process's change made just before as seen and never indexes it — two replicas
    /// racing on a fresh install each write a key, and the loser would not find the winner's.
    /// `C_Finalize` and `C_Initialize` are the standard's way to start over; every session of
    /// the module closes and is reopened at its next call.
    pub fn reload_if_written(&self) -> Result<bool, TokenError> {
        if !self.wrote.swap(false, Ordering::SeqCst) {
            return Ok(false);
        }
        let _calls = CALLS.write().unwrap_or_else(PoisonError::into_inner);
        let mut session = lock(&self.session);
        let failed = |source| TokenError::Module {
            module: self.config.module.clone(),
            source,
        };
        // The library stays loaded: MODULES keeps its handle.
        self.pkcs11.clone().finalize().map_err(failed)?;
        self.pkcs11
            .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
            .map_err(failed)?;
        *session = Self::login(&self.pkcs11, self.slot, &self.config)?;
        Ok(true)
    }

    /// Generates a new root key pair of `key_type` in the token, under the key label and a
    /// fresh random `CKA_ID`: a token object, private, sensitive and never extractable.
    pub fn generate(self: &Arc<Self>, key_type: CaKeyType) -> Result<Arc<TokenKey>, TokenError> {
        self.generate_until(key_type, None)
    }

    /// [`Token::generate`], for a key of no use after `until` when given (a signing
    /// intermediate's): its `CKA_END_DATE` is that day, and its `CKA_ID` starts with it
    /// (`end:YYYYMMDD`, then the random bytes) — where [`Token::destroy_ended`] reads it, as
    /// not every module returns the date attributes it stores.
    pub fn generate_until(
        self: &Arc<Self>,
        key_type: CaKeyType,
        until: Option<SystemTime>,
    ) -> Result<Arc<TokenKey>, TokenError> {
        let mut random = vec![0u8; 16];
        aws_lc_rs::rand::fill(&mut random).map_err(|_| {
            TokenError::Key(self.config.token_label.clone(), "no randomness".into())
        })?;
        let id = match until {
            Some(until) => [END_PREFIX, &ymd(&day(until)), &random[..8]].concat(),
            None => random,
        };
        let label = self.config.key_label.as_bytes().to_vec();
        let (mechanism, ck_type) = match key_type {
            CaKeyType::Ed25519 => (Mechanism::EccEdwardsKeyPairGen, KeyType::EC_EDWARDS),
            _ => (Mechanism::EccKeyPairGen, KeyType::EC),
        };
        let mut public = vec![
            Attribute::Token(true),
            Attribute::Private(false),
            Attribute::Verify(true),
            Attribute::KeyType(ck_type),
            Attribute::EcParams(curve_params(key_type)),
            Attribute::Label(label.clone()),
            Attribute::Id(id.clone()),
        ];
        let mut private = vec![
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Sign(true),
            Attribute::KeyType(ck_type),
            Attribute::Label(label),
            Attribute::Id(id.clone()),
        ];
        if let Some(until) = until {
            public.push(Attribute::EndDate(day(until)));
            private.push(Attribute::EndDate(day(until)));
        }
        self.wrote.store(true, Ordering::SeqCst);
        self.with_session("generating a key pair", |s| {
            s.generate_key_pair(&mechanism, &public, &private)
        })?;
        let key = self.key_with_id(id)?;
        if key.key_type != key_type {
            return Err(TokenError::Key(
                self.config.token_label.clone(),
                format!(
                    "asked for a {key_type} key, the token made a {}",
                    key.key_type
                ),
            ));
        }
        Ok(key)
    }

    /// Destroys every key pair under the key label whose end day (see
    /// [`Token::generate_until`]) is before the day of `now` (keys without one are kept);
    /// returns how many.
    pub fn destroy_ended(self: &Arc<Self>, now: SystemTime) -> Result<usize, TokenError> {
        let today = ymd(&day(now));
        let ended: Vec<Vec<u8>> = self
            .ids()?
            .into_iter()
            .filter(|id| {
                id.strip_prefix(END_PREFIX)
                    .and_then(|rest| rest.get(..8))
                    .is_some_and(|end| end < &today[..])
            })
            .collect();
        for id in &ended {
            self.key_with_id(id.clone())?.destroy();
        }
        Ok(ended.len())
    }

    /// Every key pair in the token under the key label whose type we sign with.
    pub fn keys(self: &Arc<Self>) -> Result<Vec<Arc<TokenKey>>, TokenError> {
        let ids = self.ids()?;
        let mut keys = Vec::with_capacity(ids.len());
        for id in ids {
            match self.key_with_id(id) {
                Ok(key) => keys.push(key),
                // A labelled key we cannot sign with is not one of our roots' keys.
                Err(TokenError::Key(..)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(keys)
    }

    /// The `CKA_ID`s of the private keys under the key label.
    fn ids(&self) -> Result<Vec<Vec<u8>>, TokenError> {
        let template = [
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Label(self.config.key_label.as_bytes().to_vec()),
        ];
        self.with_session("finding keys by label", |s| {
            let mut ids = Vec::new();
            for handle in s.find_objects(&template)? {
                if let Some(Attribute::Id(id)) = s
                    .get_attributes(handle, &[AttributeType::Id])?
                    .into_iter()
                    .next()
                {
                    ids.push(id);
                }
            }
            Ok(ids)
        })
    }

    /// The key pair under the key label with `id`, whose public key object tells its type.
    fn key_with_id(self: &Arc<Self>, id: Vec<u8>) -> Result<Arc<TokenKey>, TokenError> {
        let template = [
            Attribute::Class(ObjectClass::PUBLIC_KEY),
            Attribute::Label(self.config.key_label.as_bytes().to_vec()),
            Attribute::Id(id.clone()),
        ];
        let attributes = self.with_session("reading a public key", |s| {
            let Some(&handle) = s.find_objects(&template)?.first() else {
                return Ok(Vec::new());
            };
            s.get_attributes(handle, &[AttributeType::EcParams, AttributeType::EcPoint])
        })?;
        let (mut params, mut point) = (None, None);
        for a in attributes {
            match a {
                Attribute::EcParams(p) => params = Some(p),
                Attribute::EcPoint(p) => point = Some(p),
                _ => {}
            }
        }
        let bad = |why: &str| TokenError::Key(self.config.token_label.clone(), why.to_owned());
        let (Some(params), Some(point)) = (params, point) else {
            return Err(bad("a labelled private key has no EC public key beside it"));
        };
        let key_type = CaKeyType::ALL
            .into_iter()
            .find(|t| curve_params(*t) == params)
            .ok_or_else(|| bad("a labelled key is on a curve we do not sign with"))?;
        Ok(Arc::new(TokenKey {
            token: self.clone(),
            id,
            key_type,
            public_key: public_point(&point, key_type)
                .ok_or_else(|| bad("a labelled key's CKA_EC_POINT is not a point"))?,
        }))
    }

    /// The private key object with `id` under the key label; `CKR_KEY_HANDLE_INVALID` when
    /// it is gone (deleted from the token meanwhile).
    fn private_key(&self, s: &Session, id: &[u8]) -> Result<ObjectHandle, CkError> {
        let template = [
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Label(self.config.key_label.as_bytes().to_vec()),
            Attribute::Id(id.to_vec()),
        ];
        s.find_objects(&template)?
            .first()
            .copied()
            .ok_or(CkError::Pkcs11(
                RvError::KeyHandleInvalid,
                cryptoki::context::Function::FindObjects,
            ))
    }
}

/// How the `CKA_ID` of a key with an end day starts (then `YYYYMMDD`).
const END_PREFIX: &[u8] = b"end:";

/// The UTC day of `t`, as PKCS#11 dates are.
fn day(t: SystemTime) -> Date {
    let text = humantime::format_rfc3339_seconds(t).to_string();
    Date::new_from_str_slice(&text[0..4], &text[5..7], &text[8..10]).unwrap_or_default()
}

/// `YYYYMMDD` of a PKCS#11 date, which orders as the days do.
fn ymd(d: &Date) -> [u8; 8] {
    let mut out = [0u8; 8];
    out[..4].copy_from_slice(&d.year);
    out[4..6].copy_from_slice(&d.month);
    out[6..].copy_from_slice(&d.day);
    out
}

#[cfg(test)]
mod tests;
