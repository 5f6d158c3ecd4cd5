//! STOW-RS requests as a web client sends them, through to the ingest service (a real online
//! store and SQLite locator in a temporary folder): the input's first line is the
//! Content-Type, the rest the multipart/related body. Any input gets an HTTP status, never a
//! panic or a hang; what is stored is whatever a valid part holds (a rejection note too).
#![no_main]

use std::path::Path;
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use strata::audit::Caller;
use strata::config::Config;
use strata::ingest::Ingest;
use strata::locator::{Locator, Owner, Role};
use strata::online::OnlineStore;
use strata::service::Principal;

struct Stack {
    runtime: tokio::runtime::Runtime,
    ingest: Ingest,
    _dir: tempfile::TempDir,
}

fn stack() -> &'static Stack {
    static STACK: OnceLock<Stack> = OnceLock::new();
    STACK.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let text = "[dicom]\naet = \"STRATA\"\nlisten = \"127.0.0.1:0\"\n[storage]\n\
                    online_dir = \"online\"\n[locator]\nurl = \"sqlite://strata.db\"\n";
        let config = Config::parse(text, &dir.path().join("strata.toml"), |_, host| {
            host.to_string()
        })
        .unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let ingest = runtime.block_on(async {
            let owner = Owner::of(&config.node, Role::Cli);
            let locator = Arc::new(Locator::open(&config.locator, owner).await.unwrap());
            let online = OnlineStore::open_for(Path::new(&config.storage.online_dir), &locator)
                .await
                .unwrap();
            Ingest::new(Arc::new(online), locator, config.storage.duplicate_policy)
                .max_instance_mb(1)
        });
        Stack {
            runtime,
            ingest,
            _dir: dir,
        }
    })
}

fuzz_target!(|input: &[u8]| {
    let Some(newline) = input.iter().position(|&b| b == b'\n') else {
        return;
    };
    let Ok(content_type) = std::str::from_utf8(&input[..newline]) else {
        return;
    };
    let body = input[newline + 1..].to_vec();
    let stack = stack();
    let caller = Caller::new(Principal::Anonymous, None);
    let status = stack.runtime.block_on(strata::web::store_body(
        &stack.ingest,
        &caller,
        content_type,
        body,
        4 << 20,
    ));
    assert!(status.as_u16() < 500 || status.as_u16() == 503, "{status}");
});
