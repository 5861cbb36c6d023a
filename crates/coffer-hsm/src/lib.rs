//! PKCS#11 access for Coffer: a token found by its label (never by slot number, which changes when
//! tokens are added), AES-256 keys generated inside it as non-extractable token objects, and AES-GCM
//! run by the token with those keys. Works with any PKCS#11 module; the tests use SoftHSM2.
//!
//! A [`Token`] keeps one session open for its whole life, because PKCS#11 logs the application out
//! of a token when its last session closes, and lends further sessions from a pool to callers on
//! any thread.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, OnceLock};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use zeroize::Zeroizing;

/// GCM nonce length Coffer uses with the token.
pub const GCM_NONCE_LEN: usize = 12;
/// GCM tag length, bytes.
pub const GCM_TAG_LEN: usize = 16;
/// Most idle sessions kept in the pool; more are opened under load and closed when returned.
const MAX_IDLE_SESSIONS: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum HsmError {
    #[error(
        "cannot load the PKCS#11 module {path}: {source} (is the HSM's client library installed at this path?)"
    )]
    Module {
        path: PathBuf,
        #[source]
        source: CkError,
    },
    #[error("no PKCS#11 token labelled {label:?} in {module} (tokens present: {present})")]
    NoToken {
        label: String,
        module: PathBuf,
        present: String,
    },
    #[error("the token {label:?} refused the PIN; check the PIN file or environment variable")]
    PinIncorrect { label: String },
    #[error("the token {label:?} has locked its user PIN; unlock it with the token's SO tools")]
    PinLocked { label: String },
    #[error("no key labelled {key:?} in token {token:?}")]
    NoKey { token: String, key: String },
    #[error("the token {token:?} already holds a key labelled {key:?}")]
    KeyExists { token: String, key: String },
    #[error("the token did not authenticate the data (wrong key, or the data was changed)")]
    Decrypt,
    #[error("PKCS#11 {what} failed: {source}")]
    Call {
        what: &'static str,
        #[source]
        source: CkError,
    },
}

impl HsmError {
    fn call(what: &'static str) -> impl FnOnce(CkError) -> HsmError {
        move |source| HsmError::Call { what, source }
    }
}

/// Loads a module once per process: PKCS#11 allows one `C_Initialize` per module and process, and
/// the root of trust and custom key stores may share a module.
fn module(path: &Path) -> Result<Pkcs11, HsmError> {
    static MODULES: OnceLock<Mutex<HashMap<PathBuf, Pkcs11>>> = OnceLock::new();
    let mut loaded = MODULES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(m) = loaded.get(path) {
        return Ok(m.clone());
    }
    let err = |source| HsmError::Module {
        path: path.to_owned(),
        source,
    };
    let ctx = Pkcs11::new(path).map_err(err)?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => return Err(err(e)),
    }
    loaded.insert(path.to_owned(), ctx.clone());
    Ok(ctx)
}

/// A logged-in PKCS#11 token.
pub struct Token {
    ctx: Pkcs11,
    slot: Slot,
    label: String,
    module: PathBuf,
    /// Held open so the login lasts.
    _login: Mutex<Session>,
    idle: Mutex<Vec<Session>>,
    handles: Mutex<HashMap<String, ObjectHandle>>,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("label", &self.label)
            .field("module", &self.module)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Token {
    /// Opens the token labelled `label` in the module at `module_path` and logs in as its user.
    pub fn open(module_path: &Path, label: &str, pin: &str) -> Result<Self, HsmError> {
        let ctx = module(module_path)?;
        let slots = ctx
            .get_slots_with_token()
            .map_err(HsmError::call("C_GetSlotList"))?;
        let mut present = Vec::new();
        let mut found = None;
        for slot in slots {
            let info = ctx
                .get_token_info(slot)
                .map_err(HsmError::call("C_GetTokenInfo"))?;
            let l = info.label().trim_end().to_owned();
            if l == label && found.is_none() {
                found = Some(slot);
            }
            present.push(format!("{l:?}"));
        }
        let slot = found.ok_or_else(|| HsmError::NoToken {
            label: label.to_owned(),
            module: module_path.to_owned(),
            present: if present.is_empty() {
                "none".to_owned()
            } else {
                present.join(", ")
            },
        })?;
        let session = ctx
            .open_rw_session(slot)
            .map_err(HsmError::call("C_OpenSession"))?;
        let pin = AuthPin::from(pin.to_owned());
        match session.login(UserType::User, Some(&pin)) {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
            Err(CkError::Pkcs11(RvError::PinIncorrect, _)) => {
                return Err(HsmError::PinIncorrect {
                    label: label.to_owned(),
                });
            }
            Err(CkError::Pkcs11(RvError::PinLocked, _)) => {
                return Err(HsmError::PinLocked {
                    label: label.to_owned(),
                });
            }
            Err(e) => return Err(HsmError::call("C_Login")(e)),
        }
        Ok(Self {
            ctx,
            slot,
            label: label.to_owned(),
            module: module_path.to_owned(),
            _login: Mutex::new(session),
            idle: Mutex::new(Vec::new()),
            handles: Mutex::new(HashMap::new()),
        })
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    pub fn module(&self) -> &Path {
        &self.module
    }

    /// Runs `f` with a session of this token's pool.
    fn with_session<T>(
        &self,
        f: impl FnOnce(&Session) -> Result<T, HsmError>,
    ) -> Result<T, HsmError> {
        let session = match lock(&self.idle).pop() {
            Some(s) => s,
            None => self
                .ctx
                .open_rw_session(self.slot)
                .map_err(HsmError::call("C_OpenSession"))?,
        };
        let out = f(&session);
        let mut idle = lock(&self.idle);
        if idle.len() < MAX_IDLE_SESSIONS {
            idle.push(session);
        }
        out
    }

    fn find(&self, session: &Session, key_label: &str) -> Result<Option<ObjectHandle>, HsmError> {
        let found = session
            .find_objects(&[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::Label(key_label.as_bytes().to_vec()),
            ])
            .map_err(HsmError::call("C_FindObjects"))?;
        Ok(found.first().copied())
    }

    /// The handle of the key labelled `key_label`, found once and remembered.
    fn handle(&self, session: &Session, key_label: &str) -> Result<ObjectHandle, HsmError> {
        if let Some(h) = lock(&self.handles).get(key_label) {
            return Ok(*h);
        }
        let h = self
            .find(session, key_label)?
            .ok_or_else(|| HsmError::NoKey {
                token: self.label.clone(),
                key: key_label.to_owned(),
            })?;
        lock(&self.handles).insert(key_label.to_owned(), h);
        Ok(h)
    }

    /// Whether the token holds a secret key labelled `key_label`.
    pub fn has_key(&self, key_label: &str) -> Result<bool, HsmError> {
        self.with_session(|s| Ok(self.find(s, key_label)?.is_some()))
    }

    /// Generates an AES-256 key inside the token: a token object, sensitive and never extractable,
    /// usable only to encrypt and decrypt.
    pub fn generate_aes256(&self, key_label: &str) -> Result<(), HsmError> {
        self.with_session(|s| {
            if self.find(s, key_label)?.is_some() {
                return Err(HsmError::KeyExists {
                    token: self.label.clone(),
                    key: key_label.to_owned(),
                });
            }
            let h = s
                .generate_key(
                    &Mechanism::AesKeyGen,
                    &[
                        Attribute::Class(ObjectClass::SECRET_KEY),
                        Attribute::KeyType(KeyType::AES),
                        Attribute::ValueLen(32.into()),
                        Attribute::Token(true),
                        Attribute::Private(true),
                        Attribute::Sensitive(true),
                        Attribute::Extractable(false),
                        Attribute::Encrypt(true),
                        Attribute::Decrypt(true),
                        Attribute::Wrap(false),
                        Attribute::Unwrap(false),
                        Attribute::Label(key_label.as_bytes().to_vec()),
                    ],
                )
                .map_err(HsmError::call("C_GenerateKey"))?;
            lock(&self.handles).insert(key_label.to_owned(), h);
            Ok(())
        })
    }

    /// Destroys the key labelled `key_label`; `false` when there was none.
    pub fn destroy_key(&self, key_label: &str) -> Result<bool, HsmError> {
        self.with_session(|s| {
            lock(&self.handles).remove(key_label);
            match self.find(s, key_label)? {
                Some(h) => {
                    s.destroy_object(h)
                        .map_err(HsmError::call("C_DestroyObject"))?;
                    Ok(true)
                }
                None => Ok(false),
            }
        })
    }

    /// Whether the key is sensitive and non-extractable, as the token reports it.
    pub fn key_is_protected(&self, key_label: &str) -> Result<bool, HsmError> {
        self.with_session(|s| {
            let h = self.handle(s, key_label)?;
            let attrs = s
                .get_attributes(
                    h,
                    &[
                        AttributeType::Sensitive,
                        AttributeType::Extractable,
                        AttributeType::NeverExtractable,
                    ],
                )
                .map_err(HsmError::call("C_GetAttributeValue"))?;
            let mut ok = attrs.len() == 3;
            for a in attrs {
                ok &= match a {
                    Attribute::Sensitive(v) | Attribute::NeverExtractable(v) => v,
                    Attribute::Extractable(v) => !v,
                    _ => false,
                };
            }
            Ok(ok)
        })
    }

    /// `n` random bytes from the token's generator.
    pub fn random(&self, n: usize) -> Result<Zeroizing<Vec<u8>>, HsmError> {
        self.with_session(|s| {
            let mut out = Zeroizing::new(vec![0u8; n]);
            s.generate_random_slice(&mut out)
                .map_err(HsmError::call("C_GenerateRandom"))?;
            Ok(out)
        })
    }

    /// AES-256-GCM encryption by the token with the key labelled `key_label`: ciphertext then the
    /// 16-byte tag.
    pub fn gcm_seal(
        &self,
        key_label: &str,
        nonce: &[u8; GCM_NONCE_LEN],
        aad: &[u8],
        plaintext: &[u8],
    ) -> Result<Vec<u8>, HsmError> {
        self.with_session(|s| {
            let h = self.handle(s, key_label)?;
            let mut iv = *nonce;
            let params = GcmParams::new(&mut iv, aad, ((GCM_TAG_LEN * 8) as u64).into())
                .map_err(HsmError::call("GCM parameters"))?;
            s.encrypt(&Mechanism::AesGcm(params), h, plaintext)
                .map_err(HsmError::call("C_Encrypt"))
        })
    }

    /// AES-256-GCM decryption by the token; `sealed` is ciphertext then tag.
    pub fn gcm_open(
        &self,
        key_label: &str,
        nonce: &[u8; GCM_NONCE_LEN],
        aad: &[u8],
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, HsmError> {
        if sealed.len() < GCM_TAG_LEN {
            return Err(HsmError::Decrypt);
        }
        self.with_session(|s| {
            let h = self.handle(s, key_label)?;
            let mut iv = *nonce;
            let params = GcmParams::new(&mut iv, aad, ((GCM_TAG_LEN * 8) as u64).into())
                .map_err(HsmError::call("GCM parameters"))?;
            match s.decrypt(&Mechanism::AesGcm(params), h, sealed) {
                Ok(p) => Ok(Zeroizing::new(p)),
                // A tag that does not verify: CKR_ENCRYPTED_DATA_INVALID by the standard; SoftHSM2
                // reports CKR_GENERAL_ERROR (or CKR_FUNCTION_FAILED) for it.
                Err(CkError::Pkcs11(
                    RvError::EncryptedDataInvalid
                    | RvError::EncryptedDataLenRange
                    | RvError::GeneralError
                    | RvError::FunctionFailed,
                    _,
                )) => Err(HsmError::Decrypt),
                Err(e) => Err(HsmError::call("C_Decrypt")(e)),
            }
        })
    }
}
