//! Project Wycheproof vectors against the primitives exactly as Coffer configures them: AES-GCM with
//! 96-bit nonces and 128-bit tags (the ciphertext blob and key wrap), RSA-OAEP (RSA encryption
//! keys), RSASSA-PSS with salt = digest length and PKCS#1 v1.5 (RSA signing keys), ECDSA with ASN.1
//! signatures on P-256/P-384/P-521/secp256k1 (ECC signing keys), Ed25519, HMAC (HMAC keys) and HKDF-SHA-256
//! (per-message keys). A "valid" vector must pass, an "invalid" one must fail; "acceptable" ones may
//! go either way.

use aws_lc_rs::aead::{AES_128_GCM, AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::signature::{self, UnparsedPublicKey, VerificationAlgorithm};
use aws_lc_rs::{hkdf, hmac, rsa};
use wycheproof::TestResult;

fn expect(result: TestResult, ok: bool, what: &str) {
    match result {
        TestResult::Valid => assert!(ok, "{what}: a valid vector failed"),
        TestResult::Invalid => assert!(!ok, "{what}: an invalid vector passed"),
        TestResult::Acceptable => {}
    }
}

#[test]
fn aes_gcm() {
    let set = wycheproof::aead::TestSet::load(wycheproof::aead::TestName::AesGcm).expect("vectors");
    let mut run = 0;
    for g in set.test_groups {
        if g.nonce_size != 96 || g.tag_size != 128 || !(g.key_size == 128 || g.key_size == 256) {
            continue;
        }
        let alg = if g.key_size == 256 {
            &AES_256_GCM
        } else {
            &AES_128_GCM
        };
        for t in g.tests {
            let key = LessSafeKey::new(UnboundKey::new(alg, &t.key).expect("key"));
            let nonce = || Nonce::try_assume_unique_for_key(&t.nonce).expect("12-byte nonce");
            let mut sealed = t.ct.to_vec();
            sealed.extend_from_slice(&t.tag);
            let opened = key
                .open_in_place(nonce(), Aad::from(&t.aad[..]), &mut sealed)
                .map(|p| p.to_vec());
            let ok = opened.as_deref() == Ok(&t.pt[..]);
            expect(t.result, ok, &format!("AES-GCM tc {}", t.tc_id));
            if t.result == TestResult::Valid {
                let mut buf = t.pt.to_vec();
                let tag = key
                    .seal_in_place_separate_tag(nonce(), Aad::from(&t.aad[..]), &mut buf)
                    .expect("seal");
                assert_eq!(
                    (&buf[..], tag.as_ref()),
                    (&t.ct[..], &t.tag[..]),
                    "AES-GCM tc {} seal",
                    t.tc_id
                );
            }
            run += 1;
        }
    }
    assert!(run > 100, "only {run} AES-GCM vectors ran");
}

#[test]
fn rsa_oaep() {
    use wycheproof::rsa_oaep::TestName as N;
    let mut run = 0;
    for (name, alg) in [
        (N::Rsa2048Sha1Mgf1Sha1, &rsa::OAEP_SHA1_MGF1SHA1),
        (N::Rsa2048Sha256Mgf1Sha256, &rsa::OAEP_SHA256_MGF1SHA256),
        (N::Rsa3072Sha256Mgf1Sha256, &rsa::OAEP_SHA256_MGF1SHA256),
        (N::Rsa4096Sha256Mgf1Sha256, &rsa::OAEP_SHA256_MGF1SHA256),
    ] {
        let set = wycheproof::rsa_oaep::TestSet::load(name).expect("vectors");
        for g in set.test_groups {
            let key = rsa::OaepPrivateDecryptingKey::new(
                rsa::PrivateDecryptingKey::from_pkcs8(&g.pkcs8).expect("pkcs8"),
            )
            .expect("oaep key");
            for t in g.tests {
                let mut out = vec![0u8; key.min_output_size()];
                let label = (!t.label.is_empty()).then_some(&t.label[..]);
                let ok = key
                    .decrypt(alg, &t.ct, &mut out, label)
                    .map(|p| p.to_vec())
                    .is_ok_and(|p| p == t.pt[..]);
                expect(t.result, ok, &format!("{name:?} tc {}", t.tc_id));
                run += 1;
            }
        }
    }
    assert!(run > 100, "only {run} RSA-OAEP vectors ran");
}

fn verify_set<A: VerificationAlgorithm>(
    alg: &'static A,
    key: &[u8],
    msg: &[u8],
    sig: &[u8],
) -> bool {
    UnparsedPublicKey::new(alg, key).verify(msg, sig).is_ok()
}

#[test]
fn rsa_signatures() {
    use wycheproof::rsa_pkcs1_verify::TestName as P;
    use wycheproof::rsa_pss_verify::TestName as S;
    let mut run = 0;
    for (name, alg) in [
        (P::Rsa2048Sha256, &signature::RSA_PKCS1_2048_8192_SHA256),
        (P::Rsa2048Sha384, &signature::RSA_PKCS1_2048_8192_SHA384),
        (P::Rsa2048Sha512, &signature::RSA_PKCS1_2048_8192_SHA512),
        (P::Rsa3072Sha256, &signature::RSA_PKCS1_2048_8192_SHA256),
        (P::Rsa4096Sha512, &signature::RSA_PKCS1_2048_8192_SHA512),
    ] {
        for g in wycheproof::rsa_pkcs1_verify::TestSet::load(name)
            .expect("vectors")
            .test_groups
        {
            for t in g.tests {
                let ok = verify_set(alg, &g.asn_key, &t.msg, &t.sig);
                expect(t.result, ok, &format!("{name:?} tc {}", t.tc_id));
                run += 1;
            }
        }
    }
    for (name, alg) in [
        (
            S::RsaPss2048Sha256Mgf1SaltLen32,
            &signature::RSA_PSS_2048_8192_SHA256,
        ),
        (
            S::RsaPss2048Sha384Mgf1SaltLen48,
            &signature::RSA_PSS_2048_8192_SHA384,
        ),
        (
            S::RsaPss3072Sha256Mgf1SaltLen32,
            &signature::RSA_PSS_2048_8192_SHA256,
        ),
        (
            S::RsaPss4096Sha256Mgf1SaltLen32,
            &signature::RSA_PSS_2048_8192_SHA256,
        ),
        (
            S::RsaPss4096Sha384Mgf1SaltLen48,
            &signature::RSA_PSS_2048_8192_SHA384,
        ),
    ] {
        for g in wycheproof::rsa_pss_verify::TestSet::load(name)
            .expect("vectors")
            .test_groups
        {
            for t in g.tests {
                let ok = verify_set(alg, &g.asn_key, &t.msg, &t.sig);
                expect(t.result, ok, &format!("{name:?} tc {}", t.tc_id));
                run += 1;
            }
        }
    }
    assert!(run > 500, "only {run} RSA signature vectors ran");
}

#[test]
fn ecdsa() {
    use wycheproof::ecdsa::TestName as E;
    let mut run = 0;
    for (name, alg) in [
        (E::EcdsaSecp256r1Sha256, &signature::ECDSA_P256_SHA256_ASN1),
        (E::EcdsaSecp384r1Sha384, &signature::ECDSA_P384_SHA384_ASN1),
        (E::EcdsaSecp521r1Sha512, &signature::ECDSA_P521_SHA512_ASN1),
        (
            E::EcdsaSecp256k1Sha256,
            &signature::ECDSA_P256K1_SHA256_ASN1,
        ),
    ] {
        for g in wycheproof::ecdsa::TestSet::load(name)
            .expect("vectors")
            .test_groups
        {
            for t in g.tests {
                let ok = verify_set(alg, &g.key.key, &t.msg, &t.sig);
                expect(t.result, ok, &format!("{name:?} tc {}", t.tc_id));
                run += 1;
            }
        }
    }
    assert!(run > 1000, "only {run} ECDSA vectors ran");
}

#[test]
fn hmac() {
    use wycheproof::mac::TestName as M;
    let mut run = 0;
    for (name, alg) in [
        (M::HmacSha224, hmac::HMAC_SHA224),
        (M::HmacSha256, hmac::HMAC_SHA256),
        (M::HmacSha384, hmac::HMAC_SHA384),
        (M::HmacSha512, hmac::HMAC_SHA512),
    ] {
        for g in wycheproof::mac::TestSet::load(name)
            .expect("vectors")
            .test_groups
        {
            for t in g.tests {
                let full = hmac::sign(&hmac::Key::new(alg, &t.key), &t.msg);
                // Truncated tags are compared on their prefix, as the vectors define them.
                let ok = full.as_ref().get(..t.tag.len()) == Some(&t.tag[..])
                    && g.tag_size / 8 == t.tag.len();
                expect(t.result, ok, &format!("{name:?} tc {}", t.tc_id));
                run += 1;
            }
        }
    }
    assert!(run > 200, "only {run} HMAC vectors ran");
}

#[test]
fn ed25519() {
    let set =
        wycheproof::eddsa::TestSet::load(wycheproof::eddsa::TestName::Ed25519).expect("vectors");
    let mut run = 0;
    for g in set.test_groups {
        for t in g.tests {
            let ok = verify_set(&signature::ED25519, &g.key.pk, &t.msg, &t.sig);
            expect(t.result, ok, &format!("Ed25519 tc {}", t.tc_id));
            run += 1;
        }
    }
    assert!(run > 100, "only {run} Ed25519 vectors ran");
}

struct Len(usize);

impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

#[test]
fn hkdf_sha256() {
    let set =
        wycheproof::hkdf::TestSet::load(wycheproof::hkdf::TestName::HkdfSha256).expect("vectors");
    let mut run = 0;
    for g in set.test_groups {
        for t in g.tests {
            let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, &t.salt).extract(&t.ikm);
            let info = [&t.info[..]];
            let out = prk.expand(&info, Len(t.size)).and_then(|okm| {
                let mut out = vec![0u8; t.size];
                okm.fill(&mut out).map(|_| out)
            });
            let ok = out.as_deref() == Ok(&t.okm[..]);
            expect(t.result, ok, &format!("HKDF-SHA-256 tc {}", t.tc_id));
            run += 1;
        }
    }
    assert!(run > 50, "only {run} HKDF vectors ran");
}
