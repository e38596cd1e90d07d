//! Authentication (bearer token → user) and RBAC-style authorization, including the synthetic
//! `signers` resource used by the CSR admission plugins (`approve`, `sign`, `attest`).

use std::collections::BTreeMap;

use rand::Rng;

/// One RBAC policy rule (a ClusterRole rule when `namespaces` is None, a Role rule bound in the
/// listed namespaces otherwise).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub api_groups: Vec<String>,
    pub resources: Vec<String>,
    pub verbs: Vec<String>,
    pub resource_names: Vec<String>,
    pub namespaces: Option<Vec<String>>,
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

impl Rule {
    /// A cluster-wide rule: `Rule::new(&["certificates.k8s.io"], &["certificatesigningrequests"], &["get"])`.
    pub fn new(api_groups: &[&str], resources: &[&str], verbs: &[&str]) -> Self {
        Rule {
            api_groups: strings(api_groups),
            resources: strings(resources),
            verbs: strings(verbs),
            resource_names: Vec::new(),
            namespaces: None,
        }
    }

    /// Restricts the rule to these object names (RBAC `resourceNames`, exact match).
    pub fn names(mut self, names: &[&str]) -> Self {
        self.resource_names = strings(names);
        self
    }

    /// Makes the rule a namespaced Role rule bound in these namespaces.
    pub fn in_namespaces(mut self, namespaces: &[&str]) -> Self {
        self.namespaces = Some(strings(namespaces));
        self
    }

    fn matches(&self, a: &Attributes<'_>) -> bool {
        if let Some(nss) = &self.namespaces {
            if a.namespace.is_empty() || !nss.iter().any(|n| n == a.namespace) {
                return false;
            }
        }
        let verb_ok = self.verbs.iter().any(|v| v == "*" || v == a.verb);
        let group_ok = self.api_groups.iter().any(|g| g == "*" || g == a.group);
        let combined = if a.subresource.is_empty() {
            a.resource.to_string()
        } else {
            format!("{}/{}", a.resource, a.subresource)
        };
        let res_ok = self.resources.iter().any(|r| {
            r == "*"
                || *r == combined
                || (!a.subresource.is_empty() && r.strip_prefix("*/") == Some(a.subresource))
        });
        let name_ok = self.resource_names.is_empty()
            || (!a.name.is_empty() && self.resource_names.iter().any(|n| n == a.name));
        verb_ok && group_ok && res_ok && name_ok
    }
}

/// An authenticated identity with its token and RBAC rules.
#[derive(Debug, Clone)]
pub struct User {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
    pub extra: BTreeMap<String, Vec<String>>,
    pub token: String,
    pub rules: Vec<Rule>,
}

fn random_token() -> String {
    let mut b = [0u8; 24];
    rand::rng().fill(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl User {
    /// A user with a random token, group `system:authenticated` and no rules.
    pub fn new(name: &str) -> Self {
        User {
            name: name.to_string(),
            uid: uuid::Uuid::new_v4().to_string(),
            groups: vec!["system:authenticated".to_string()],
            extra: BTreeMap::new(),
            token: random_token(),
            rules: Vec::new(),
        }
    }

    /// `system:serviceaccount:<ns>:<sa>` with the service-account groups kube-apiserver assigns,
    /// and the `authentication.kubernetes.io/credential-id` extra (`JTI=<token id>`) it adds for a
    /// service-account token.
    pub fn service_account(namespace: &str, name: &str) -> Self {
        let mut u = User::new(&format!("system:serviceaccount:{namespace}:{name}"));
        u.groups = vec![
            "system:serviceaccounts".to_string(),
            format!("system:serviceaccounts:{namespace}"),
            "system:authenticated".to_string(),
        ];
        let jti = format!("JTI={}", uuid::Uuid::new_v4());
        // kube-apiserver's bootstrap policy binds system:cluster-trust-bundle-discovery (read
        // clustertrustbundles) to the group system:serviceaccounts whenever the API is served.
        u.with_extra("authentication.kubernetes.io/credential-id", &[&jti])
            .with_rule(Rule::new(
                &[CERTS],
                &["clustertrustbundles"],
                &["get", "list", "watch"],
            ))
    }

    /// A kubelet's identity `system:node:<name>` in group `system:nodes`: the Node authorizer and
    /// NodeRestriction admission apply to it (for PodCertificateRequests).
    pub fn node(name: &str) -> Self {
        User::new(&format!("system:node:{name}")).with_groups(&["system:nodes"])
    }

    /// The user of a request without credentials (anonymous authentication, on by default in
    /// kube-apiserver): no rules, so everything but the health and version endpoints is forbidden.
    pub fn anonymous() -> Self {
        User {
            name: ANONYMOUS.to_string(),
            uid: String::new(),
            groups: vec!["system:unauthenticated".to_string()],
            extra: BTreeMap::new(),
            token: String::new(),
            rules: Vec::new(),
        }
    }

    pub fn is_anonymous(&self) -> bool {
        self.name == ANONYMOUS && self.token.is_empty()
    }

    /// Adds groups before `system:authenticated` (which stays last, as kube-apiserver orders it).
    pub fn with_groups(mut self, groups: &[&str]) -> Self {
        let auth = self.groups.pop();
        self.groups.extend(strings(groups));
        if let Some(a) = auth {
            self.groups.push(a);
        }
        self
    }

    pub fn with_rule(mut self, rule: Rule) -> Self {
        self.rules.push(rule);
        self
    }

    pub fn with_token(mut self, token: &str) -> Self {
        self.token = token.to_string();
        self
    }

    pub fn with_extra(mut self, key: &str, values: &[&str]) -> Self {
        self.extra.insert(key.to_string(), strings(values));
        self
    }

    pub fn is_master(&self) -> bool {
        self.groups.iter().any(|g| g == "system:masters")
    }

    pub fn allowed(&self, a: &Attributes<'_>) -> bool {
        self.is_master() || self.rules.iter().any(|r| r.matches(a))
    }

    /// `IsAuthorizedForSignerName`: verb on `signers/<name>`, then on `signers/<domain>/*`.
    pub fn allowed_for_signer(&self, verb: &str, signer_name: &str) -> bool {
        let mut a = Attributes {
            verb,
            group: "certificates.k8s.io",
            resource: "signers",
            subresource: "",
            name: signer_name,
            namespace: "",
        };
        if self.allowed(&a) {
            return true;
        }
        let domain = signer_name.split('/').next().unwrap_or("");
        let wildcard = format!("{domain}/*");
        a.name = &wildcard;
        self.allowed(&a)
    }
}

/// Authorization attributes of one resource request.
#[derive(Debug, Clone)]
pub struct Attributes<'a> {
    pub verb: &'a str,
    pub group: &'a str,
    pub resource: &'a str,
    pub subresource: &'a str,
    pub name: &'a str,
    pub namespace: &'a str,
}

impl Attributes<'_> {
    /// responsewriters.forbiddenMessage.
    pub fn forbidden_message(&self, user: &str) -> String {
        let resource = if self.subresource.is_empty() {
            self.resource.to_string()
        } else {
            format!("{}/{}", self.resource, self.subresource)
        };
        if self.namespace.is_empty() {
            format!(
                "User {:?} cannot {} resource {:?} in API group {:?} at the cluster scope",
                user, self.verb, resource, self.group
            )
        } else {
            format!(
                "User {:?} cannot {} resource {:?} in API group {:?} in the namespace {:?}",
                user, self.verb, resource, self.group, self.namespace
            )
        }
    }
}

const CERTS: &str = "certificates.k8s.io";
const CSRS: &str = "certificatesigningrequests";

/// kube-apiserver's name for unauthenticated requests.
pub const ANONYMOUS: &str = "system:anonymous";

/// The signer's service account name.
pub const SIGNER_USER: &str = "system:serviceaccount:csr-signer:csr-signer";

/// The default users of a local API: admin, developer, approver, the signer, and two
/// service-account requesters (`team-a:app`, `team-b:app`).
pub fn default_users() -> Vec<User> {
    let read = &["get", "list", "watch"];
    vec![
        User::new("admin").with_groups(&["system:masters"]),
        User::new("developer").with_rule(Rule::new(
            &[CERTS],
            &[CSRS],
            &["create", "get", "list", "watch"],
        )),
        User::new("approver")
            .with_rule(Rule::new(&[CERTS], &[CSRS], read))
            .with_rule(Rule::new(
                &[CERTS],
                &["certificatesigningrequests/approval"],
                &["update", "patch"],
            ))
            .with_rule(Rule::new(&[CERTS], &["signers"], &["approve"]).names(&["example.com/*"])),
        signer_user(SIGNER_USER, &["example.com/mtls"]),
        User::service_account("team-a", "app").with_rule(Rule::new(
            &[CERTS],
            &[CSRS],
            &["create", "get", "list", "watch"],
        )),
        User::service_account("team-b", "app").with_rule(Rule::new(
            &[CERTS],
            &[CSRS],
            &["create", "get", "list", "watch"],
        )),
    ]
}

/// The RBAC the signer's Helm chart grants, for a given identity and signerNames.
pub fn signer_user(name: &str, signer_names: &[&str]) -> User {
    let base = match name
        .strip_prefix("system:serviceaccount:")
        .and_then(|r| r.split_once(':'))
    {
        Some((ns, sa)) => User::service_account(ns, sa),
        None => User::new(name),
    };
    let lease_ns = name
        .strip_prefix("system:serviceaccount:")
        .and_then(|r| r.split(':').next())
        .unwrap_or("csr-signer")
        .to_string();
    base.with_rule(Rule::new(&[CERTS], &[CSRS], &["get", "list", "watch"]))
        .with_rule(Rule::new(
            &[CERTS],
            &["certificatesigningrequests/status"],
            &["update", "patch"],
        ))
        .with_rule(Rule::new(
            &[CERTS],
            &["podcertificaterequests"],
            &["get", "list", "watch"],
        ))
        .with_rule(Rule::new(
            &[CERTS],
            &["podcertificaterequests/status"],
            &["update", "patch"],
        ))
        .with_rule(Rule::new(&[CERTS], &["signers"], &["sign", "attest"]).names(signer_names))
        .with_rule(Rule::new(
            &[CERTS],
            &["clustertrustbundles"],
            &[
                "get", "list", "watch", "create", "update", "patch", "delete",
            ],
        ))
        .with_rule(Rule::new(
            &["", "events.k8s.io"],
            &["events"],
            &["create", "patch", "update"],
        ))
        .with_rule(
            Rule::new(
                &["coordination.k8s.io"],
                &["leases"],
                &["get", "list", "watch", "create", "update", "patch"],
            )
            .in_namespaces(&[lease_ns.as_str()]),
        )
        .with_rule(
            Rule::new(&[""], &["configmaps"], &["get", "list", "watch"])
                .in_namespaces(&[lease_ns.as_str()]),
        )
        // With trustBundles.configMaps: the selected namespaces, and our ConfigMap in each of them.
        .with_rule(Rule::new(&[""], &["namespaces"], &["get", "list", "watch"]))
        .with_rule(Rule::new(
            &[""],
            &["configmaps"],
            &["get", "list", "watch", "create", "patch", "delete"],
        ))
}
