//! The resources the local API serves: names, scope, versions, and per-resource rules
//! (field selectors, unconditional updates, subresources). Discovery and routing read this table.

use super::status::Gr;

/// Which behaviour a resource gets beyond the generic store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    Csr,
    ClusterTrustBundle,
    /// PodCertificateRequest: create validation, NodeRestriction, the status strategy.
    Pcr,
    Namespace,
    Generic,
    /// SelfSubjectAccessReview and SelfSubjectReview: create-only, answered from the caller's rules or
    /// identity, never stored.
    AccessReview,
    /// SubjectAccessReview: create-only (the caller needs `create` on it), answered from the named
    /// user's rules, never stored.
    SubjectAccessReview,
}

#[derive(Debug)]
pub struct ResourceDef {
    pub group: &'static str,
    /// Served versions, preferred first.
    pub versions: &'static [&'static str],
    pub resource: &'static str,
    pub singular: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    pub subresources: &'static [&'static str],
    pub field_selectors: &'static [&'static str],
    /// A PUT without resourceVersion is accepted (strategy AllowUnconditionalUpdate).
    pub unconditional_update: bool,
    pub behaviour: Behaviour,
    /// Storage key, shared by all versions of the resource.
    pub resource_key: &'static str,
}

impl ResourceDef {
    /// Storage key, shared by all versions of the resource.
    pub fn key(&self) -> &'static str {
        self.resource_key
    }

    pub fn gr(&self) -> Gr<'static> {
        Gr {
            group: self.group,
            resource: self.resource,
            kind: self.kind,
        }
    }

    pub fn api_version(&self, version: &str) -> String {
        if self.group.is_empty() {
            version.to_string()
        } else {
            format!("{}/{}", self.group, version)
        }
    }

    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }
}

pub const ALL_VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

const NS_FIELDS: &[&str] = &["metadata.name", "metadata.namespace"];

pub static RESOURCES: &[ResourceDef] = &[
    ResourceDef {
        group: "authentication.k8s.io",
        versions: &["v1"],
        resource: "selfsubjectreviews",
        singular: "selfsubjectreview",
        kind: "SelfSubjectReview",
        namespaced: false,
        short_names: &[],
        subresources: &[],
        field_selectors: &[],
        unconditional_update: true,
        behaviour: Behaviour::AccessReview,
        resource_key: "authentication.k8s.io/selfsubjectreviews",
    },
    ResourceDef {
        group: "authorization.k8s.io",
        versions: &["v1"],
        resource: "selfsubjectaccessreviews",
        singular: "selfsubjectaccessreview",
        kind: "SelfSubjectAccessReview",
        namespaced: false,
        short_names: &[],
        subresources: &[],
        field_selectors: &[],
        unconditional_update: true,
        behaviour: Behaviour::AccessReview,
        resource_key: "authorization.k8s.io/selfsubjectaccessreviews",
    },
    ResourceDef {
        group: "authorization.k8s.io",
        versions: &["v1"],
        resource: "subjectaccessreviews",
        singular: "subjectaccessreview",
        kind: "SubjectAccessReview",
        namespaced: false,
        short_names: &[],
        subresources: &[],
        field_selectors: &[],
        unconditional_update: true,
        behaviour: Behaviour::SubjectAccessReview,
        resource_key: "authorization.k8s.io/subjectaccessreviews",
    },
    ResourceDef {
        group: "certificates.k8s.io",
        versions: &["v1"],
        resource: "certificatesigningrequests",
        singular: "certificatesigningrequest",
        kind: "CertificateSigningRequest",
        namespaced: false,
        short_names: &["csr"],
        subresources: &["status", "approval"],
        field_selectors: &["metadata.name", "spec.signerName"],
        unconditional_update: true,
        behaviour: Behaviour::Csr,
        resource_key: "certificates.k8s.io/certificatesigningrequests",
    },
    ResourceDef {
        group: "certificates.k8s.io",
        versions: &["v1", "v1beta1"],
        resource: "clustertrustbundles",
        singular: "clustertrustbundle",
        kind: "ClusterTrustBundle",
        namespaced: false,
        short_names: &[],
        subresources: &[],
        field_selectors: &["metadata.name", "spec.signerName"],
        unconditional_update: true,
        behaviour: Behaviour::ClusterTrustBundle,
        resource_key: "certificates.k8s.io/clustertrustbundles",
    },
    ResourceDef {
        group: "certificates.k8s.io",
        versions: &["v1", "v1beta1"],
        resource: "podcertificaterequests",
        singular: "podcertificaterequest",
        kind: "PodCertificateRequest",
        namespaced: true,
        short_names: &[],
        subresources: &["status"],
        // The v1 and v1beta1 field label conversion functions (metadata.namespace is not one).
        field_selectors: &[
            "metadata.name",
            "spec.signerName",
            "spec.podName",
            "spec.nodeName",
        ],
        unconditional_update: false,
        behaviour: Behaviour::Pcr,
        resource_key: "certificates.k8s.io/podcertificaterequests",
    },
    ResourceDef {
        group: "coordination.k8s.io",
        versions: &["v1"],
        resource: "leases",
        singular: "lease",
        kind: "Lease",
        namespaced: true,
        short_names: &[],
        subresources: &[],
        field_selectors: NS_FIELDS,
        unconditional_update: false,
        behaviour: Behaviour::Generic,
        resource_key: "coordination.k8s.io/leases",
    },
    ResourceDef {
        group: "events.k8s.io",
        versions: &["v1"],
        resource: "events",
        singular: "event",
        kind: "Event",
        namespaced: true,
        short_names: &["ev"],
        subresources: &[],
        field_selectors: &[
            "metadata.name",
            "metadata.namespace",
            "reason",
            "type",
            "reportingController",
            "regarding.kind",
            "regarding.name",
            "regarding.namespace",
            "regarding.uid",
        ],
        unconditional_update: true,
        behaviour: Behaviour::Generic,
        resource_key: "events.k8s.io/events",
    },
    ResourceDef {
        group: "",
        versions: &["v1"],
        resource: "events",
        singular: "event",
        kind: "Event",
        namespaced: true,
        short_names: &["ev"],
        subresources: &[],
        field_selectors: &[
            "metadata.name",
            "metadata.namespace",
            "reason",
            "type",
            "source",
            "reportingComponent",
            "involvedObject.kind",
            "involvedObject.name",
            "involvedObject.namespace",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
        ],
        unconditional_update: true,
        behaviour: Behaviour::Generic,
        resource_key: "core/events",
    },
    ResourceDef {
        group: "",
        versions: &["v1"],
        resource: "configmaps",
        singular: "configmap",
        kind: "ConfigMap",
        namespaced: true,
        short_names: &["cm"],
        subresources: &[],
        field_selectors: NS_FIELDS,
        unconditional_update: true,
        behaviour: Behaviour::Generic,
        resource_key: "core/configmaps",
    },
    ResourceDef {
        group: "",
        versions: &["v1"],
        resource: "namespaces",
        singular: "namespace",
        kind: "Namespace",
        namespaced: false,
        short_names: &["ns"],
        subresources: &["status"],
        field_selectors: &["metadata.name", "status.phase"],
        unconditional_update: true,
        behaviour: Behaviour::Namespace,
        resource_key: "core/namespaces",
    },
    ResourceDef {
        group: "",
        versions: &["v1"],
        resource: "nodes",
        singular: "node",
        kind: "Node",
        namespaced: false,
        short_names: &["no"],
        subresources: &["status"],
        field_selectors: &["metadata.name", "spec.unschedulable"],
        unconditional_update: true,
        behaviour: Behaviour::Generic,
        resource_key: "core/nodes",
    },
    ResourceDef {
        group: "",
        versions: &["v1"],
        resource: "pods",
        singular: "pod",
        kind: "Pod",
        namespaced: true,
        short_names: &["po"],
        subresources: &["status"],
        field_selectors: &[
            "metadata.name",
            "metadata.namespace",
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.podIPs",
            "status.nominatedNodeName",
        ],
        unconditional_update: true,
        behaviour: Behaviour::Generic,
        resource_key: "core/pods",
    },
    ResourceDef {
        group: "",
        versions: &["v1"],
        resource: "serviceaccounts",
        singular: "serviceaccount",
        kind: "ServiceAccount",
        namespaced: true,
        short_names: &["sa"],
        subresources: &[],
        field_selectors: NS_FIELDS,
        unconditional_update: true,
        behaviour: Behaviour::Generic,
        resource_key: "core/serviceaccounts",
    },
];

/// Groups in discovery order, with their versions (preferred first).
pub fn groups() -> Vec<(&'static str, Vec<&'static str>)> {
    let mut out: Vec<(&'static str, Vec<&'static str>)> = Vec::new();
    for r in RESOURCES.iter().filter(|r| !r.group.is_empty()) {
        let entry = match out.iter_mut().find(|(g, _)| *g == r.group) {
            Some(e) => e,
            None => {
                out.push((r.group, Vec::new()));
                let last = out.len() - 1;
                &mut out[last]
            }
        };
        for v in r.versions {
            if !entry.1.contains(v) {
                entry.1.push(v);
            }
        }
    }
    out
}

pub fn find(group: &str, version: &str, resource: &str) -> Option<&'static ResourceDef> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.resource == resource && r.versions.contains(&version))
}

pub fn by_key(key: &str) -> Option<&'static ResourceDef> {
    RESOURCES.iter().find(|r| r.resource_key == key)
}

pub fn group_version_served(group: &str, version: &str) -> bool {
    RESOURCES
        .iter()
        .any(|r| r.group == group && r.versions.contains(&version))
}
