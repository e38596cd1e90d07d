//! Name patterns that may name the requester: `{serviceaccount}.{namespace}.svc`, `*.example.com`,
//! `spiffe://cluster.local/ns/{namespace}/sa/{serviceaccount}`.
//!
//! Responsible for parsing a pattern once (at configuration time, so a typo stops startup) and for
//! matching a value against it with the placeholders bound to an identity. It does not know which
//! field a pattern applies to nor what a mismatch means: choosing the reason is `decide`'s job.

/// One parsed element of a pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    Literal(String),
    /// `*`: one or more characters, never the separator (`.` in DNS names, `/` in URIs).
    Star,
    Namespace,
    ServiceAccount,
    Username,
}

/// A validated pattern (see the module docs for examples).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    source: String,
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
    /// A trusted requester (or the "would this match anyone" check): any single segment.
    Any,
}

impl Template {
    /// Parses a pattern; the error names the pattern and what is wrong with it.
    pub fn parse(s: &str) -> Result<Template, String> {
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
        // Two wildcards side by side ("**", "{namespace}{serviceaccount}") are ambiguous, and each
        // extra one multiplies the matching work on a requester-chosen value.
        if pieces
            .windows(2)
            .any(|w| !matches!(w[0], Piece::Literal(_)) && !matches!(w[1], Piece::Literal(_)))
        {
            return Err(format!(
                "{s:?}: wildcards and placeholders must be separated by literal text"
            ));
        }
        Ok(Template {
            source: s.to_owned(),
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

    /// Whether `value` matches with the placeholders bound as `who` says; `*` and unbound
    /// placeholders never cross `separator`.
    pub fn matches(&self, value: &str, who: &Binding<'_>, separator: char) -> bool {
        match_pieces(&self.pieces, value, who, separator)
    }
}

fn match_pieces(pieces: &[Piece], value: &str, who: &Binding<'_>, sep: char) -> bool {
    let Some((first, rest)) = pieces.split_first() else {
        return value.is_empty();
    };
    // `None`: unbound (any segment); `Some(None)`: bound to nothing, never matches.
    let bound = |p: &Piece| -> Option<Option<&str>> {
        let Binding::Identity {
            username,
            service_account,
        } = who
        else {
            return None;
        };
        Some(match p {
            Piece::Namespace => service_account.map(|(ns, _)| ns),
            Piece::ServiceAccount => service_account.map(|(_, sa)| sa),
            Piece::Username => Some(*username),
            _ => None,
        })
    };
    match first {
        Piece::Literal(l) => value
            .strip_prefix(l.as_str())
            .is_some_and(|v| match_pieces(rest, v, who, sep)),
        Piece::Star => segment_splits(value, sep).any(|tail| match_pieces(rest, tail, who, sep)),
        p => match bound(p) {
            Some(Some(v)) => value
                .strip_prefix(v)
                .is_some_and(|tail| !v.is_empty() && match_pieces(rest, tail, who, sep)),
            Some(None) => false,
            None => segment_splits(value, sep).any(|tail| match_pieces(rest, tail, who, sep)),
        },
    }
}

/// The tails left after consuming 1..n characters of `value` that contain no separator.
fn segment_splits(value: &str, sep: char) -> impl Iterator<Item = &str> {
    let limit = value.find(sep).unwrap_or(value.len());
    value
        .char_indices()
        .map(|(i, c)| i + c.len_utf8())
        .take_while(move |&end| end <= limit)
        .map(move |end| &value[end..])
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

    fn m(t: &str, value: &str, who: &str, sep: char) -> bool {
        Template::parse(t)
            .expect("template")
            .matches(value, &identity(who), sep)
    }

    #[test]
    fn templates_bind_service_accounts() {
        let sa = "system:serviceaccount:team-a:app";
        assert!(m(
            "{serviceaccount}.{namespace}.svc",
            "app.team-a.svc",
            sa,
            '.'
        ));
        assert!(!m(
            "{serviceaccount}.{namespace}.svc",
            "db.team-a.svc",
            sa,
            '.'
        ));
        assert!(!m(
            "{serviceaccount}.{namespace}.svc",
            "app.team-a.svc",
            "developer",
            '.'
        ));
        assert!(m("{username}", "developer", "developer", '.'));
        assert!(m(
            "spiffe://cluster.local/ns/{namespace}/sa/{serviceaccount}",
            "spiffe://cluster.local/ns/team-a/sa/app",
            sa,
            '/'
        ));
        assert!(m("*.example.com", "a.example.com", "x", '.'));
        assert!(!m("*.example.com", "a.b.example.com", "x", '.'));
        assert!(!m("*.example.com", ".example.com", "x", '.'));
    }

    #[test]
    fn any_binding_matches_one_segment_per_placeholder() {
        let t = Template::parse("{serviceaccount}.{namespace}.svc").expect("template");
        assert!(t.matches("db.team-b.svc", &Binding::Any, '.'));
        assert!(!t.matches("a.b.team-b.svc", &Binding::Any, '.'));
        assert!(!t.matches(".team-b.svc", &Binding::Any, '.'));
    }

    #[test]
    fn binds_identity_only_with_a_placeholder() {
        for (t, binds) in [
            ("*.example.com", false),
            ("static.example.com", false),
            ("{username}", true),
            ("spiffe://x/ns/{namespace}/sa/*", true),
        ] {
            assert_eq!(Template::parse(t).expect(t).binds_identity(), binds, "{t}");
        }
    }

    #[test]
    fn template_errors_are_explicit() {
        assert!(Template::parse("{nmespace}.svc").is_err());
        assert!(Template::parse("{namespace.svc").is_err());
        assert!(Template::parse("").is_err());
        assert!(Template::parse("**.example.com").is_err());
        assert!(Template::parse("{namespace}{serviceaccount}.svc").is_err());
        assert!(Template::parse("{namespace}-{serviceaccount}.svc").is_ok());
    }
}
