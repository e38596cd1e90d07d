//! A PEM reader that finds exactly the block Go's `encoding/pem.Decode` finds.
//!
//! kube-apiserver validates `spec.request` with `pem.Decode` (only the first block it returns counts), and
//! so does every Go approver and `kubectl describe csr`. Any reader that picks another block on some input
//! would let a request nobody reviewed be certified, so this is a port of Go's algorithm, not a PEM parser
//! of our own design; `tests/csr_hardening.rs` compares it with Go itself on generated inputs.
//!
//! Go's algorithm (Go 1.26 `encoding/pem/pem.go`), written down as the reference:
//!
//! - `getLine(data)`: the bytes up to the first `\n` (or all of them), without that `\n`, without one `\r`
//!   right before it, and with trailing spaces and tabs removed; plus the rest after the `\n`, and how many
//!   bytes were consumed (the line and its `\n`).
//! - `Decode(data)`: `rest = data`, `endTrailerIndex = 0`; loop:
//!   1. if `endTrailerIndex < 0` or `> len(rest)`: no block. `rest = rest[endTrailerIndex:]`.
//!   2. `endIndex` = first index of `"\n-----END "` in `rest`; none: no block.
//!      `endTrailerIndex = endIndex + 10` (just after that marker).
//!   3. `beginIndex` = last index of `"-----BEGIN "` in `rest[:endIndex]`; none, or not at the start of
//!      `rest` and not right after a `\n`: next iteration (which skips past this END).
//!   4. Skip `rest` to just after `"-----BEGIN "` (both indexes shift along with it), take the type line
//!      with `getLine` (indexes shift by what it consumed); it must end with `"-----"` (else next iteration),
//!      and the type is the line without those five dashes.
//!   5. Headers: while `rest` is not empty, `getLine`; a line with a `:` is a header (key and value split at
//!      the first `:`, each trimmed of Unicode white space as `bytes.TrimSpace` does; a repeated key
//!      overwrites), consumed, indexes shift; the first line without `:` ends the headers (and is not
//!      consumed). `rest` becoming empty here means no block at all (not a next iteration).
//!   6. With headers, `endIndex < 0` (the END line was eaten as a header) means next iteration.
//!   7. After the END marker (`rest[endTrailerIndex:]`) must come the type then `"-----"`, and then only
//!      spaces and tabs up to the end of the line; else next iteration.
//!   8. The body is `rest[:endIndex]` (empty when `endIndex <= 0`) with spaces and tabs removed, decoded
//!      by `base64.StdEncoding`: `\r` and `\n` are skipped anywhere, padding is required and only at the
//!      end, nothing but `\r`/`\n` may follow it, and non-zero trailing bits are accepted. A decoding error
//!      means next iteration.
//!   9. The block is returned with `rest` = what follows the END line (`getLine` from the space after
//!      `-----END`).
//!
//! "Next iteration" keeps the adjusted `rest` and `endTrailerIndex`, so the search resumes after the END
//! marker just examined: a malformed block is skipped, and a later well-formed block is returned instead.

use std::collections::BTreeMap;

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;

/// A PEM block as Go's `pem.Block`. Type and headers are bytes, as in Go (a Go `string` holds any
/// bytes, not necessarily UTF-8).
#[derive(Clone, PartialEq, Eq)]
pub struct Block {
    pub label: Vec<u8>,
    pub headers: BTreeMap<Vec<u8>, Vec<u8>>,
    pub bytes: Vec<u8>,
}

/// Deliberately prints no content: the bytes may be a private key read by mistake.
impl std::fmt::Debug for Block {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Block")
            .field("label", &String::from_utf8_lossy(&self.label))
            .field("headers", &self.headers.len())
            .field("bytes", &self.bytes.len())
            .finish()
    }
}

const PEM_START: &[u8] = b"\n-----BEGIN ";
const PEM_END: &[u8] = b"\n-----END ";
const PEM_END_OF_LINE: &[u8] = b"-----";

/// Go's `base64.StdEncoding` (not `.Strict()`): padded, trailing bits not checked.
const GO_STD_ENCODING: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(DecodePaddingMode::RequireCanonical),
);

/// `pem.Decode`: the first block and the input after it, or `None` and the whole input.
pub fn decode(data: &[u8]) -> (Option<Block>, &[u8]) {
    let mut rest = data;
    // Relative to `rest`, like Go's; signed because Go's arithmetic may take them below zero.
    let mut end_trailer_index: isize = 0;
    loop {
        let Ok(skip) = usize::try_from(end_trailer_index) else {
            return (None, data);
        };
        if skip > rest.len() {
            return (None, data);
        }
        rest = &rest[skip..];

        let Some(end) = find(rest, PEM_END) else {
            return (None, data);
        };
        let mut end_index = end as isize;
        end_trailer_index = end_index + PEM_END.len() as isize;
        let Some(begin) = rfind(&rest[..end], &PEM_START[1..]) else {
            continue;
        };
        if begin > 0 && rest[begin - 1] != b'\n' {
            continue;
        }
        let shift = begin + PEM_START.len() - 1;
        rest = &rest[shift..];
        end_index -= shift as isize;
        end_trailer_index -= shift as isize;

        let (type_line, after, consumed) = get_line(rest);
        rest = after;
        end_index -= consumed as isize;
        end_trailer_index -= consumed as isize;
        let Some(label) = type_line.strip_suffix(PEM_END_OF_LINE) else {
            continue;
        };

        let mut headers = BTreeMap::new();
        loop {
            if rest.is_empty() {
                return (None, data);
            }
            let (line, next, consumed) = get_line(rest);
            let Some(colon) = line.iter().position(|&b| b == b':') else {
                break;
            };
            headers.insert(
                go_trim_space(&line[..colon]).to_vec(),
                go_trim_space(&line[colon + 1..]).to_vec(),
            );
            rest = next;
            end_index -= consumed as isize;
            end_trailer_index -= consumed as isize;
        }
        if !headers.is_empty() && end_index < 0 {
            continue;
        }

        // Without headers Go's arithmetic keeps this index >= 0; should it not, Go would panic where we
        // give up on this block.
        let Some(end_trailer) = usize::try_from(end_trailer_index)
            .ok()
            .and_then(|i| rest.get(i..))
        else {
            continue;
        };
        let end_trailer_len = label.len() + PEM_END_OF_LINE.len();
        if end_trailer.len() < end_trailer_len {
            continue;
        }
        let (end_trailer, rest_of_end_line) = end_trailer.split_at(end_trailer_len);
        if !end_trailer.starts_with(label) || !end_trailer.ends_with(PEM_END_OF_LINE) {
            continue;
        }
        if !get_line(rest_of_end_line).0.is_empty() {
            continue;
        }

        let mut bytes = Vec::new();
        if end_index > 0 {
            let body: Vec<u8> = rest[..end_index as usize]
                .iter()
                .copied()
                .filter(|b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
                .collect();
            match GO_STD_ENCODING.decode(body) {
                Ok(b) => bytes = b,
                Err(_) => continue,
            }
        }

        // From the space after "-----END" (end_index may be -1 for an empty body, whose END line
        // starts right after the type line).
        let Some(tail) = usize::try_from(end_index + PEM_END.len() as isize - 1)
            .ok()
            .and_then(|i| rest.get(i..))
        else {
            continue;
        };
        let (_, after, _) = get_line(tail);
        return (
            Some(Block {
                label: label.to_vec(),
                headers,
                bytes,
            }),
            after,
        );
    }
}

/// Go's `getLine`: (line without its end and trailing spaces/tabs, rest after the `\n`, bytes consumed).
fn get_line(data: &[u8]) -> (&[u8], &[u8], usize) {
    let (mut i, j) = match data.iter().position(|&b| b == b'\n') {
        None => (data.len(), data.len()),
        Some(i) => (i, i + 1),
    };
    if j > i && i > 0 && data[i - 1] == b'\r' {
        i -= 1;
    }
    let mut line = &data[..i];
    while let [head @ .., b' ' | b'\t'] = line {
        line = head;
    }
    (line, &data[j..], j)
}

/// Go's `bytes.TrimSpace`: strips Unicode white space (`unicode.IsSpace`, which is Rust's
/// `char::is_whitespace`) decoded as UTF-8 from both ends; an invalid byte stops the trimming.
fn go_trim_space(mut s: &[u8]) -> &[u8] {
    // Every white-space character is at most three bytes long; Go decodes one rune at each end, which
    // is white space exactly when some 1 to 3 bytes there are the UTF-8 encoding of one such character.
    fn is_one_space(bytes: &[u8]) -> bool {
        std::str::from_utf8(bytes).is_ok_and(|t| {
            let mut chars = t.chars();
            matches!((chars.next(), chars.next()), (Some(c), None) if c.is_whitespace())
        })
    }
    while let Some(n) = (1..=s.len().min(3)).find(|&n| is_one_space(&s[..n])) {
        s = &s[n..];
    }
    while let Some(n) = (1..=s.len().min(3)).find(|&n| is_one_space(&s[s.len() - n..])) {
        s = &s[..s.len() - n];
    }
    s
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn rfind(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).rposition(|w| w == needle)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn get_line_is_gos() {
        assert_eq!(get_line(b"ab \t\r\ncd"), (&b"ab"[..], &b"cd"[..], 6));
        assert_eq!(get_line(b"ab\r"), (&b"ab\r"[..], &b""[..], 3));
        assert_eq!(get_line(b"\n"), (&b""[..], &b""[..], 1));
        assert_eq!(get_line(b"x \r \n"), (&b"x \r"[..], &b""[..], 5));
    }

    #[test]
    fn trim_space_is_unicode_aware_and_stops_at_invalid_utf8() {
        assert_eq!(go_trim_space(b" \x0b\x0ck\xc2\xa0"), b"k");
        assert_eq!(go_trim_space("\u{3000}v\u{2028}".as_bytes()), b"v");
        assert_eq!(go_trim_space(b"\xa0 v \xc2"), b"\xa0 v \xc2");
        assert_eq!(go_trim_space(b"\x1c v"), b"\x1c v");
        assert_eq!(go_trim_space(b"  "), b"");
        assert_eq!(go_trim_space(b"x ab"), b"x ab");
    }

    #[test]
    fn finds_the_block_and_the_rest() {
        let (b, rest) = decode(b"x\n-----BEGIN A-----\nQUJD\n-----END A-----  \ny");
        let b = b.unwrap();
        assert_eq!(
            (b.label.as_slice(), b.bytes.as_slice()),
            (&b"A"[..], &b"ABC"[..])
        );
        assert_eq!(rest, b"y");
    }
}
