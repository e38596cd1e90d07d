//! Name patterns that may name the requester: `{serviceaccount}.{namespace}.svc`, `*.example.com`,
//! `spiffe://cluster.local/ns/{namespace}/sa/{serviceaccount}`.
//!
//! Responsible for parsing a pattern once (at configuration time, so a typo stops startup), for
//! matching a value against it with the placeholders bound to an identity, and for the rule that
//! makes a pattern name at most one identity: every placeholder (and `*`) fills exactly one segment of
//! the name (no separator inside: `.` in DNS names and commonNames, `/` in URIs), and two of them are
//! always parted by a literal holding the separator. Without it `{namespace}-{serviceaccount}.x`
//! reads `a-b-c.x` for namespace `a-b` and for service account `b-c`. It does not know what a
//! mismatch means: choosing the reason is `decide`'s job.

/// Which kind of name a pattern is for: it fixes the separator and what a placeholder may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    /// `subject.commonNames`: segments parted by `.`, otherwise free text.
    CommonName,
    /// `sans.dns`: a placeholder fills one DNS label.
    Dns,
    /// `sans.uri`: a placeholder fills one path segment (SPIFFE's character set).
    Uri,
}

impl Field {
    /// The character no placeholder value may contain, and that must part two placeholders.
    pub fn separator(self) -> char {
        match self {
            Field::Uri => '/',
            Field::CommonName | Field::Dns => '.',
        }
    }

    fn segment(self) -> &'static str {
        match self {
            Field::Uri => "path segment",
            Field::CommonName | Field::Dns => "label",
        }
    }
}

/// One parsed element of a pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    Literal(String),
    /// `*`: one or more characters, never the separator.
    Star,
    Namespace,
    ServiceAccount,
    Username,
}

impl Piece {
    fn is_literal(&self) -> bool {
        matches!(self, Piece::Literal(_))
    }

    /// How the piece is written in a pattern.
    fn written(&self) -> &str {
        match self {
            Piece::Literal(l) => l,
            Piece::Star => "*",
            Piece::Namespace => "{namespace}",
            Piece::ServiceAccount => "{serviceaccount}",
            Piece::Username => "{username}",
        }
    }
}

/// A validated pattern (see the module docs for examples).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    source: String,
    field: Field,
    pieces: Vec<Piece>,
}

/// How placeholders are bound while matching.
#[derive(Clone, Copy, Debug)]
pub enum Binding<'a> {
    /// The requester's identity: a placeholder matches only its own value. A requester that is not a
    /// service account has no namespace or service account, so those placeholders never match.
    Identity {
        username: &'a str,
        /// `(namespace, name)` when the requester is a service account.
        service_account: Option<(&'a str, &'a str)>,
    },
    /// A trusted requester (or the "would this match anyone" check): any valid single segment.
    Any,
}

/// How a value fits a pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fit {
    No,
    Yes,
    /// The value has the pattern's shape, but what a placeholder holds cannot be certified (the
    /// reason, naming the placeholder and the value).
    Unusable(String),
}

impl Template {
    /// Parses a pattern for `field`; the error names the pattern and what is wrong with it.
    pub fn parse(s: &str, field: Field) -> Result<Template, String> {
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut rest = s;
        while let Some(c) = rest.chars().next() {
            if c == '{' {
                let end = rest
                    .find('}')
                    .ok_or_else(|| format!("{s:?}: unclosed '{{'"))?;
                let piece = match &rest[1..end] {
                    "namespace" => Piece::Namespace,
                    "serviceaccount" => Piece::ServiceAccount,
                    "username" => Piece::Username,
                    other => {
                        return Err(format!(
                            "{s:?}: unknown placeholder {{{other}}} (known: {{namespace}}, {{serviceaccount}}, {{username}})"
                        ))
                    }
                };
                if !literal.is_empty() {
                    pieces.push(Piece::Literal(std::mem::take(&mut literal)));
                }
                pieces.push(piece);
                rest = &rest[end + 1..];
            } else if c == '*' {
                if !literal.is_empty() {
                    pieces.push(Piece::Literal(std::mem::take(&mut literal)));
                }
                pieces.push(Piece::Star);
                rest = &rest[1..];
            } else {
                literal.push(c);
                rest = &rest[c.len_utf8()..];
            }
        }
        if !literal.is_empty() {
            pieces.push(Piece::Literal(literal));
        }
        if pieces.is_empty() {
            return Err("empty pattern".into());
        }
        // Two wildcards must be parted by the separator, or the pattern expands alike for two
        // identities; side by side ("**") each extra one also multiplies the matching work.
        let sep = field.separator();
        let wildcards: Vec<(usize, &Piece)> = pieces
            .iter()
            .enumerate()
            .filter(|(_, p)| !p.is_literal())
            .collect();
        for w in wildcards.windows(2) {
            let ((i, a), (j, b)) = (w[0], w[1]);
            let between: String = pieces[i + 1..j].iter().map(Piece::written).collect();
            // Two `*` take anything either way, so how they split a value names no one; they only
            // need something between them to bound the matching work.
            let both_stars = *a == Piece::Star && *b == Piece::Star;
            if between.is_empty() || (!both_stars && !between.contains(sep)) {
                return Err(format!(
                    "{s:?}: {} and {} must be separated by text containing {sep:?} (with {:?} between them, two different identities can expand to the same name)",
                    a.written(),
                    b.written(),
                    between
                ));
            }
        }
        Ok(Template {
            source: s.to_owned(),
            field,
            pieces,
        })
    }

    /// The pattern as configured.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether the pattern has a placeholder, i.e. ties the value to who asked.
    pub fn binds_identity(&self) -> bool {
        self.pieces.iter().any(|p| {
            matches!(
                p,
                Piece::Namespace | Piece::ServiceAccount | Piece::Username
            )
        })
    }

    /// `{username}` alone as a commonName: the whole value is the requester's name, whatever it
    /// holds (`alice@example.com`, `system:node:n1`), and no other piece can be confused with it.
    fn is_whole_username(&self) -> bool {
        self.field == Field::CommonName && self.pieces == [Piece::Username]
    }

    /// How `value` fits the pattern with the placeholders bound as `who` says.
    pub fn fit(&self, value: &str, who: &Binding<'_>) -> Fit {
        let sep = self.field.separator();
        let mut filled = Vec::new();
        if !match_pieces(&self.pieces, value, who, sep, &mut filled) {
            return Fit::No;
        }
        let whole = matches!(who, Binding::Identity { .. }) && self.is_whole_username();
        for (piece, v) in filled {
            if let Some(why) = unusable(piece, self.field, v, whole) {
                return Fit::Unusable(format!("{why} (pattern {:?})", self.source));
            }
        }
        Fit::Yes
    }
}

/// Matches `value`, recording what each placeholder and `*` filled. Bound placeholders match their
/// value verbatim (checked afterwards, so that a bad value is reported rather than silently not
/// matching); `*` and unbound placeholders take one or more characters short of the separator. The
/// separator rule makes the split unique, so the first match is the only one.
fn match_pieces<'p, 'v>(
    pieces: &'p [Piece],
    value: &'v str,
    who: &Binding<'v>,
    sep: char,
    filled: &mut Vec<(&'p Piece, &'v str)>,
) -> bool {
    let Some((first, rest)) = pieces.split_first() else {
        return value.is_empty();
    };
    // `None`: unbound (any segment); `Some(None)`: bound to nothing, never matches.
    let bound: Option<Option<&'v str>> = match (who, first) {
        (Binding::Any, _) | (_, Piece::Literal(_) | Piece::Star) => None,
        (
            Binding::Identity {
                service_account, ..
            },
            Piece::Namespace,
        ) => Some(service_account.map(|(ns, _)| ns)),
        (
            Binding::Identity {
                service_account, ..
            },
            Piece::ServiceAccount,
        ) => Some(service_account.map(|(_, sa)| sa)),
        (Binding::Identity { username, .. }, Piece::Username) => Some(Some(*username)),
    };
    match (first, bound) {
        (Piece::Literal(l), _) => value
            .strip_prefix(l.as_str())
            .is_some_and(|v| match_pieces(rest, v, who, sep, filled)),
        (_, Some(None)) => false,
        (_, Some(Some(b))) => {
            let Some(tail) = value.strip_prefix(b) else {
                return false;
            };
            filled.push((first, b));
            if !b.is_empty() && match_pieces(rest, tail, who, sep, filled) {
                return true;
            }
            filled.pop();
            false
        }
        (_, None) => {
            let limit = value.find(sep).unwrap_or(value.len());
            for (i, c) in value[..limit].char_indices() {
                let end = i + c.len_utf8();
                filled.push((first, &value[..end]));
                if match_pieces(rest, &value[end..], who, sep, filled) {
                    return true;
                }
                filled.pop();
            }
            false
        }
    }
}

/// Why `value` cannot fill `piece` in a `field` name, or `None` when it can. `whole`: the value is
/// the entire commonName (`{username}` alone), so it may hold the separator and any character.
fn unusable(piece: &Piece, field: Field, value: &str, whole: bool) -> Option<String> {
    // `*` asked for literally is a wildcard name; whether those are allowed is `decide`'s call.
    if whole || (*piece == Piece::Star && field == Field::Dns && value == "*") {
        return None;
    }
    let name = piece.written();
    let sep = field.separator();
    if value.contains(sep) {
        return Some(format!(
            "{name} would be {value:?}, which contains {sep:?}: a placeholder fills exactly one {}, so that one name cannot stand for two identities",
            field.segment()
        ));
    }
    match piece {
        Piece::Namespace if !is_dns_label(value) => {
            return Some(format!(
                "{name} would be {value:?}, which is not a valid namespace name"
            ))
        }
        Piece::ServiceAccount if !is_dns_subdomain(value) => {
            return Some(format!(
                "{name} would be {value:?}, which is not a valid service account name"
            ))
        }
        _ => {}
    }
    match field {
        Field::Dns if !is_dns_label(value) => Some(format!(
            "{name} would be {value:?}, which is not a DNS label (lower-case letters, digits and '-', not first or last, at most 63)"
        )),
        Field::Uri if !is_path_segment(value) => Some(format!(
            "{name} would be {value:?}, which is not a URI path segment (letters, digits, '.', '-', '_'; not \".\" or \"..\")"
        )),
        _ => None,
    }
}

/// An RFC 1123 label as Kubernetes checks it (namespaces, `signerName` parts): lower-case
/// alphanumerics and '-', alphanumeric at both ends, at most 63 characters.
pub(crate) fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// An RFC 1123 subdomain as Kubernetes checks it (service account names): labels parted by '.', at
/// most 253 characters.
fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// A SPIFFE ID path segment (and so an RFC 3986 one that needs no escaping): letters, digits, '.',
/// '-', '_'; "." and ".." would be removed by path normalisation, changing the ID.
fn is_path_segment(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(username: &str) -> Binding<'_> {
        let service_account = username
            .strip_prefix("system:serviceaccount:")
            .and_then(|r| r.split_once(':'));
        Binding::Identity {
            username,
            service_account,
        }
    }

    fn fit(t: &str, field: Field, value: &str, who: &str) -> Fit {
        Template::parse(t, field)
            .expect("template")
            .fit(value, &identity(who))
    }

    fn m(t: &str, value: &str, who: &str, field: Field) -> bool {
        fit(t, field, value, who) == Fit::Yes
    }

    #[test]
    fn templates_bind_service_accounts() {
        let sa = "system:serviceaccount:team-a:app";
        let svc = "{serviceaccount}.{namespace}.svc";
        assert!(m(svc, "app.team-a.svc", sa, Field::Dns));
        assert!(!m(svc, "db.team-a.svc", sa, Field::Dns));
        assert!(!m(svc, "app.team-a.svc", "developer", Field::Dns));
        assert!(m("{username}", "developer", "developer", Field::CommonName));
        assert!(m(
            "spiffe://cluster.local/ns/{namespace}/sa/{serviceaccount}",
            "spiffe://cluster.local/ns/team-a/sa/app",
            sa,
            Field::Uri
        ));
        assert!(m("*.example.com", "a.example.com", "x", Field::Dns));
        assert!(!m("*.example.com", "a.b.example.com", "x", Field::Dns));
        assert!(!m("*.example.com", ".example.com", "x", Field::Dns));
    }

    #[test]
    fn any_binding_matches_one_segment_per_placeholder() {
        let t = Template::parse("{serviceaccount}.{namespace}.svc", Field::Dns).expect("template");
        assert_eq!(t.fit("db.team-b.svc", &Binding::Any), Fit::Yes);
        assert_eq!(t.fit("a.b.team-b.svc", &Binding::Any), Fit::No);
        assert_eq!(t.fit(".team-b.svc", &Binding::Any), Fit::No);
    }

    #[test]
    fn binds_identity_only_with_a_placeholder() {
        for (t, binds) in [
            ("*.example.com", false),
            ("static.example.com", false),
            ("{username}", true),
            ("spiffe://x/ns/{namespace}/sa/*", true),
        ] {
            let parsed = Template::parse(t, Field::Uri).expect(t);
            assert_eq!(parsed.binds_identity(), binds, "{t}");
        }
    }

    #[test]
    fn template_errors_are_explicit() {
        assert!(Template::parse("{nmespace}.svc", Field::Dns).is_err());
        assert!(Template::parse("{namespace.svc", Field::Dns).is_err());
        assert!(Template::parse("", Field::Dns).is_err());
        assert!(Template::parse("**.example.com", Field::Dns).is_err());
        assert!(Template::parse("{namespace}{serviceaccount}.svc", Field::Dns).is_err());
    }

    /// Two wildcards parted only by characters a value may hold would expand alike for two
    /// identities; the separator of the field is what parts them.
    #[test]
    fn placeholders_must_be_parted_by_the_separator() {
        for (t, field) in [
            ("{namespace}-{serviceaccount}.x", Field::Dns),
            ("{namespace}_{serviceaccount}", Field::CommonName),
            ("*-{namespace}.svc", Field::Dns),
            ("spiffe://td/{namespace}.{serviceaccount}", Field::Uri),
            ("spiffe://td/{namespace}-x-{serviceaccount}", Field::Uri),
            ("{username}:{namespace}", Field::CommonName),
            ("**.x", Field::Dns),
        ] {
            let e = Template::parse(t, field).expect_err(t);
            assert!(
                e.contains("must be separated by text containing"),
                "{t}: {e}"
            );
            assert!(e.contains(&format!("{:?}", field.separator())), "{t}: {e}");
        }
        for (t, field) in [
            ("{namespace}-x.{serviceaccount}.x", Field::Dns),
            ("{serviceaccount}.{namespace}.svc", Field::CommonName),
            ("spiffe://td/ns/{namespace}/sa/{serviceaccount}", Field::Uri),
            ("*.{namespace}.svc", Field::Dns),
            ("spiffe://td/{namespace}.x/{serviceaccount}", Field::Uri),
            ("*@*.*", Field::CommonName),
        ] {
            assert!(Template::parse(t, field).is_ok(), "{t}");
        }
    }

    /// The example from the review: with the separator rule, namespace "a-b" / service account "c"
    /// and namespace "a" / service account "b-c" can no longer share a name.
    #[test]
    fn a_name_fits_at_most_one_identity() {
        let t = Template::parse("{namespace}.{serviceaccount}.x", Field::Dns).expect("template");
        let one = identity("system:serviceaccount:a-b:c");
        let other = identity("system:serviceaccount:a:b-c");
        assert_eq!(t.fit("a-b.c.x", &one), Fit::Yes);
        assert_eq!(t.fit("a-b.c.x", &other), Fit::No);
        assert_eq!(t.fit("a.b-c.x", &other), Fit::Yes);
        assert_eq!(t.fit("a.b-c.x", &one), Fit::No);
    }

    #[test]
    fn bound_values_holding_the_separator_are_unusable() {
        let dotted = "system:serviceaccount:team-a:my.app";
        let Fit::Unusable(why) = fit(
            "{serviceaccount}.{namespace}.svc",
            Field::Dns,
            "my.app.team-a.svc",
            dotted,
        ) else {
            panic!("a dotted service account fills two labels")
        };
        assert!(
            why.contains("{serviceaccount} would be \"my.app\", which contains '.'"),
            "{why}"
        );
        // The same in a commonName pattern with more than the username.
        assert!(matches!(
            fit(
                "{username}.users",
                Field::CommonName,
                "alice.smith.users",
                "alice.smith"
            ),
            Fit::Unusable(_)
        ));
        // `{username}` alone is the whole commonName: any username fits, dots and all.
        for who in ["alice.smith", "alice@example.com", "https://issuer#sub"] {
            assert_eq!(
                fit("{username}", Field::CommonName, who, who),
                Fit::Yes,
                "{who}"
            );
        }
        // ...but not as a DNS name or URI.
        assert!(matches!(
            fit("{username}", Field::Dns, "alice.smith", "alice.smith"),
            Fit::Unusable(_)
        ));
        assert!(matches!(
            fit(
                "spiffe://td/u/{username}",
                Field::Uri,
                "spiffe://td/u/a/b",
                "a/b"
            ),
            Fit::Unusable(_)
        ));
    }

    /// Expands `t` for an identity by plain substitution (what a requester would ask for).
    fn expand(t: &str, ns: &str, sa: &str, user: &str) -> String {
        t.replace("{namespace}", ns)
            .replace("{serviceaccount}", sa)
            .replace("{username}", user)
    }

    proptest::proptest! {
        /// Whatever two identities are (dots and dashes included), a name one of them is granted
        /// through a pattern is never granted to the other through it, unless they agree on every
        /// placeholder the pattern uses.
        #[test]
        fn a_granted_name_names_one_identity(
            which in 0usize..6,
            a in ("[ab.-]{1,4}", "[ab.-]{1,4}", "[ab.-]{1,4}"),
            b in ("[ab.-]{1,4}", "[ab.-]{1,4}", "[ab.-]{1,4}"),
        ) {
            let patterns = [
                "{namespace}.{serviceaccount}.x",
                "{serviceaccount}.{namespace}.svc",
                "{namespace}-x.{serviceaccount}",
                "x{namespace}.{serviceaccount}y",
                "{username}.{namespace}",
                "{username}.x-{serviceaccount}.{namespace}.u",
            ];
            let t = patterns[which];
            let template = Template::parse(t, Field::Dns).expect("pattern");
            let (na, sa_a, ua) = a;
            let (nb, sa_b, ub) = b;
            let who_a = Binding::Identity { username: &ua, service_account: Some((&na, &sa_a)) };
            let who_b = Binding::Identity { username: &ub, service_account: Some((&nb, &sa_b)) };
            let value = expand(t, &na, &sa_a, &ua);
            if template.fit(&value, &who_a) == Fit::Yes && template.fit(&value, &who_b) == Fit::Yes {
                let uses = |p: &str| t.contains(p);
                proptest::prop_assert!(!uses("{namespace}") || na == nb, "{t}: {value}");
                proptest::prop_assert!(!uses("{serviceaccount}") || sa_a == sa_b, "{t}: {value}");
                proptest::prop_assert!(!uses("{username}") || ua == ub, "{t}: {value}");
            }
        }
    }

    /// What a trusted requester fills a placeholder with must be what the placeholder names: a
    /// DNS label in DNS names, a clean path segment in URIs, a valid namespace or service account.
    #[test]
    fn values_filled_by_anyone_must_be_valid_segments() {
        let spiffe = Template::parse(
            "spiffe://cluster.local/ns/{namespace}/sa/{serviceaccount}",
            Field::Uri,
        )
        .expect("template");
        let user = Template::parse("spiffe://cluster.local/user/{username}", Field::Uri)
            .expect("template");
        let dns =
            Template::parse("{serviceaccount}.{namespace}.svc", Field::Dns).expect("template");
        let any = |t: &Template, v: &str| t.fit(v, &Binding::Any);
        assert_eq!(
            any(&spiffe, "spiffe://cluster.local/ns/team-a/sa/my.app"),
            Fit::Yes
        );
        assert_eq!(any(&dns, "app.team-a.svc"), Fit::Yes);
        assert_eq!(any(&user, "spiffe://cluster.local/user/Alice_1"), Fit::Yes);
        for (t, v, mentions) in [
            (
                &spiffe,
                "spiffe://cluster.local/ns/../sa/app",
                "not a valid namespace name",
            ),
            (
                &spiffe,
                "spiffe://cluster.local/ns/-a/sa/app",
                "not a valid namespace name",
            ),
            (
                &spiffe,
                "spiffe://cluster.local/ns/a/sa/..",
                "not a valid service account name",
            ),
            (
                &spiffe,
                "spiffe://cluster.local/ns/a/sa/b?c",
                "not a valid service account name",
            ),
            (
                &spiffe,
                "spiffe://cluster.local/ns/Team/sa/app",
                "not a valid namespace name",
            ),
            (
                &user,
                "spiffe://cluster.local/user/..",
                "not a URI path segment",
            ),
            (
                &user,
                "spiffe://cluster.local/user/a?b",
                "not a URI path segment",
            ),
            (
                &user,
                "spiffe://cluster.local/user/a%2Fb",
                "not a URI path segment",
            ),
            (&dns, "app.-x.svc", "not a valid namespace name"),
            (&dns, "App.team-a.svc", "not a valid service account name"),
            (&dns, "a_b.team-a.svc", "not a valid service account name"),
        ] {
            match any(t, v) {
                Fit::Unusable(why) => assert!(why.contains(mentions), "{v}: {why}"),
                other => panic!("{v}: {other:?}"),
            }
        }
    }
}
