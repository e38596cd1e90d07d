//! Auto-approval (`autoApprove`) on the local API and on the real kube-apiserver with the chart's RBAC:
//! exactly the requests the signer would sign, from requesters a rule names, are approved (reason
//! `AutoApproved`, then issued); a request the policy refuses, a requester no rule names, and one a
//! SubjectAccessReview turns down are left pending with one `NotAutoApproved` event, never denied.
#![allow(clippy::unwrap_used)]

mod controller_support;
mod support;

use std::time::Duration;

use controller_support::*;
use csr_signer::ca_init::KeyType;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::api::core::v1::Event;
use kube::api::{Api, ListParams, PostParams};
use support::{csr_object, key, openssl_verify, CsrSpec, TestCa};

const TEAM_A: &str = "system:serviceaccount:team-a:app";
const TEAM_B: &str = "system:serviceaccount:team-b:app";

/// Clients for team-a:app and team-b:app, which may create CSRs on both servers.
async fn requesters(env: &Env) -> (kube::Client, kube::Client) {
    match &env.backend {
        Backend::Local(api) => (
            client(&env.base, &api.token(TEAM_A).unwrap()).await,
            client(&env.base, &api.token(TEAM_B).unwrap()).await,
        ),
        Backend::Real(_) => {
            let cp = kube_support::shared();
            (cp.client("team-a").await, cp.client("team-b").await)
        }
    }
}

/// Gives the signer the rights the chart grants when auto-approval is on.
async fn grant_approval(env: &Env) {
    match &env.backend {
        Backend::Local(api) => {
            use csr_signer::dev::Rule;
            let user = api
                .user(csr_signer::dev::SIGNER_USER)
                .unwrap()
                .with_rule(
                    Rule::new(&["certificates.k8s.io"], &["signers"], &["approve"])
                        .names(&[SIGNER]),
                )
                .with_rule(Rule::new(
                    &["certificates.k8s.io"],
                    &["certificatesigningrequests/approval"],
                    &["patch"],
                ))
                .with_rule(Rule::new(
                    &["authorization.k8s.io"],
                    &["subjectaccessreviews"],
                    &["create"],
                ));
            api.add_user(user);
        }
        Backend::Real(_) => {
            kube_support::shared()
                .apply_chart_rbac_with(&[SIGNER], "csr-signer", &["--auto-approve"])
                .await
        }
    }
}

fn spec(sans: &[&str]) -> Vec<u8> {
    CsrSpec::new(key(KeyType::P256), &[("CN", TEAM_A)])
        .sans(sans)
        .pem()
}

async fn create(client: &kube::Client, name: &str, pem: &[u8]) {
    Api::<CertificateSigningRequest>::all(client.clone())
        .create(
            &PostParams::default(),
            &csr_object(
                name,
                SIGNER,
                pem,
                &["digital signature", "client auth"],
                None,
            ),
        )
        .await
        .unwrap_or_else(|e| panic!("create {name}: {e}"));
}

async fn events(env: &Env, name: &str, reason: &str) -> Vec<Event> {
    Api::<Event>::all(env.admin.clone())
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| {
            e.involved_object.name.as_deref() == Some(name) && e.reason.as_deref() == Some(reason)
        })
        .collect()
}

async fn wait_event(env: &Env, name: &str, reason: &str) -> Event {
    for _ in 0..300 {
        if let Some(e) = events(env, name, reason).await.into_iter().next() {
            return e;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no {reason} event for {name}");
}

on_both_servers! {
    async fn approves_what_the_signer_would_sign_for_the_rules_requesters(server) {
        let env = Env::on(server).await;
        grant_approval(&env).await;
        let ca = TestCa::new(KeyType::P256);
        // The signer entry ends with its policy line; autoApprove goes right under it.
        let yaml = settings_yaml(&ca.cert, &ca.key, "", false, "127.0.0.1:0").replacen(
            "controller:\n",
            "  autoApprove: {enabled: true, rules: [{name: team-a, serviceAccountNamespaces: [team-a]}]}\ncontroller:\n",
            1,
        );
        let settings = csr_signer::config::Settings::from_yaml(&yaml, "test.yaml").unwrap();
        let (svc, _stop) = env.start_signer(settings, env.signer_user()).await;
        let (team_a, team_b) = requesters(&env).await;
        let p = |s: &str| format!("aa-{}-{s}", if env.is_real() { "r" } else { "l" });

        // team-a asks for its own names: approved by the rule, then signed.
        let own = spec(&["DNS:app.team-a.svc", "URI:spiffe://cluster.local/ns/team-a/sa/app"]);
        create(&team_a, &p("own"), &own).await;
        let pem = env.wait_certificate(&p("own")).await;
        openssl_verify(&pem, &ca.root, ca.dir.path()).unwrap();
        let csr = env.csrs().get(&p("own")).await.unwrap();
        let approved: Vec<_> = conditions(&csr)
            .into_iter()
            .filter(|c| c.type_ == "Approved")
            .collect();
        assert_eq!(approved.len(), 1);
        assert_eq!(approved[0].reason.as_deref(), Some("AutoApproved"));
        assert!(
            approved[0].message.as_deref().unwrap().contains("rule \"team-a\""),
            "{approved:?}"
        );
        wait_event(&env, &p("own"), "AutoApproved").await;

        // team-a asks for team-b's name: the policy would refuse it, so it is not approved.
        let theirs = spec(&["DNS:app.team-b.svc"]);
        create(&team_a, &p("theirs"), &theirs).await;
        let e = wait_event(&env, &p("theirs"), "NotAutoApproved").await;
        assert!(e.message.as_deref().unwrap().contains("IdentityMismatch"), "{e:?}");

        // team-b asks for its own name: a valid request, but no rule names team-b.
        let b = CsrSpec::new(key(KeyType::P256), &[("CN", TEAM_B)])
            .sans(&["DNS:app.team-b.svc"])
            .pem();
        create(&team_b, &p("team-b"), &b).await;
        let e = wait_event(&env, &p("team-b"), "NotAutoApproved").await;
        assert!(e.message.as_deref().unwrap().contains("matches no auto-approval rule"), "{e:?}");

        // Left pending means pending: no Approved, no Denied, no certificate; a person can still decide.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        for name in [p("theirs"), p("team-b")] {
            let csr = env.csrs().get(&name).await.unwrap();
            assert!(conditions(&csr).is_empty(), "{name}: {:?}", conditions(&csr));
            assert!(!has_certificate(&csr));
            assert_eq!(events(&env, &name, "NotAutoApproved").await.len(), 1, "{name}: reported once");
        }
        env.approve(&p("team-b")).await;
        env.wait_certificate(&p("team-b")).await;

        let text = scrape(svc.listen).await;
        let series = |s: &str| sample(&text, s).unwrap_or(-1.0);
        assert_eq!(series(&format!("csr_signer_auto_approvals_total{{rule=\"team-a\",signer=\"{SIGNER}\"}}")), 1.0, "{text}");
        assert_eq!(series(&format!("csr_signer_not_auto_approved_total{{reason=\"PolicyWouldRefuse\",signer=\"{SIGNER}\"}}")), 1.0);
        assert_eq!(series(&format!("csr_signer_not_auto_approved_total{{reason=\"NoMatchingRule\",signer=\"{SIGNER}\"}}")), 1.0);
        assert_eq!(series(&format!("csr_signer_not_auto_approved_total{{reason=\"AccessReviewDenied\",signer=\"{SIGNER}\"}}")), 0.0);
    }
}
