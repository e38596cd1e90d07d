//! Auto-approval (`signers[i].autoApprove`): whether csr-signer approves a pending CSR of one of its own
//! signerNames, decided without IO.
//!
//! Safe by construction: a CSR is approved only when (1) its requester — `spec.username`/`spec.groups`,
//! stamped by kube-apiserver — matches a configured rule, (2) the signer's own engine would sign it for
//! that requester (the very decision `sign` makes, through `SignerEngine::explain`, so approval and signing
//! cannot disagree) and (3) a SubjectAccessReview, done by the caller, confirms the requester may create
//! CSRs (and, optionally, holds a custom verb on the signer). Nothing is ever denied automatically: a CSR
//! that is not approved stays pending, with an event saying why, for a person to decide.
//!
//! Must not: do IO, read a clock, import kube.

use serde::{Deserialize, Serialize};

use crate::engine::Explanation;
use crate::policy::{is_dns_label, Requester};

/// The `autoApprove:` block of a signer as written.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct AutoApproveSettings {
    pub enabled: bool,
    /// Who may be approved; the first rule that matches names the approval.
    pub rules: Vec<RuleSettings>,
    /// Also require a SubjectAccessReview: the requester may `create` certificatesigningrequests
    /// (on by default; a second opinion from the cluster's own authorizer).
    #[serde(default = "yes")]
    pub access_review: bool,
    /// Optionally also require this verb on `certificates.k8s.io/signers` named by the signerName
    /// (for example `request`), so RBAC decides who may get certificates from this signer.
    pub signer_verb: Option<String>,
}

fn yes() -> bool {
    true
}

/// One rule: a requester matches when any of its lists does.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct RuleSettings {
    /// Metric label and event text: a DNS label.
    pub name: String,
    /// Service accounts of these namespaces.
    pub service_account_namespaces: Vec<String>,
    /// These service accounts, as `namespace/name`.
    pub service_accounts: Vec<String>,
    /// Members of these groups.
    pub groups: Vec<String>,
    /// These usernames.
    pub users: Vec<String>,
}

/// A validated `autoApprove` block; exists only when enabled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AutoApprove {
    rules: Vec<RuleSettings>,
    access_review: bool,
    signer_verb: Option<String>,
}

/// A problem in the block; `key` is relative to `autoApprove`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingError {
    pub key: String,
    pub message: String,
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> SettingError {
    SettingError {
        key: key.into(),
        message: message.into(),
    }
}

impl AutoApproveSettings {
    /// `None` when disabled.
    pub fn validate(&self) -> Result<Option<AutoApprove>, SettingError> {
        if !self.enabled {
            return Ok(None);
        }
        if self.rules.is_empty() {
            return Err(invalid(
                "rules",
                "auto-approval needs at least one rule (approving every requester is what it exists to avoid)",
            ));
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, r) in self.rules.iter().enumerate() {
            let key = |k: &str| format!("rules[{i}].{k}");
            if !is_dns_label(&r.name) {
                return Err(invalid(
                    key("name"),
                    format!(
                        "{:?} must be a DNS label: it becomes a metric label",
                        r.name
                    ),
                ));
            }
            if !names.insert(r.name.as_str()) {
                return Err(invalid(key("name"), format!("duplicate rule {:?}", r.name)));
            }
            if r.service_account_namespaces.is_empty()
                && r.service_accounts.is_empty()
                && r.groups.is_empty()
                && r.users.is_empty()
            {
                return Err(invalid(
                    key("name"),
                    "the rule matches nobody: list serviceAccountNamespaces, serviceAccounts, groups or users",
                ));
            }
            for (j, ns) in r.service_account_namespaces.iter().enumerate() {
                if !is_dns_label(ns) {
                    return Err(invalid(
                        key(&format!("serviceAccountNamespaces[{j}]")),
                        format!("{ns:?} is not a namespace name"),
                    ));
                }
            }
            for (j, sa) in r.service_accounts.iter().enumerate() {
                let ok = sa
                    .split_once('/')
                    .is_some_and(|(ns, name)| is_dns_label(ns) && is_subdomain(name));
                if !ok {
                    return Err(invalid(
                        key(&format!("serviceAccounts[{j}]")),
                        format!("{sa:?} must be namespace/name"),
                    ));
                }
            }
            // Approving on behalf of everyone authenticated is the blanket approval this avoids.
            for (j, g) in r.groups.iter().enumerate() {
                if g.is_empty()
                    || ["system:authenticated", "system:unauthenticated"].contains(&g.as_str())
                {
                    return Err(invalid(
                        key(&format!("groups[{j}]")),
                        format!("{g:?} would approve requests from everyone"),
                    ));
                }
            }
            if let Some((j, _)) = r.users.iter().enumerate().find(|(_, u)| u.is_empty()) {
                return Err(invalid(key(&format!("users[{j}]")), "empty username"));
            }
        }
        if let Some(v) = &self.signer_verb {
            if v.is_empty() || !v.bytes().all(|b| b.is_ascii_lowercase() || b == b'-') {
                return Err(invalid(
                    "signerVerb",
                    format!("{v:?} must be a lower-case verb"),
                ));
            }
        }
        Ok(Some(AutoApprove {
            rules: self.rules.clone(),
            access_review: self.access_review,
            signer_verb: self.signer_verb.clone(),
        }))
    }
}

fn is_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// Why a pending CSR was not approved. The string form is the `reason` metric label and event text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NotApproved {
    /// The requester matches no rule.
    NoMatchingRule,
    /// The signer's policy would refuse the request (the refusal reason is in the message).
    PolicyWouldRefuse,
    /// The SubjectAccessReview said no.
    AccessReviewDenied,
}

impl NotApproved {
    pub const ALL: [NotApproved; 3] = [
        NotApproved::NoMatchingRule,
        NotApproved::PolicyWouldRefuse,
        NotApproved::AccessReviewDenied,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            NotApproved::NoMatchingRule => "NoMatchingRule",
            NotApproved::PolicyWouldRefuse => "PolicyWouldRefuse",
            NotApproved::AccessReviewDenied => "AccessReviewDenied",
        }
    }
}

/// A SubjectAccessReview the caller must pass before approving: `verb` on `resource` (group
/// `certificates.k8s.io`), for the requester.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessCheck {
    pub verb: String,
    pub resource: &'static str,
    /// The object's name (the signerName for `signers`), if any.
    pub name: Option<String>,
}

/// The decision before any access review.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Approval {
    /// Approve, once every check has passed, naming the rule.
    Approve {
        rule: String,
        checks: Vec<AccessCheck>,
    },
    /// Leave it pending, saying why.
    Leave {
        reason: NotApproved,
        message: String,
    },
}

impl AutoApprove {
    /// What `check-config` prints.
    pub fn describe(&self) -> serde_json::Value {
        serde_json::json!({
            "rules": self.rules,
            "accessReview": self.access_review,
            "signerVerb": self.signer_verb,
        })
    }

    pub fn rule_names(&self) -> impl Iterator<Item = &str> {
        self.rules.iter().map(|r| r.name.as_str())
    }

    /// The first rule the requester matches.
    fn rule_for(&self, who: &Requester<'_>) -> Option<&RuleSettings> {
        let sa = who.service_account();
        self.rules.iter().find(|r| {
            sa.is_some_and(|(ns, name)| {
                r.service_account_namespaces.iter().any(|n| n == ns)
                    || r.service_accounts
                        .iter()
                        .any(|s| s.split_once('/') == Some((ns, name)))
            }) || r.users.iter().any(|u| u == who.username)
                || r.groups.iter().any(|g| who.groups.contains(g))
        })
    }

    /// Decides for one pending CSR of `signer`, given what the signer's engine would do with it.
    pub fn decide(&self, signer: &str, who: &Requester<'_>, explanation: &Explanation) -> Approval {
        let Some(rule) = self.rule_for(who) else {
            return Approval::Leave {
                reason: NotApproved::NoMatchingRule,
                message: format!(
                    "requester {:?} matches no auto-approval rule of {signer}; a person must decide",
                    who.username
                ),
            };
        };
        if let Explanation::Refused(r) = explanation {
            return Approval::Leave {
                reason: NotApproved::PolicyWouldRefuse,
                message: format!(
                    "not auto-approved: {signer} would refuse it ({}: {}); a person may still approve, and the signer will then fail it",
                    r.reason, r.message
                ),
            };
        }
        let mut checks = Vec::new();
        if self.access_review {
            checks.push(AccessCheck {
                verb: "create".into(),
                resource: "certificatesigningrequests",
                name: None,
            });
        }
        if let Some(v) = &self.signer_verb {
            checks.push(AccessCheck {
                verb: v.clone(),
                resource: "signers",
                name: Some(signer.to_string()),
            });
        }
        Approval::Approve {
            rule: rule.name.clone(),
            checks,
        }
    }
}

/// The message of the `Approved` condition (reason `AutoApproved`).
pub fn approved_message(signer: &str, rule: &str) -> String {
    format!("auto-approved by csr-signer rule {rule:?} of {signer}: the requester matches the rule and the signer's policy allows the request")
}

/// The reason of the `Approved` condition csr-signer writes.
pub const APPROVED_REASON: &str = "AutoApproved";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Grant;
    use crate::refusal::{Reason, Refusal};

    fn settings(yaml: &str) -> Result<Option<AutoApprove>, SettingError> {
        let s: AutoApproveSettings = serde_yaml::from_str(yaml).expect("yaml");
        s.validate()
    }

    fn approver(yaml: &str) -> AutoApprove {
        settings(yaml).expect("valid").expect("enabled")
    }

    fn grant() -> Explanation {
        Explanation::Grant(Grant {
            usages: Vec::new(),
            lifetime: std::time::Duration::from_secs(3600),
            requested: None,
            lifetime_outcome: crate::policy::LifetimeOutcome::Defaulted,
            sans: Vec::new(),
        })
    }

    const RULES: &str = "{enabled: true, rules: [{name: team-a, serviceAccountNamespaces: [team-a]}, {name: ops, groups: [ops], users: [alice], serviceAccounts: [infra/deployer]}]}";

    #[test]
    fn the_first_matching_rule_names_the_approval() {
        let a = approver(RULES);
        let groups = ["system:serviceaccounts".to_string()];
        for (user, groups, rule) in [
            (
                "system:serviceaccount:team-a:app",
                &groups[..],
                Some("team-a"),
            ),
            (
                "system:serviceaccount:infra:deployer",
                &groups[..],
                Some("ops"),
            ),
            ("system:serviceaccount:infra:other", &groups[..], None),
            ("system:serviceaccount:team-b:app", &groups[..], None),
            ("alice", &[][..], Some("ops")),
            ("bob", &["ops".to_string()][..], Some("ops")),
            ("bob", &["dev".to_string()][..], None),
            // A user literally named like a service account is not one without the prefix.
            ("team-a:app", &[][..], None),
        ] {
            let who = Requester {
                username: user,
                groups,
            };
            match (a.decide("example.com/mtls", &who, &grant()), rule) {
                (Approval::Approve { rule: got, checks }, Some(want)) => {
                    assert_eq!(got, want, "{user}");
                    assert_eq!(checks.len(), 1, "the create review is on by default");
                }
                (Approval::Leave { reason, .. }, None) => {
                    assert_eq!(reason, NotApproved::NoMatchingRule, "{user}")
                }
                (got, want) => panic!("{user}: {got:?}, expected {want:?}"),
            }
        }
    }

    #[test]
    fn a_request_the_policy_refuses_is_never_approved() {
        let a = approver(RULES);
        let who = Requester {
            username: "system:serviceaccount:team-a:app",
            groups: &[],
        };
        let refused = Explanation::Refused(Refusal::new(Reason::IdentityMismatch, "not yours"));
        match a.decide("example.com/mtls", &who, &refused) {
            Approval::Leave { reason, message } => {
                assert_eq!(reason, NotApproved::PolicyWouldRefuse);
                assert!(message.contains("IdentityMismatch: not yours"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn checks_follow_the_settings() {
        let a = approver("{enabled: true, accessReview: false, signerVerb: request, rules: [{name: r, users: [u]}]}");
        let who = Requester {
            username: "u",
            groups: &[],
        };
        assert_eq!(
            a.decide("example.com/mtls", &who, &grant()),
            Approval::Approve {
                rule: "r".into(),
                checks: vec![AccessCheck {
                    verb: "request".into(),
                    resource: "signers",
                    name: Some("example.com/mtls".into()),
                }],
            }
        );
    }

    #[test]
    fn bad_settings_name_the_key() {
        for (yaml, key) in [
            ("{enabled: true}", "rules"),
            (
                "{enabled: true, rules: [{name: A, users: [u]}]}",
                "rules[0].name",
            ),
            ("{enabled: true, rules: [{name: a}]}", "rules[0].name"),
            (
                "{enabled: true, rules: [{name: a, users: [u]}, {name: a, users: [v]}]}",
                "rules[1].name",
            ),
            (
                "{enabled: true, rules: [{name: a, groups: [system:authenticated]}]}",
                "rules[0].groups[0]",
            ),
            (
                "{enabled: true, rules: [{name: a, serviceAccounts: [nons]}]}",
                "rules[0].serviceAccounts[0]",
            ),
            (
                "{enabled: true, rules: [{name: a, serviceAccountNamespaces: [Bad]}]}",
                "rules[0].serviceAccountNamespaces[0]",
            ),
            (
                "{enabled: true, signerVerb: 'Get It', rules: [{name: a, users: [u]}]}",
                "signerVerb",
            ),
        ] {
            let e = settings(yaml).expect_err(yaml);
            assert_eq!(e.key, key, "{yaml}: {}", e.message);
        }
        assert_eq!(settings("{}").expect("valid"), None);
    }
}
