//! Picks up new CA files (a rotated Secret, a swapped symlink) while the signer runs. A broken swap keeps
//! the previous CA signing and is counted once per breakage in `ca_reload_errors_total`.

use std::sync::Arc;
use std::time::Duration;

use crate::engine::Engine;
use crate::metrics::{unix_seconds, Metrics};

/// Polls every `every`; calls `reloaded` after a CA was swapped in (CSRs waiting on an expired CA may
/// now be signable).
pub async fn ca_reload(
    engine: Arc<Engine>,
    signer_names: Vec<String>,
    metrics: Arc<Metrics>,
    every: Duration,
    reloaded: impl Fn(),
) {
    let mut last_error: Vec<Option<String>> = vec![None; signer_names.len()];
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tick.tick().await;
        for (i, name) in signer_names.iter().enumerate() {
            let engine = engine.clone();
            let n = name.clone();
            let res = tokio::task::spawn_blocking(move || {
                engine
                    .signer(&n)
                    .map(|s| (s.reload_ca_if_changed(), s.ca_not_after()))
            })
            .await;
            let Ok(Some((result, not_after))) = res else {
                continue;
            };
            match result {
                Ok(true) => {
                    last_error[i] = None;
                    let ts = unix_seconds(not_after);
                    metrics.set_ca_not_after(name, ts);
                    tracing::info!(signer = %name, ca_not_after = ts, "CA reloaded");
                    reloaded();
                }
                Ok(false) => last_error[i] = None,
                Err(e) => {
                    let msg = crate::error::chain(&e);
                    if last_error[i].as_deref() != Some(msg.as_str()) {
                        metrics.record_ca_reload_error(name);
                        tracing::error!(signer = %name, error = %msg, "new CA files rejected; still signing with the previous CA");
                        last_error[i] = Some(msg);
                    }
                }
            }
        }
    }
}
