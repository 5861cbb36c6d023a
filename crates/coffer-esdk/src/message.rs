//! Encryption and decryption of whole messages, streaming: a framed body is written and read one
//! frame at a time, so memory stays at two frames whatever the size.

use std::io::{Read, Write};

use base64::Engine as _;
use coffer_crypto::SecretBytes;
use coffer_crypto::esdk::{self, Gcm, Hasher, IV_LEN, SigningKey, TAG_LEN};

use crate::context::{self, Context, PUBLIC_KEY};
use crate::error::Error;
use crate::header::{ContentType, EncryptedDataKey, Header, read_exact};
use crate::keyring::{DecryptionMaterials, EncryptionMaterials, Keyring};
use crate::suite::Suite;

/// Which suites may be written and read, as the format's specification defines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CommitmentPolicy {
    /// Write only non-committing suites (format version 1); read anything.
    ForbidEncryptAllowDecrypt,
    /// Write only committing suites; read anything (for migrating old messages).
    RequireEncryptAllowDecrypt,
    /// Write and read only committing suites.
    #[default]
    RequireEncryptRequireDecrypt,
}

impl CommitmentPolicy {
    pub fn name(self) -> &'static str {
        match self {
            CommitmentPolicy::ForbidEncryptAllowDecrypt => "FORBID_ENCRYPT_ALLOW_DECRYPT",
            CommitmentPolicy::RequireEncryptAllowDecrypt => "REQUIRE_ENCRYPT_ALLOW_DECRYPT",
            CommitmentPolicy::RequireEncryptRequireDecrypt => "REQUIRE_ENCRYPT_REQUIRE_DECRYPT",
        }
    }

    /// By its specification name, case and `-`/`_` insensitive.
    pub fn parse(s: &str) -> Option<Self> {
        let n = s.trim().to_ascii_uppercase().replace('-', "_");
        [
            CommitmentPolicy::ForbidEncryptAllowDecrypt,
            CommitmentPolicy::RequireEncryptAllowDecrypt,
            CommitmentPolicy::RequireEncryptRequireDecrypt,
        ]
        .into_iter()
        .find(|p| p.name() == n)
    }
}

/// The default frame length, as the AWS Encryption SDKs have it.
pub const DEFAULT_FRAME_LENGTH: u32 = 4096;
/// The largest non-framed body the format allows (2^36 - 32 bytes).
pub const MAX_NON_FRAMED: u64 = (1 << 36) - 32;

#[derive(Debug, Clone)]
pub struct EncryptOptions {
    pub suite: Suite,
    /// Plaintext bytes per frame; 0 writes a non-framed body (held in memory whole).
    pub frame_length: u32,
    /// The caller's encryption context (no `aws-crypto-` keys).
    pub context: Context,
    pub commitment_policy: CommitmentPolicy,
    pub max_encrypted_data_keys: Option<usize>,
}

impl Default for EncryptOptions {
    fn default() -> Self {
        Self {
            suite: Suite::Aes256GcmHkdfSha512CommitEcdsaP384,
            frame_length: DEFAULT_FRAME_LENGTH,
            context: Context::new(),
            commitment_policy: CommitmentPolicy::default(),
            max_encrypted_data_keys: None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct DecryptOptions {
    pub commitment_policy: CommitmentPolicy,
    pub max_encrypted_data_keys: Option<usize>,
    /// The largest frame (or non-framed body) held in memory to authenticate it.
    pub max_frame_bytes: u64,
    /// Pairs the message's encryption context must contain, value for value.
    pub required_context: Context,
    /// Keys the message's encryption context must contain, with any value.
    pub required_keys: Vec<String>,
}

impl Default for DecryptOptions {
    fn default() -> Self {
        Self {
            commitment_policy: CommitmentPolicy::default(),
            max_encrypted_data_keys: None,
            max_frame_bytes: 256 << 20,
            required_context: Context::new(),
            required_keys: Vec::new(),
        }
    }
}

/// What a message says about itself, for callers' metadata output.
#[derive(Debug, Clone)]
pub struct MessageInfo {
    pub suite: Suite,
    pub message_id: Vec<u8>,
    /// The full context, `aws-crypto-public-key` included.
    pub context: Context,
    pub encrypted_data_keys: Vec<EncryptedDataKey>,
    /// 0 for a non-framed body.
    pub frame_length: u32,
    pub plaintext_len: u64,
    pub message_len: u64,
}

impl MessageInfo {
    fn new(h: &Header) -> Self {
        Self {
            suite: h.suite,
            message_id: h.message_id.clone(),
            context: h.context.clone(),
            encrypted_data_keys: h.encrypted_data_keys.clone(),
            frame_length: h.frame_length,
            plaintext_len: 0,
            message_len: 0,
        }
    }
}

struct Keys {
    gcm: Gcm,
    commitment: Option<[u8; 32]>,
}

fn derive(suite: Suite, data_key: &[u8], message_id: &[u8]) -> Result<Keys, Error> {
    if data_key.len() != suite.key_len() {
        return Err(Error::Keyring(format!(
            "the data key is {} bytes, the suite needs {}",
            data_key.len(),
            suite.key_len()
        )));
    }
    let id = suite.id().to_be_bytes();
    Ok(match suite.kdf() {
        None => Keys {
            gcm: Gcm::new(data_key)?,
            commitment: None,
        },
        Some(h) if suite.is_committing() => {
            let k = esdk::hkdf(
                h,
                message_id,
                data_key,
                &[&id, b"DERIVEKEY"],
                suite.key_len(),
            )?;
            let c = esdk::hkdf(h, message_id, data_key, &[b"COMMITKEY"], 32)?;
            let mut commitment = [0u8; 32];
            commitment.copy_from_slice(c.expose());
            Keys {
                gcm: Gcm::new(k.expose())?,
                commitment: Some(commitment),
            }
        }
        Some(h) => {
            let k = esdk::hkdf(h, &[], data_key, &[&id, message_id], suite.key_len())?;
            Keys {
                gcm: Gcm::new(k.expose())?,
                commitment: None,
            }
        }
    })
}

fn frame_iv(sequence: u32) -> [u8; IV_LEN] {
    let mut iv = [0u8; IV_LEN];
    iv[8..].copy_from_slice(&sequence.to_be_bytes());
    iv
}

const SINGLE_BLOCK: &[u8] = b"AWSKMSEncryptionClient Single Block";
const FRAME: &[u8] = b"AWSKMSEncryptionClient Frame";
const FINAL_FRAME: &[u8] = b"AWSKMSEncryptionClient Final Frame";
const SEQUENCE_END: u32 = 0xFFFF_FFFF;

/// Sets `aad` to the body AAD of one frame (or of the non-framed body), reusing its allocation.
fn body_aad(aad: &mut Vec<u8>, message_id: &[u8], kind: &[u8], sequence: u32, len: u64) {
    aad.clear();
    aad.extend_from_slice(message_id);
    aad.extend_from_slice(kind);
    aad.extend_from_slice(&sequence.to_be_bytes());
    aad.extend_from_slice(&len.to_be_bytes());
}

/// The output side of encryption: counts and (for signed suites) hashes what it writes.
struct Out<'a> {
    w: &'a mut dyn Write,
    hasher: Option<Hasher>,
    written: u64,
}

impl Out<'_> {
    fn put(&mut self, b: &[u8]) -> Result<(), Error> {
        self.w.write_all(b)?;
        if let Some(h) = &mut self.hasher {
            h.update(b);
        }
        self.written += b.len() as u64;
        Ok(())
    }
}

/// Reads until `buf` is full or the input ends; returns how much it read.
fn fill(r: &mut dyn Read, buf: &mut [u8]) -> Result<usize, Error> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(n)
}

/// Encrypts everything `input` holds into one message written to `output`.
pub fn encrypt(
    keyring: &dyn Keyring,
    opts: &EncryptOptions,
    input: &mut dyn Read,
    output: &mut dyn Write,
) -> Result<MessageInfo, Error> {
    let suite = opts.suite;
    match (opts.commitment_policy, suite.is_committing()) {
        (CommitmentPolicy::ForbidEncryptAllowDecrypt, true) => {
            return Err(Error::CommitmentPolicy(format!(
                "the commitment policy FORBID_ENCRYPT_ALLOW_DECRYPT cannot write the committing suite {suite}"
            )));
        }
        (
            CommitmentPolicy::RequireEncryptAllowDecrypt
            | CommitmentPolicy::RequireEncryptRequireDecrypt,
            false,
        ) => {
            return Err(Error::CommitmentPolicy(format!(
                "the commitment policy {} writes only committing suites (0x0478, 0x0578); {suite} does not commit to its key",
                opts.commitment_policy.name()
            )));
        }
        _ => {}
    }
    context::check_caller_context(&opts.context)?;
    let mut ctx = opts.context.clone();
    let signer = suite.signature().map(SigningKey::generate).transpose()?;
    if let Some(s) = &signer {
        ctx.insert(
            PUBLIC_KEY.into(),
            base64::engine::general_purpose::STANDARD.encode(s.public_compressed()?),
        );
    }
    let mut m = EncryptionMaterials {
        suite,
        context: ctx,
        data_key: None,
        encrypted_data_keys: Vec::new(),
    };
    keyring.on_encrypt(&mut m)?;
    let Some(data_key) = m.data_key.take() else {
        return Err(Error::Keyring(format!(
            "{} produced no data key",
            keyring.describe()
        )));
    };
    if m.encrypted_data_keys.is_empty() {
        return Err(Error::Keyring(format!(
            "{} wrapped no data key",
            keyring.describe()
        )));
    }
    if let Some(max) = opts.max_encrypted_data_keys
        && m.encrypted_data_keys.len() > max
    {
        return Err(Error::TooManyEncryptedDataKeys {
            found: m.encrypted_data_keys.len(),
            max,
        });
    }
    let mut message_id = vec![0u8; suite.message_id_len()];
    coffer_crypto::fill_random(&mut message_id)?;
    let keys = derive(suite, data_key.expose(), &message_id)?;
    drop(data_key);
    let header = Header {
        suite,
        message_id,
        context: m.context,
        encrypted_data_keys: m.encrypted_data_keys,
        content_type: if opts.frame_length == 0 {
            ContentType::NonFramed
        } else {
            ContentType::Framed
        },
        frame_length: opts.frame_length,
        commitment: keys.commitment,
    };
    let body = header.body_bytes()?;
    let header_iv = [0u8; IV_LEN];
    let tag = keys.gcm.seal(&header_iv, &body, &mut [])?;
    let mut out = Out {
        w: output,
        hasher: suite.signature().map(Hasher::new),
        written: 0,
    };
    out.put(&body)?;
    if suite.message_version() == 1 {
        out.put(&header_iv)?;
    }
    out.put(&tag)?;
    let mut info = MessageInfo::new(&header);
    let id = &header.message_id;

    if opts.frame_length == 0 {
        let mut plain = SecretBytes::new(Vec::new());
        let mut chunk = SecretBytes::zeroed(64 * 1024);
        loop {
            let n = fill(input, chunk.expose_mut())?;
            plain.extend_from_slice(&chunk.expose()[..n]);
            if plain.len() as u64 > MAX_NON_FRAMED {
                return Err(Error::Options(
                    "a non-framed message holds at most 64 GiB; use frames".into(),
                ));
            }
            if n < chunk.len() {
                break;
            }
        }
        let len = plain.len() as u64;
        let iv = frame_iv(1);
        let mut aad = Vec::new();
        body_aad(&mut aad, id, SINGLE_BLOCK, 1, len);
        let tag = keys.gcm.seal(&iv, &aad, plain.expose_mut())?;
        out.put(&iv)?;
        out.put(&len.to_be_bytes())?;
        out.put(plain.expose())?;
        out.put(&tag)?;
        info.plaintext_len = len;
    } else {
        // One buffer laid out as the frame is written: room for the final frame's 24-byte
        // head, the content, the tag. Plaintext is read straight into place and sealed there,
        // and the frame leaves in one write. One byte of look-ahead tells a full frame that is
        // the last (written as the final frame, as the specification prefers) from one that is
        // followed by more.
        const HEAD: usize = 4 + 4 + IV_LEN + 4;
        let fl = opts.frame_length as usize;
        let mut frame = SecretBytes::zeroed(HEAD + fl + TAG_LEN);
        let mut aad = Vec::with_capacity(id.len() + FINAL_FRAME.len() + 12);
        let mut carried: Option<u8> = None;
        let mut sequence: u32 = 1;
        loop {
            let buf = frame.expose_mut();
            let mut len = 0;
            if let Some(b) = carried.take() {
                buf[HEAD] = b;
                len = 1;
            }
            len += fill(input, &mut buf[HEAD + len..HEAD + fl])?;
            let mut last = len < fl;
            if !last {
                let mut one = [0u8; 1];
                if fill(input, &mut one)? == 1 {
                    carried = Some(one[0]);
                } else {
                    last = true;
                }
            }
            let iv = frame_iv(sequence);
            let kind = if last { FINAL_FRAME } else { FRAME };
            body_aad(&mut aad, id, kind, sequence, len as u64);
            let tag = keys.gcm.seal(&iv, &aad, &mut buf[HEAD..HEAD + len])?;
            buf[HEAD + len..HEAD + len + TAG_LEN].copy_from_slice(&tag);
            let start = if last {
                buf[0..4].copy_from_slice(&SEQUENCE_END.to_be_bytes());
                buf[4..8].copy_from_slice(&sequence.to_be_bytes());
                buf[8..8 + IV_LEN].copy_from_slice(&iv);
                buf[8 + IV_LEN..HEAD].copy_from_slice(&(len as u32).to_be_bytes());
                0
            } else {
                buf[8..12].copy_from_slice(&sequence.to_be_bytes());
                buf[12..HEAD].copy_from_slice(&iv);
                8
            };
            out.put(&buf[start..HEAD + len + TAG_LEN])?;
            info.plaintext_len += len as u64;
            if last {
                break;
            }
            sequence = sequence
                .checked_add(1)
                .filter(|s| *s != SEQUENCE_END)
                .ok_or_else(|| {
                    Error::Options("more than 2^32 - 2 frames; use a larger frame length".into())
                })?;
        }
    }
    if let Some(s) = signer {
        let Some(h) = out.hasher.take() else {
            return Err(Error::Options("signed suite without a hasher".into()));
        };
        let sig = s.sign(h)?;
        out.put(&(sig.len() as u16).to_be_bytes())?;
        out.put(&sig)?;
    }
    out.w.flush()?;
    info.message_len = out.written;
    Ok(info)
}

/// The input side of decryption: counts and (until the footer) hashes what it reads.
struct In<'a> {
    r: &'a mut dyn Read,
    hasher: Option<Hasher>,
    read: u64,
}

impl In<'_> {
    fn exact(&mut self, buf: &mut [u8]) -> Result<(), Error> {
        read_exact(self.r, buf)?;
        if let Some(h) = &mut self.hasher {
            h.update(buf);
        }
        self.read += buf.len() as u64;
        Ok(())
    }

    fn u32(&mut self) -> Result<u32, Error> {
        let mut b = [0u8; 4];
        self.exact(&mut b)?;
        Ok(u32::from_be_bytes(b))
    }

    fn iv(&mut self) -> Result<[u8; IV_LEN], Error> {
        let mut b = [0u8; IV_LEN];
        self.exact(&mut b)?;
        Ok(b)
    }
}

fn describe_edks(edks: &[EncryptedDataKey]) -> String {
    edks.iter()
        .map(|e| {
            let name = if e.provider_id == crate::kms::PROVIDER_ID {
                &e.provider_info[..]
            } else {
                crate::keyring::raw_key_name(&e.provider_info)
            };
            format!("{} {}", e.provider_id, String::from_utf8_lossy(name))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Decrypts one message from `input`, writing plaintext to `output` frame by frame as each
/// authenticates. For signed suites the signature is checked only at the end: on any error the
/// caller must discard what was written (see [`decrypt_to_vec`] and the CLI, which release
/// nothing before the whole message has verified).
pub fn decrypt(
    keyring: &dyn Keyring,
    opts: &DecryptOptions,
    input: &mut dyn Read,
    output: &mut dyn Write,
) -> Result<MessageInfo, Error> {
    let (header, body, auth) = Header::read(input, opts.max_encrypted_data_keys)?;
    let suite = header.suite;
    if opts.commitment_policy == CommitmentPolicy::RequireEncryptRequireDecrypt
        && !suite.is_committing()
    {
        return Err(Error::CommitmentPolicy(format!(
            "the message uses {suite}, which does not commit to its key, and the commitment policy REQUIRE_ENCRYPT_REQUIRE_DECRYPT refuses it (allow it with the policy REQUIRE_ENCRYPT_ALLOW_DECRYPT if the message is trusted)"
        )));
    }
    let public_key = match (suite.signature(), header.context.get(PUBLIC_KEY)) {
        (Some(_), Some(k)) => Some(
            base64::engine::general_purpose::STANDARD
                .decode(k)
                .map_err(|_| Error::Context(format!("'{PUBLIC_KEY}' is not base64")))?,
        ),
        (Some(_), None) => {
            return Err(Error::Context(format!(
                "the signed suite {suite} needs '{PUBLIC_KEY}' in the encryption context"
            )));
        }
        (None, Some(_)) => {
            return Err(Error::Context(format!(
                "'{PUBLIC_KEY}' in the encryption context of an unsigned suite"
            )));
        }
        (None, None) => None,
    };
    for (k, v) in &opts.required_context {
        match header.context.get(k) {
            Some(got) if coffer_crypto::ct_eq(got.as_bytes(), v.as_bytes()) => {}
            Some(_) => {
                return Err(Error::Context(format!(
                    "the message's value for '{k}' is not the one required"
                )));
            }
            None => {
                return Err(Error::Context(format!("the message has no '{k}'")));
            }
        }
    }
    if let Some(k) = opts
        .required_keys
        .iter()
        .find(|k| !header.context.contains_key(*k))
    {
        return Err(Error::Context(format!("the message has no '{k}'")));
    }
    let mut m = DecryptionMaterials {
        suite,
        context: header.context.clone(),
        data_key: None,
    };
    match keyring.on_decrypt(&mut m, &header.encrypted_data_keys) {
        Ok(()) => {}
        Err(Error::NoDataKey(why)) => {
            return Err(Error::NoDataKey(format!(
                "{why} (the message's data keys: {})",
                describe_edks(&header.encrypted_data_keys)
            )));
        }
        Err(e) => return Err(e),
    }
    let Some(data_key) = m.data_key.take() else {
        return Err(Error::NoDataKey(format!(
            "{} unwrapped nothing (the message's data keys: {})",
            keyring.describe(),
            describe_edks(&header.encrypted_data_keys)
        )));
    };
    let keys = derive(suite, data_key.expose(), &header.message_id)?;
    drop(data_key);
    if let (Some(want), Some(got)) = (header.commitment, keys.commitment)
        && !coffer_crypto::ct_eq(&want, &got)
    {
        return Err(Error::CommitmentMismatch);
    }
    let header_iv = if suite.message_version() == 1 {
        auth.iv
    } else {
        [0u8; IV_LEN]
    };
    let mut tag = auth.tag;
    keys.gcm
        .open(&header_iv, &body, &mut tag)
        .map_err(|_| Error::HeaderAuthentication)?;

    let mut hasher = suite.signature().map(Hasher::new);
    let header_len = body.len() as u64 + if suite.message_version() == 1 { 12 } else { 0 } + 16;
    if let Some(h) = &mut hasher {
        h.update(&body);
        if suite.message_version() == 1 {
            h.update(&auth.iv);
        }
        h.update(&auth.tag);
    }
    let mut inp = In {
        r: input,
        hasher,
        read: header_len,
    };
    let mut info = MessageInfo::new(&header);
    let id = &header.message_id;
    match header.content_type {
        ContentType::NonFramed => {
            let iv = inp.iv()?;
            let mut lb = [0u8; 8];
            inp.exact(&mut lb)?;
            let len = u64::from_be_bytes(lb);
            if len > MAX_NON_FRAMED {
                return Err(crate::error::malformed(
                    "a non-framed body longer than 64 GiB",
                ));
            }
            if len > opts.max_frame_bytes {
                return Err(Error::FrameTooLarge {
                    len,
                    max: opts.max_frame_bytes,
                });
            }
            let mut buf = SecretBytes::zeroed(len as usize + TAG_LEN);
            inp.exact(buf.expose_mut())?;
            let mut aad = Vec::new();
            body_aad(&mut aad, id, SINGLE_BLOCK, 1, len);
            keys.gcm
                .open(&iv, &aad, buf.expose_mut())
                .map_err(|_| Error::BodyAuthentication(1))?;
            output.write_all(&buf.expose()[..len as usize])?;
            info.plaintext_len = len;
        }
        ContentType::Framed => {
            let fl = header.frame_length as u64;
            if fl > opts.max_frame_bytes {
                return Err(Error::FrameTooLarge {
                    len: fl,
                    max: opts.max_frame_bytes,
                });
            }
            // A regular frame's IV, content and tag are read in one piece and opened in place.
            let mut buf = SecretBytes::zeroed(IV_LEN + fl as usize + TAG_LEN);
            let mut aad = Vec::with_capacity(id.len() + FINAL_FRAME.len() + 12);
            let mut expected: u32 = 1;
            loop {
                let first = inp.u32()?;
                let final_frame = first == SEQUENCE_END;
                let sequence = if final_frame { inp.u32()? } else { first };
                if sequence != expected {
                    return Err(crate::error::malformed(format!(
                        "frame {sequence} where frame {expected} was expected (frames missing or reordered)"
                    )));
                }
                let len = if final_frame {
                    let iv = inp.iv()?;
                    buf.expose_mut()[..IV_LEN].copy_from_slice(&iv);
                    let l = inp.u32()? as u64;
                    if l > fl {
                        return Err(crate::error::malformed(format!(
                            "the final frame holds {l} bytes, more than the frame length {fl}"
                        )));
                    }
                    inp.exact(&mut buf.expose_mut()[IV_LEN..IV_LEN + l as usize + TAG_LEN])?;
                    l
                } else {
                    inp.exact(buf.expose_mut())?;
                    fl
                };
                let n = len as usize;
                let b = buf.expose_mut();
                let mut iv = [0u8; IV_LEN];
                iv.copy_from_slice(&b[..IV_LEN]);
                let kind = if final_frame { FINAL_FRAME } else { FRAME };
                body_aad(&mut aad, id, kind, sequence, len);
                let content = &mut b[IV_LEN..IV_LEN + n + TAG_LEN];
                keys.gcm
                    .open(&iv, &aad, content)
                    .map_err(|_| Error::BodyAuthentication(sequence))?;
                output.write_all(&content[..n])?;
                info.plaintext_len += len;
                if final_frame {
                    break;
                }
                expected = expected
                    .checked_add(1)
                    .filter(|s| *s != SEQUENCE_END)
                    .ok_or_else(|| crate::error::malformed("more frames than the format allows"))?;
            }
        }
    }
    if let Some(curve) = suite.signature() {
        let Some(h) = inp.hasher.take() else {
            return Err(Error::Signature);
        };
        let mut lb = [0u8; 2];
        inp.exact(&mut lb)?;
        let mut sig = vec![0u8; u16::from_be_bytes(lb) as usize];
        inp.exact(&mut sig)?;
        let public = public_key.unwrap_or_default();
        if !esdk::verify(curve, &public, h, &sig) {
            return Err(Error::Signature);
        }
    }
    let mut one = [0u8; 1];
    loop {
        match inp.r.read(&mut one) {
            Ok(0) => break,
            Ok(_) => return Err(Error::TrailingBytes),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    output.flush()?;
    info.message_len = inp.read;
    Ok(info)
}

/// Decrypts a message held in memory and returns the plaintext only once the whole message,
/// signature included, has verified.
pub fn decrypt_to_vec(
    keyring: &dyn Keyring,
    opts: &DecryptOptions,
    message: &[u8],
) -> Result<(SecretBytes, MessageInfo), Error> {
    let mut out = Vec::with_capacity(message.len());
    let mut r = message;
    match decrypt(keyring, opts, &mut r, &mut out) {
        Ok(info) => Ok((SecretBytes::new(out), info)),
        Err(e) => {
            // Unverified plaintext: wiped, never returned.
            drop(SecretBytes::new(out));
            Err(e)
        }
    }
}

/// Encrypts `plaintext` held in memory.
pub fn encrypt_to_vec(
    keyring: &dyn Keyring,
    opts: &EncryptOptions,
    plaintext: &[u8],
) -> Result<(Vec<u8>, MessageInfo), Error> {
    let mut out = Vec::with_capacity(plaintext.len() + 1024);
    let mut r = plaintext;
    let info = encrypt(keyring, opts, &mut r, &mut out)?;
    Ok((out, info))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keyring::{MultiKeyring, RawAesKeyring};

    fn aes(name: &str, byte: u8) -> RawAesKeyring {
        RawAesKeyring::new("ns", name, &[byte; 32]).expect("keyring")
    }

    fn any_policy() -> DecryptOptions {
        DecryptOptions {
            commitment_policy: CommitmentPolicy::RequireEncryptAllowDecrypt,
            ..Default::default()
        }
    }

    fn opts(suite: Suite, frame_length: u32) -> EncryptOptions {
        let mut context = Context::new();
        context.insert("purpose".into(), "test".into());
        EncryptOptions {
            suite,
            frame_length,
            context,
            commitment_policy: if suite.is_committing() {
                CommitmentPolicy::RequireEncryptRequireDecrypt
            } else {
                CommitmentPolicy::ForbidEncryptAllowDecrypt
            },
            max_encrypted_data_keys: None,
        }
    }

    #[test]
    fn every_suite_and_framing_round_trips() {
        let k = aes("k", 1);
        for suite in Suite::ALL {
            for (fl, len) in [
                (0, 0),
                (0, 1000),
                (1, 3),
                (16, 0),
                (16, 16),
                (16, 33),
                (4096, 10_000),
            ] {
                let plain: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
                let (msg, info) = encrypt_to_vec(&k, &opts(suite, fl), &plain).expect("encrypt");
                assert_eq!(info.message_len, msg.len() as u64);
                let (out, dinfo) = decrypt_to_vec(&k, &any_policy(), &msg).expect("decrypt");
                assert_eq!(out.expose(), &plain[..], "{suite} fl={fl} len={len}");
                assert_eq!(dinfo.plaintext_len, len as u64);
                assert_eq!(
                    dinfo.context.get("purpose").map(String::as_str),
                    Some("test")
                );
                assert_eq!(
                    dinfo.context.contains_key(PUBLIC_KEY),
                    suite.signature().is_some()
                );
            }
        }
    }

    #[test]
    fn every_bit_flip_is_caught() {
        let k = aes("k", 1);
        for suite in [
            Suite::Aes256GcmHkdfSha512CommitEcdsaP384,
            Suite::Aes256GcmHkdfSha512Commit,
            Suite::Aes128GcmIv12Tag16,
        ] {
            let (msg, _) =
                encrypt_to_vec(&k, &opts(suite, 8), b"twenty bytes of data").expect("enc");
            for i in 0..msg.len() {
                for bit in [0x01u8, 0x80] {
                    let mut bad = msg.clone();
                    bad[i] ^= bit;
                    assert!(
                        decrypt_to_vec(&k, &any_policy(), &bad).is_err(),
                        "{suite}: flip of byte {i} bit {bit:#x} went unnoticed"
                    );
                }
            }
        }
    }

    #[test]
    fn truncation_and_trailing_bytes() {
        let k = aes("k", 1);
        let (msg, _) = encrypt_to_vec(
            &k,
            &opts(Suite::Aes256GcmHkdfSha512Commit, 4),
            b"0123456789",
        )
        .expect("enc");
        for cut in 0..msg.len() {
            assert!(
                decrypt_to_vec(&k, &any_policy(), &msg[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        let mut longer = msg.clone();
        longer.push(0);
        assert!(matches!(
            decrypt_to_vec(&k, &any_policy(), &longer),
            Err(Error::TrailingBytes)
        ));
    }

    #[test]
    fn commitment_policies() {
        let k = aes("k", 1);
        let mut o = opts(Suite::Aes256GcmHkdfSha256, 64);
        o.commitment_policy = CommitmentPolicy::RequireEncryptRequireDecrypt;
        assert!(matches!(
            encrypt_to_vec(&k, &o, b"x"),
            Err(Error::CommitmentPolicy(_))
        ));
        o.commitment_policy = CommitmentPolicy::ForbidEncryptAllowDecrypt;
        let (msg, _) = encrypt_to_vec(&k, &o, b"x").expect("legacy");
        assert!(matches!(
            decrypt_to_vec(&k, &DecryptOptions::default(), &msg),
            Err(Error::CommitmentPolicy(_))
        ));
        assert!(decrypt_to_vec(&k, &any_policy(), &msg).is_ok());
        let mut o = opts(Suite::Aes256GcmHkdfSha512Commit, 64);
        o.commitment_policy = CommitmentPolicy::ForbidEncryptAllowDecrypt;
        assert!(matches!(
            encrypt_to_vec(&k, &o, b"x"),
            Err(Error::CommitmentPolicy(_))
        ));
    }

    /// A keyring that hands out a fixed data key, to build a message whose commitment does not
    /// match its data key.
    struct Fixed(u8);
    impl Keyring for Fixed {
        fn on_encrypt(&self, m: &mut EncryptionMaterials) -> Result<(), Error> {
            m.data_key = Some(SecretBytes::new(vec![self.0; m.suite.key_len()]));
            m.encrypted_data_keys.push(EncryptedDataKey {
                provider_id: "fixed".into(),
                provider_info: vec![],
                ciphertext: vec![1],
            });
            Ok(())
        }
        fn on_decrypt(
            &self,
            m: &mut DecryptionMaterials,
            _: &[EncryptedDataKey],
        ) -> Result<(), Error> {
            m.data_key = Some(SecretBytes::new(vec![self.0; m.suite.key_len()]));
            Ok(())
        }
        fn describe(&self) -> String {
            "fixed".into()
        }
    }

    #[test]
    fn wrong_data_key_fails_commitment_first() {
        let (msg, _) = encrypt_to_vec(&Fixed(1), &opts(Suite::Aes256GcmHkdfSha512Commit, 64), b"x")
            .expect("enc");
        assert!(matches!(
            decrypt_to_vec(&Fixed(2), &any_policy(), &msg),
            Err(Error::CommitmentMismatch)
        ));
        let (msg, _) =
            encrypt_to_vec(&Fixed(1), &opts(Suite::Aes256GcmHkdfSha256, 64), b"x").expect("enc");
        assert!(matches!(
            decrypt_to_vec(&Fixed(2), &any_policy(), &msg),
            Err(Error::HeaderAuthentication)
        ));
    }

    #[test]
    fn edk_limit_context_rules_and_multi_keyring() {
        let multi = MultiKeyring::new(vec![
            Box::new(aes("a", 1)),
            Box::new(aes("b", 2)),
            Box::new(aes("c", 3)),
        ])
        .expect("multi");
        let o = opts(Suite::Aes256GcmHkdfSha512CommitEcdsaP384, 4096);
        let (msg, info) = encrypt_to_vec(&multi, &o, b"hello").expect("enc");
        assert_eq!(info.encrypted_data_keys.len(), 3);
        // Each member alone opens it.
        assert!(decrypt_to_vec(&aes("c", 3), &DecryptOptions::default(), &msg).is_ok());
        let limited = DecryptOptions {
            max_encrypted_data_keys: Some(2),
            ..Default::default()
        };
        assert!(matches!(
            decrypt_to_vec(&aes("a", 1), &limited, &msg),
            Err(Error::TooManyEncryptedDataKeys { found: 3, max: 2 })
        ));
        let mut o2 = o.clone();
        o2.max_encrypted_data_keys = Some(2);
        assert!(encrypt_to_vec(&multi, &o2, b"x").is_err());
        // A wrong key names what the message holds.
        match decrypt_to_vec(&aes("d", 4), &DecryptOptions::default(), &msg) {
            Err(Error::NoDataKey(why)) => assert!(why.contains("ns a, ns b, ns c"), "{why}"),
            other => panic!("unexpected {other:?}"),
        }
        // Required context.
        let mut req = DecryptOptions::default();
        req.required_context
            .insert("purpose".into(), "other".into());
        assert!(matches!(
            decrypt_to_vec(&aes("a", 1), &req, &msg),
            Err(Error::Context(_))
        ));
        req.required_context.insert("purpose".into(), "test".into());
        assert!(decrypt_to_vec(&aes("a", 1), &req, &msg).is_ok());
        req.required_keys.push("tenant".into());
        assert!(matches!(
            decrypt_to_vec(&aes("a", 1), &req, &msg),
            Err(Error::Context(_))
        ));
        // Reserved keys are refused on encryption.
        let mut o3 = o.clone();
        o3.context
            .insert("aws-crypto-public-key".into(), "x".into());
        assert!(matches!(
            encrypt_to_vec(&multi, &o3, b"x"),
            Err(Error::Context(_))
        ));
    }

    #[test]
    fn raw_aes_keyring_binds_the_context() {
        // The wrapped data key is bound to the context: a header whose context changed does not
        // unwrap (and would fail header authentication anyway).
        let k = aes("k", 9);
        let mut m = EncryptionMaterials {
            suite: Suite::Aes256GcmHkdfSha512Commit,
            context: Context::from([("a".to_string(), "1".to_string())]),
            data_key: None,
            encrypted_data_keys: vec![],
        };
        k.on_encrypt(&mut m).expect("wrap");
        let mut d = DecryptionMaterials {
            suite: m.suite,
            context: Context::from([("a".to_string(), "2".to_string())]),
            data_key: None,
        };
        assert!(k.on_decrypt(&mut d, &m.encrypted_data_keys).is_err());
        d.context.insert("a".into(), "1".into());
        k.on_decrypt(&mut d, &m.encrypted_data_keys)
            .expect("unwrap");
        assert_eq!(
            d.data_key.as_ref().map(|k| k.expose().to_vec()),
            m.data_key.as_ref().map(|k| k.expose().to_vec())
        );
    }
}
