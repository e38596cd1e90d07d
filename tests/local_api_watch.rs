//! Watch semantics (§3.E.4, §3.G.4) and fault injection, driven by kube-rs.
#![allow(clippy::unwrap_used)]

mod local_api_common;
mod support;

use std::time::Duration;

use csr_signer::dev::{self, Failure, LocalApiConfig, Match};
use futures::{StreamExt, TryStreamExt};
use http::Method;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kube::api::{ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::runtime::{watcher, WatchStreamExt};
use local_api_common::*;
use serde_json::json;

type Ev = WatchEvent<CertificateSigningRequest>;

async fn next_any(stream: &mut (impl futures::Stream<Item = kube::Result<Ev>> + Unpin)) -> Ev {
    // A generous bound so a broken server fails the test instead of hanging it.
    tokio::time::timeout(Duration::from_secs(30), stream.next())
        .await
        .expect("watch event within 30s")
        .expect("stream open")
        .expect("event decodes")
}

/// The next non-bookmark event.
async fn next(stream: &mut (impl futures::Stream<Item = kube::Result<Ev>> + Unpin)) -> Ev {
    loop {
        match next_any(stream).await {
            WatchEvent::Bookmark(_) => continue,
            ev => return ev,
        }
    }
}

fn name(ev: &Ev) -> (&'static str, String) {
    match ev {
        WatchEvent::Added(o) => ("ADDED", o.metadata.name.clone().unwrap()),
        WatchEvent::Modified(o) => ("MODIFIED", o.metadata.name.clone().unwrap()),
        WatchEvent::Deleted(o) => ("DELETED", o.metadata.name.clone().unwrap()),
        WatchEvent::Bookmark(_) => ("BOOKMARK", String::new()),
        WatchEvent::Error(e) => ("ERROR", e.message.clone()),
    }
}

#[tokio::test]
async fn watch_with_field_selector_sees_only_its_signer() {
    let api = plain().await;
    let c = csrs(&api, csr_signer::dev::SIGNER_USER);
    let wp = WatchParams::default().fields(&format!("spec.signerName={SIGNER}"));
    let mut s = c.watch(&wp, "0").await.unwrap().boxed();
    create_raw(
        &api,
        "developer",
        &csr_json("other", "other.io/x", &["client auth"], None),
    )
    .await;
    create(&api, "developer", "mine").await;
    assert_eq!(name(&next(&mut s).await), ("ADDED", "mine".into()));
    csrs(&api, "approver")
        .patch_approval(
            "mine",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"status": {"conditions": [{"type": "Approved", "status": "True"}]}}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(name(&next(&mut s).await), ("MODIFIED", "mine".into()));
    csrs(&api, "admin")
        .delete("mine", &Default::default())
        .await
        .unwrap();
    assert_eq!(name(&next(&mut s).await), ("DELETED", "mine".into()));
}

#[tokio::test]
async fn watch_from_zero_replays_current_state() {
    let api = plain().await;
    create(&api, "developer", "a").await;
    create(&api, "developer", "b").await;
    let mut s = csrs(&api, "developer")
        .watch(&WatchParams::default(), "0")
        .await
        .unwrap()
        .boxed();
    assert_eq!(name(&next(&mut s).await), ("ADDED", "a".into()));
    assert_eq!(name(&next(&mut s).await), ("ADDED", "b".into()));
}

#[tokio::test]
async fn watch_resumes_from_resource_version() {
    let api = plain().await;
    let a = create(&api, "developer", "a").await;
    create(&api, "developer", "b").await;
    let rv = a.metadata.resource_version.unwrap();
    let mut s = csrs(&api, "developer")
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    assert_eq!(
        name(&next(&mut s).await),
        ("ADDED", "b".into()),
        "only changes after rv are replayed"
    );
    create(&api, "developer", "c").await;
    assert_eq!(name(&next(&mut s).await), ("ADDED", "c".into()));
}

#[tokio::test]
async fn compacted_version_gives_410() {
    let api = plain().await;
    let a = create(&api, "developer", "a").await;
    create(&api, "developer", "b").await;
    api.faults().compact();
    let rv = a.metadata.resource_version.unwrap();
    let mut s = csrs(&api, "developer")
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    match next(&mut s).await {
        WatchEvent::Error(e) => {
            assert_eq!(e.code, 410);
            assert_eq!(e.reason, "Expired");
            assert!(
                e.message.starts_with("too old resource version: "),
                "{}",
                e.message
            );
        }
        other => panic!("expected 410 ERROR event, got {other:?}"),
    }
    // The current version still works.
    let cur = api.resource_version().to_string();
    let mut s = csrs(&api, "developer")
        .watch(&WatchParams::default(), &cur)
        .await
        .unwrap()
        .boxed();
    create(&api, "developer", "c").await;
    assert_eq!(name(&next(&mut s).await), ("ADDED", "c".into()));
}

#[tokio::test]
async fn no_op_write_sends_no_event() {
    let api = plain().await;
    let a = create(&api, "developer", "a").await;
    let rv = a.metadata.resource_version.clone().unwrap();
    let mut s = csrs(&api, "admin")
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    let c = csrs(&api, "admin");
    let same = c.replace("a", &PostParams::default(), &a).await.unwrap();
    assert_eq!(
        same.metadata.resource_version.as_deref(),
        Some(rv.as_str()),
        "no RV bump"
    );
    let mut changed = same.clone();
    changed.metadata.labels = Some([("x".to_string(), "y".to_string())].into());
    c.replace("a", &PostParams::default(), &changed)
        .await
        .unwrap();
    match next(&mut s).await {
        WatchEvent::Modified(o) => assert_eq!(
            o.metadata.labels.unwrap()["x"],
            "y",
            "first event is the real change"
        ),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn bookmarks_when_asked() {
    let api = dev::start(LocalApiConfig {
        bookmark_interval: Duration::from_millis(50),
        ..LocalApiConfig::plain_http()
    })
    .await
    .unwrap();
    create(&api, "developer", "a").await;
    let rv = api.resource_version().to_string();
    let wp = WatchParams {
        bookmarks: true,
        ..WatchParams::default()
    };
    let mut s = csrs(&api, "developer")
        .watch(&wp, &rv)
        .await
        .unwrap()
        .boxed();
    match next_any(&mut s).await {
        WatchEvent::Bookmark(b) => assert_eq!(b.metadata.resource_version, rv),
        other => panic!("expected a bookmark, got {other:?}"),
    }
}

#[tokio::test]
async fn close_watches_ends_streams() {
    let api = plain().await;
    let mut s = csrs(&api, "developer")
        .watch(&WatchParams::default(), "0")
        .await
        .unwrap()
        .boxed();
    while api.faults().open_watches() == 0 {
        tokio::task::yield_now().await;
    }
    api.faults().close_watches();
    loop {
        let end = tokio::time::timeout(Duration::from_secs(30), s.next())
            .await
            .expect("stream ends");
        match end {
            None => break,
            Some(Ok(WatchEvent::Bookmark(_))) => continue,
            other => panic!("stream should close, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn runtime_watcher_recovers_after_compaction_and_close() {
    let api = plain().await;
    create(&api, "developer", "before").await;
    let c = csrs(&api, csr_signer::dev::SIGNER_USER);
    let cfg = watcher::Config::default().fields(&format!("spec.signerName={SIGNER}"));
    let mut s = watcher::watcher(c, cfg).applied_objects().boxed();
    let first = tokio::time::timeout(Duration::from_secs(30), s.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.metadata.name.as_deref(), Some("before"));
    api.faults().compact();
    api.faults().close_watches();
    create(&api, "developer", "after").await;
    loop {
        let o = tokio::time::timeout(Duration::from_secs(60), s.try_next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if o.metadata.name.as_deref() == Some("after") {
            break;
        }
    }
}

#[tokio::test]
async fn named_watch_via_deprecated_path() {
    let api = plain().await;
    create(&api, "developer", "a").await;
    create(&api, "developer", "b").await;
    let client = reqwest::Client::new();
    let resp = client
        .get(format!(
            "{}/apis/certificates.k8s.io/v1/watch/certificatesigningrequests/b?resourceVersion=0",
            api.base_url()
        ))
        .bearer_auth(api.token("developer").unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut resp = resp;
    let chunk = tokio::time::timeout(Duration::from_secs(30), resp.chunk())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let line: serde_json::Value =
        serde_json::from_slice(chunk.split(|b| *b == b'\n').next().unwrap()).unwrap();
    assert_eq!(line["type"], "ADDED");
    assert_eq!(line["object"]["metadata"]["name"], "b");
    assert_eq!(line["object"]["kind"], "CertificateSigningRequest");
}

#[tokio::test]
async fn injected_failures_and_retry_after() {
    let api = plain().await;
    api.faults().fail_next(
        1,
        Match::new(Some(Method::GET), "/certificatesigningrequests"),
        Failure::TooManyRequests {
            retry_after_secs: 1,
        },
    );
    let (code, headers, body) = raw_h(&api, Some("developer"), "GET", CSR_PATH, None).await;
    assert_eq!(code, 429);
    assert_eq!(headers["retry-after"], "1");
    assert_eq!(body["reason"], "TooManyRequests");
    let (code, _) = get_json(&api, "developer", CSR_PATH).await;
    assert_eq!(code, 200, "only the next request fails");

    api.faults().fail_next(
        2,
        Match::new(Some(Method::POST), "/certificatesigningrequests"),
        Failure::InternalError,
    );
    let (code, body) = post_json(
        &api,
        "developer",
        CSR_PATH,
        &csr_json("x", SIGNER, &["client auth"], None),
    )
    .await;
    assert_eq!(code, 500);
    assert_eq!(body["reason"], "InternalError");
    let (code, _) = post_json(
        &api,
        "developer",
        CSR_PATH,
        &csr_json("x", SIGNER, &["client auth"], None),
    )
    .await;
    assert_eq!(code, 500);
    let (code, _) = post_json(
        &api,
        "developer",
        CSR_PATH,
        &csr_json("x", SIGNER, &["client auth"], None),
    )
    .await;
    assert_eq!(code, 201);

    api.faults()
        .fail_next(1, Match::any(), Failure::ServiceUnavailable);
    let (code, _) = get_json(&api, "developer", CSR_PATH).await;
    assert_eq!(code, 503);
    assert_eq!(
        api.faults()
            .count(&Method::GET, "/certificatesigningrequests"),
        3
    );
}

#[tokio::test]
async fn forced_conflict_on_next_write() {
    let api = plain().await;
    let a = create(&api, "developer", "a").await;
    api.faults()
        .conflict_next_write(Match::new(None, "/certificatesigningrequests/a"));
    let c = csrs(&api, "admin");
    let mut changed = a.clone();
    changed.metadata.labels = Some([("x".to_string(), "y".to_string())].into());
    let (code, reason, _) = api_err(
        c.replace("a", &PostParams::default(), &changed)
            .await
            .unwrap_err(),
    );
    assert_eq!((code, reason.as_str()), (409, "Conflict"));
    c.replace("a", &PostParams::default(), &changed)
        .await
        .unwrap();
}

#[tokio::test]
async fn kube_client_lists_through_a_transient_failure() {
    let api = plain().await;
    create(&api, "developer", "a").await;
    api.faults().fail_next(
        1,
        Match::new(Some(Method::GET), "/certificatesigningrequests"),
        Failure::ServiceUnavailable,
    );
    let c = csrs(&api, "developer");
    match c.list(&ListParams::default()).await {
        // kube's default retry policy retries a 503.
        Ok(l) => assert_eq!(l.items.len(), 1),
        Err(e) => assert_eq!(api_err(e).0, 503),
    }
    let statuses: Vec<u16> = api
        .faults()
        .requests()
        .iter()
        .filter(|r| r.method == Method::GET)
        .map(|r| r.status)
        .collect();
    assert_eq!(statuses[0], 503);
}

#[tokio::test]
async fn streaming_list_watcher_becomes_ready() {
    // kube-runtime's streaming lists: sendInitialEvents=true, then the initial-events-end bookmark.
    let api = plain().await;
    create(&api, "developer", "a").await;
    create(&api, "developer", "b").await;
    let c = csrs(&api, csr_signer::dev::SIGNER_USER);
    let cfg = watcher::Config::default().streaming_lists();
    let mut s = watcher::watcher(c, cfg).boxed();
    let mut seen = Vec::new();
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(30), s.try_next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        match ev {
            watcher::Event::InitApply(o) => seen.push(o.metadata.name.unwrap()),
            watcher::Event::InitDone => break,
            _ => {}
        }
    }
    assert_eq!(seen, vec!["a", "b"]);
}

#[tokio::test]
async fn latency_applies_only_to_matching_requests() {
    let api = plain().await;
    create(&api, "developer", "a").await;
    api.faults().add_latency(
        Match::new(Some(Method::GET), "/certificatesigningrequests/a"),
        Duration::from_secs(600),
    );
    let url = format!("{}{CSR_PATH}/a", api.base_url());
    let token = api.token("developer").unwrap();
    let slow = tokio::spawn(async move {
        reqwest::Client::new()
            .get(url)
            .bearer_auth(token)
            .send()
            .await
    });
    while api.faults().in_flight() == 0 {
        tokio::task::yield_now().await;
    }
    let (code, _) = get_json(&api, "developer", CSR_PATH).await;
    assert_eq!(code, 200, "unmatched requests are not delayed");
    assert_eq!(
        api.faults().in_flight(),
        1,
        "the matching request is still held"
    );
    assert!(!slow.is_finished());
    slow.abort();
    api.faults().clear();
    let (code, _) = get_json(&api, "developer", &format!("{CSR_PATH}/a")).await;
    assert_eq!(code, 200, "clear() removes the latency");
}
