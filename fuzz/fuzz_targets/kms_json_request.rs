//! Any JSON body for any KMS operation, run through the real dispatcher against an in-memory store.
//! Every input must end in a response or an AWS error, never a panic.
#![no_main]

use std::sync::{Arc, OnceLock};

use coffer_api::kms::{KmsOperation, dispatch};
use coffer_kms::root::DevFileRoot;
use coffer_kms::{Caller, Kms, KmsConfig, Principal};
use libfuzzer_sys::fuzz_target;

struct World {
    runtime: tokio::runtime::Runtime,
    kms: Kms,
    _dir: std::path::PathBuf,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("coffer-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let (root, _) = DevFileRoot::load_or_create(&dir.join("root.key")).expect("root");
        let meta = Arc::new(coffer_meta::SqlStore::in_memory().expect("sqlite"));
        let kms = Kms::new(
            KmsConfig {
                account_id: "111122223333".into(),
                region: "us-east-1".into(),
                // A cluster whose module is missing: custom key store calls run, connects fail.
                hsm_clusters: [(
                    "cluster-fuzzfuzzfuzz2".to_owned(),
                    coffer_kms::custom_key_stores::HsmCluster {
                        module: "/nonexistent/pkcs11.so".into(),
                        token_label: "fuzz".into(),
                    },
                )]
                .into(),
            },
            meta,
            Arc::new(root),
        );
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        World {
            runtime,
            kms,
            _dir: dir,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let ops = KmsOperation::ALL;
    let op = ops[selector as usize % ops.len()];
    let w = world();
    let caller = Caller::new(
        Principal {
            arn: "arn:aws:iam::111122223333:root".into(),
            account_id: "111122223333".into(),
            access_key_id: "AKIAFUZZFUZZFUZZFUZZ".into(),
        },
        None,
        None,
    );
    let _ = w.runtime.block_on(dispatch(
        &w.kms,
        op,
        body,
        &caller,
        &mut coffer_api::kms::Gate::open(),
    ));
});
