//! Picks up new CA files (a rotated Secret, a swapped symlink) while the signer runs: the signing CA's and
//! those of `otherCas`. A broken swap keeps the previous CA (signing, or trusted and published) and is
//! counted once per breakage in `ca_reload_errors_total`.

use std::sync::Arc;
use std::time::Duration;

use crate::engine::{Engine, SignerEngine};
use crate::metrics::{unix_seconds, Metrics};

/// The per-CA notAfter gauges of `signer`, from its CAs as loaded now.
pub(crate) fn set_ca_gauges(metrics: &Metrics, signer: &SignerEngine) {
    let entries = signer.ca_entries();
    let cas: Vec<(&str, &str, f64)> = entries
        .iter()
        .map(|e| (e.name.as_str(), e.state, unix_seconds(e.not_after)))
        .collect();
    metrics.set_ca_certificates(signer.name(), &cas);
}

/// What one poll of one signer found.
struct Polled {
    signing: crate::Result<bool>,
    others: Vec<crate::Result<bool>>,
}

/// Polls every `every`; calls `reloaded` after a signing CA was swapped in (CSRs waiting on an expired
/// CA may now be signable). A changed `otherCas` entry needs no call: the trust publisher reads the
/// engine's CAs at each of its polls.
pub async fn ca_reload(
    engine: Arc<Engine>,
    signer_names: Vec<String>,
    metrics: Arc<Metrics>,
    every: Duration,
    reloaded: impl Fn(),
) {
    // The last error of each file set: index 0 the signing CA, 1 + j the j-th otherCas entry.
    let mut last_error: Vec<Vec<Option<String>>> = vec![Vec::new(); signer_names.len()];
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tick.tick().await;
        for (i, name) in signer_names.iter().enumerate() {
            let engine_for_poll = engine.clone();
            let n = name.clone();
            let res = tokio::task::spawn_blocking(move || {
                engine_for_poll.signer(&n).map(|s| Polled {
                    signing: s.reload_ca_if_changed(),
                    others: s.reload_other_cas_if_changed(),
                })
            })
            .await;
            let (Ok(Some(polled)), Some(signer)) = (res, engine.signer(name)) else {
                continue;
            };
            let last = &mut last_error[i];
            last.resize(1 + polled.others.len(), None);
            let mut changed = false;
            for (k, result) in std::iter::once(polled.signing)
                .chain(polled.others)
                .enumerate()
            {
                match result {
                    Ok(swapped) => {
                        last[k] = None;
                        changed |= swapped;
                        if swapped && k == 0 {
                            let ts = unix_seconds(signer.ca_not_after());
                            metrics.set_ca_not_after(name, ts);
                            tracing::info!(signer = %name, ca_not_after = ts, "CA reloaded");
                            reloaded();
                        } else if swapped {
                            if let Some(ca) = signer.other_cas().get(k - 1) {
                                tracing::info!(signer = %name, ca = %ca.name, state = ca.state.as_str(), ca_not_after = unix_seconds(ca.not_after), "trusted CA reloaded");
                            }
                        }
                    }
                    Err(e) => {
                        let msg = crate::error::chain(&e);
                        if last[k].as_deref() != Some(msg.as_str()) {
                            metrics.record_ca_reload_error(name);
                            if k == 0 {
                                tracing::error!(signer = %name, error = %msg, "new CA files rejected; still signing with the previous CA");
                            } else {
                                tracing::error!(signer = %name, error = %msg, "new files of a trusted CA rejected; still trusting (and publishing) the previous ones");
                            }
                            last[k] = Some(msg);
                        }
                    }
                }
            }
            if changed {
                set_ca_gauges(&metrics, signer);
            }
        }
    }
}
