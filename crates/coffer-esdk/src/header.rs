//! The message header: what it holds, how it is written, and how it is read from a stream with
//! every length checked before anything is allocated for it.

use std::io::Read;

use coffer_crypto::esdk::{IV_LEN, TAG_LEN};

use crate::context::{self, Context};
use crate::error::{Error, malformed};
use crate::suite::Suite;

/// An encrypted data key: the data key wrapped by one keyring.
#[derive(Clone, PartialEq, Eq)]
pub struct EncryptedDataKey {
    /// Who wrapped it: `aws-kms`, or a raw keyring's namespace.
    pub provider_id: String,
    /// Which key wrapped it (a KMS key ARN; a raw key's name, with IV for raw AES).
    pub provider_info: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

impl std::fmt::Debug for EncryptedDataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncryptedDataKey")
            .field("provider_id", &self.provider_id)
            .field(
                "provider_info",
                &String::from_utf8_lossy(&self.provider_info),
            )
            .field("ciphertext_len", &self.ciphertext.len())
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentType {
    NonFramed,
    Framed,
}

/// The header's fields.
#[derive(Debug, Clone)]
pub struct Header {
    pub suite: Suite,
    pub message_id: Vec<u8>,
    pub context: Context,
    pub encrypted_data_keys: Vec<EncryptedDataKey>,
    pub content_type: ContentType,
    /// Plaintext bytes per regular frame; 0 for a non-framed body.
    pub frame_length: u32,
    /// The key commitment of suites that commit (format version 2).
    pub commitment: Option<[u8; 32]>,
}

/// The header authentication: an AES-GCM tag over the header body (the IV is written only in
/// version 1).
#[derive(Debug, Clone)]
pub struct HeaderAuth {
    pub iv: [u8; IV_LEN],
    pub tag: [u8; TAG_LEN],
}

const TYPE_CUSTOMER_AED: u8 = 0x80;

impl Header {
    /// The serialized header body (everything before the header authentication).
    pub fn body_bytes(&self) -> Result<Vec<u8>, Error> {
        let version = self.suite.message_version();
        let mut out = Vec::with_capacity(256);
        out.push(version);
        if version == 1 {
            out.push(TYPE_CUSTOMER_AED);
        }
        out.extend_from_slice(&self.suite.id().to_be_bytes());
        if self.message_id.len() != self.suite.message_id_len() {
            return Err(Error::Options(
                "message id length does not fit the suite".into(),
            ));
        }
        out.extend_from_slice(&self.message_id);
        let ctx = context::serialize(&self.context)?;
        out.extend_from_slice(&(ctx.len() as u16).to_be_bytes());
        out.extend_from_slice(&ctx);
        let n = u16::try_from(self.encrypted_data_keys.len())
            .map_err(|_| Error::Options("more than 65,535 encrypted data keys".into()))?;
        if n == 0 {
            return Err(Error::Options(
                "a message needs at least one encrypted data key".into(),
            ));
        }
        out.extend_from_slice(&n.to_be_bytes());
        for edk in &self.encrypted_data_keys {
            for field in [
                edk.provider_id.as_bytes(),
                &edk.provider_info,
                &edk.ciphertext,
            ] {
                let len = u16::try_from(field.len()).map_err(|_| {
                    Error::Options("an encrypted data key field is longer than 65,535 bytes".into())
                })?;
                out.extend_from_slice(&len.to_be_bytes());
                out.extend_from_slice(field);
            }
        }
        out.push(match self.content_type {
            ContentType::NonFramed => 1,
            ContentType::Framed => 2,
        });
        if version == 1 {
            out.extend_from_slice(&[0, 0, 0, 0]);
            out.push(IV_LEN as u8);
        }
        out.extend_from_slice(&self.frame_length.to_be_bytes());
        if version == 2 {
            let c = self
                .commitment
                .ok_or_else(|| Error::Options("a committing suite needs its commitment".into()))?;
            out.extend_from_slice(&c);
        }
        Ok(out)
    }

    /// Reads a header and its authentication from `r`. Returns the header, its body bytes as
    /// read (what the authentication tag covers) and the authentication.
    pub fn read(
        r: &mut dyn Read,
        max_encrypted_data_keys: Option<usize>,
    ) -> Result<(Header, Vec<u8>, HeaderAuth), Error> {
        let mut rec = Recorder {
            inner: r,
            bytes: Vec::with_capacity(512),
        };
        let version = rec.u8()?;
        match version {
            1 => {
                let t = rec.u8()?;
                if t != TYPE_CUSTOMER_AED {
                    return Err(malformed(format!("unknown message type 0x{t:02X}")));
                }
            }
            2 => {}
            // The header of a KMS ciphertext blob, base64 text or anything else: say what it
            // is not, and hint at the common mistakes.
            0x41 | 0x51 => {
                return Err(malformed(
                    "this looks like base64 text, not a binary message (decode it first)",
                ));
            }
            v => {
                return Err(malformed(format!(
                    "unknown message format version 0x{v:02X} (not an AWS Encryption SDK message?)"
                )));
            }
        }
        let id = rec.u16()?;
        let suite = Suite::from_id(id).ok_or(Error::UnsupportedSuite(id))?;
        if suite.message_version() != version {
            return Err(malformed(format!(
                "suite {suite} is not used in message format version {version}"
            )));
        }
        let message_id = rec.bytes(suite.message_id_len())?;
        let ctx_len = rec.u16()? as usize;
        let ctx_bytes = rec.bytes(ctx_len)?;
        let context = context::parse(&ctx_bytes)?;
        let count = rec.u16()? as usize;
        if count == 0 {
            return Err(malformed("the header has no encrypted data keys"));
        }
        if let Some(max) = max_encrypted_data_keys
            && count > max
        {
            return Err(Error::TooManyEncryptedDataKeys { found: count, max });
        }
        let mut edks = Vec::with_capacity(count.min(64));
        for _ in 0..count {
            let n = rec.u16()? as usize;
            let provider_id = String::from_utf8(rec.bytes(n)?)
                .map_err(|_| malformed("a key provider id is not UTF-8"))?;
            let n = rec.u16()? as usize;
            let provider_info = rec.bytes(n)?;
            let n = rec.u16()? as usize;
            let ciphertext = rec.bytes(n)?;
            edks.push(EncryptedDataKey {
                provider_id,
                provider_info,
                ciphertext,
            });
        }
        let content_type = match rec.u8()? {
            1 => ContentType::NonFramed,
            2 => ContentType::Framed,
            t => return Err(malformed(format!("unknown content type {t}"))),
        };
        if version == 1 {
            if rec.bytes(4)? != [0, 0, 0, 0] {
                return Err(malformed("the reserved header field is not zero"));
            }
            let iv_len = rec.u8()?;
            if iv_len as usize != IV_LEN {
                return Err(malformed(format!(
                    "IV length {iv_len}, the suite's is {IV_LEN}"
                )));
            }
        }
        let frame_length = rec.u32()?;
        match content_type {
            ContentType::NonFramed if frame_length != 0 => {
                return Err(malformed("a non-framed message with a frame length"));
            }
            ContentType::Framed if frame_length == 0 => {
                return Err(malformed("a framed message with frame length 0"));
            }
            _ => {}
        }
        let commitment = if version == 2 {
            let mut c = [0u8; 32];
            rec.exact(&mut c)?;
            Some(c)
        } else {
            None
        };
        let body = std::mem::take(&mut rec.bytes);
        let mut iv = [0u8; IV_LEN];
        if version == 1 {
            read_exact(rec.inner, &mut iv)?;
        }
        let mut tag = [0u8; TAG_LEN];
        read_exact(rec.inner, &mut tag)?;
        Ok((
            Header {
                suite,
                message_id,
                context,
                encrypted_data_keys: edks,
                content_type,
                frame_length,
                commitment,
            },
            body,
            HeaderAuth { iv, tag },
        ))
    }
}

/// Reads exactly `buf.len()` bytes; an early end is [`Error::Truncated`].
pub(crate) fn read_exact(r: &mut dyn Read, buf: &mut [u8]) -> Result<(), Error> {
    r.read_exact(buf).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            Error::Truncated
        } else {
            Error::Io(e)
        }
    })
}

/// A reader that keeps what it read (the header body, for its authentication).
struct Recorder<'a> {
    inner: &'a mut dyn Read,
    bytes: Vec<u8>,
}

impl Recorder<'_> {
    fn exact(&mut self, buf: &mut [u8]) -> Result<(), Error> {
        read_exact(self.inner, buf)?;
        self.bytes.extend_from_slice(buf);
        Ok(())
    }

    fn u8(&mut self) -> Result<u8, Error> {
        let mut b = [0u8; 1];
        self.exact(&mut b)?;
        Ok(b[0])
    }

    fn u16(&mut self) -> Result<u16, Error> {
        let mut b = [0u8; 2];
        self.exact(&mut b)?;
        Ok(u16::from_be_bytes(b))
    }

    fn u32(&mut self) -> Result<u32, Error> {
        let mut b = [0u8; 4];
        self.exact(&mut b)?;
        Ok(u32::from_be_bytes(b))
    }

    /// `n` bytes (at most 65,535: every variable field has a 16-bit length).
    fn bytes(&mut self, n: usize) -> Result<Vec<u8>, Error> {
        let mut v = vec![0u8; n];
        self.exact(&mut v)?;
        Ok(v)
    }
}
