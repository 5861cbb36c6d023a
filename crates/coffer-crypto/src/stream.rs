//! Chunked authenticated encryption of a byte stream under a one-use key (the STREAM construction):
//! 64 KiB chunks, each AES-256-GCM with the chunk's index as nonce and, as associated data, a
//! digest of the container's header and whether the chunk is the last. Reordering, dropping,
//! truncating or extending the stream, or changing the header, makes it fail to open.
//!
//! ```text
//! chunk: length of ciphertext+tag (u32 BE) | AES-256-GCM ciphertext | tag (16)
//! nonce: 0u32 | index (u64 BE)      aad: SHA-256(header) | last (0x00 or 0x01)
//! ```
//!
//! The key must never encrypt a second stream: nonces restart at zero.

use aws_lc_rs::aead::Aad;

use crate::{CryptoError, Key256, SecretBytes};

pub const CHUNK_LEN: usize = 64 * 1024;
const TAG_LEN: usize = 16;

fn aad(header_digest: &[u8; 32], last: bool) -> [u8; 33] {
    let mut a = [0u8; 33];
    a[..32].copy_from_slice(header_digest);
    a[32] = u8::from(last);
    a
}

/// Encrypts `plaintext` bound to `header`.
pub fn seal(key: &Key256, header: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let key = crate::aes_gcm(key)?;
    let digest = crate::digest::sha256(header);
    let chunks: Vec<&[u8]> = if plaintext.is_empty() {
        vec![&[]]
    } else {
        plaintext.chunks(CHUNK_LEN).collect()
    };
    let mut out = Vec::with_capacity(plaintext.len() + chunks.len() * (4 + TAG_LEN));
    for (i, chunk) in chunks.iter().enumerate() {
        let last = i + 1 == chunks.len();
        let mut buf = chunk.to_vec();
        key.seal_in_place_append_tag(
            crate::counter_nonce(i as u64),
            Aad::from(aad(&digest, last)),
            &mut buf,
        )
        .map_err(|_| CryptoError::Unspecified)?;
        out.extend_from_slice(&(buf.len() as u32).to_be_bytes());
        out.extend_from_slice(&buf);
    }
    Ok(out)
}

/// Opens a stream made by [`seal`] with the same key and header.
pub fn open(key: &Key256, header: &[u8], sealed: &[u8]) -> Result<SecretBytes, CryptoError> {
    let key = crate::aes_gcm(key)?;
    let digest = crate::digest::sha256(header);
    let mut out = SecretBytes::new(Vec::with_capacity(sealed.len()));
    let mut rest = sealed;
    let mut index = 0u64;
    let mut plain = Vec::new();
    loop {
        if rest.len() < 4 {
            return Err(CryptoError::Malformed("encrypted stream"));
        }
        let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        if !(TAG_LEN..=CHUNK_LEN + TAG_LEN).contains(&len) || rest.len() < 4 + len {
            return Err(CryptoError::Malformed("encrypted stream"));
        }
        let (chunk, after) = rest[4..].split_at(len);
        let last = after.is_empty();
        plain.clear();
        plain.extend_from_slice(chunk);
        let opened = key
            .open_in_place(
                crate::counter_nonce(index),
                Aad::from(aad(&digest, last)),
                &mut plain,
            )
            .map_err(|_| CryptoError::Decrypt)?;
        out.extend_from_slice(opened);
        zeroize::Zeroize::zeroize(&mut plain);
        if last {
            return Ok(out);
        }
        if len != CHUNK_LEN + TAG_LEN {
            // Only the last chunk may be short.
            return Err(CryptoError::Malformed("encrypted stream"));
        }
        rest = after;
        index += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_every_change() {
        let key = Key256::generate().expect("rng");
        for len in [
            0,
            1,
            CHUNK_LEN - 1,
            CHUNK_LEN,
            CHUNK_LEN + 1,
            3 * CHUNK_LEN + 5,
        ] {
            let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let s = seal(&key, b"header", &data).expect("seal");
            assert_eq!(open(&key, b"header", &s).expect("open").expose(), &data[..]);
            assert!(open(&key, b"other header", &s).is_err());
            for cut in [1, 17, s.len() / 2] {
                if cut < s.len() {
                    assert!(
                        open(&key, b"header", &s[..s.len() - cut]).is_err(),
                        "cut {cut} of {len}"
                    );
                }
            }
            let mut extended = s.clone();
            extended.extend_from_slice(&s);
            assert!(open(&key, b"header", &extended).is_err());
            let mut flipped = s.clone();
            let at = flipped.len() / 2;
            flipped[at] ^= 1;
            assert!(open(&key, b"header", &flipped).is_err());
        }
        // Dropping a whole middle chunk (a valid-looking shorter stream) fails.
        let data = vec![7u8; 3 * CHUNK_LEN];
        let s = seal(&key, b"h", &data).expect("seal");
        let one = 4 + CHUNK_LEN + TAG_LEN;
        let mut dropped = s[..one].to_vec();
        dropped.extend_from_slice(&s[2 * one..]);
        assert!(open(&key, b"h", &dropped).is_err());
        let other = Key256::generate().expect("rng");
        assert_eq!(open(&other, b"h", &s).unwrap_err(), CryptoError::Decrypt);
    }
}
