//! Catalog names. A name is a key in the manager's catalog — the file's path
//! relative to the client's root, with '/' separators — and never a path on a
//! server's disk (servers store chunks by hash), so the rules here protect
//! users from ambiguity rather than servers from traversal.

use crate::{errinput, Result};

/// Longest accepted name, in bytes.
pub const MAX_NAME_LEN: usize = 1024;

/// Check that `name` is a clean relative path: not empty, no leading '/',
/// no empty, '.' or '..' components, no NUL or backslash, bounded length.
pub fn validate(name: &str) -> Result<()> {
    if name.is_empty() {
        return errinput!("the file name is empty");
    }
    if name.len() > MAX_NAME_LEN {
        return errinput!("the file name is longer than {MAX_NAME_LEN} bytes");
    }
    if name.starts_with('/') {
        return errinput!("{name:?}: names are relative to the client root");
    }
    if name.contains('\0') || name.contains('\\') || name.chars().any(|c| c.is_control()) {
        return errinput!("{name:?}: control characters and backslashes are not allowed");
    }
    for part in name.split('/') {
        if part.is_empty() || part == "." || part == ".." {
            return errinput!("{name:?}: empty, '.' and '..' path components are not allowed");
        }
    }
    Ok(())
}

/// Most bytes of a caller's text that an error message quotes. A status
/// message travels in the `grpc-message` trailer and ends up on terminals
/// and in logs, so a 5 MB string sent in must not come back whole.
pub const MAX_QUOTED_BYTES: usize = 128;

/// `text` as an error message may show it: whole when it has at most
/// [`MAX_QUOTED_BYTES`] bytes, else its start (cut at a character
/// boundary) followed by `…`. For caller-supplied text that was not
/// validated to a bounded length first (ids, logins, roles).
pub fn excerpt(text: &str) -> std::borrow::Cow<'_, str> {
    if text.len() <= MAX_QUOTED_BYTES {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut end = MAX_QUOTED_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    std::borrow::Cow::Owned(format!("{}…", &text[..end]))
}

/// Whether `name` matches `pattern`: a glob with `*` and `?` when it has
/// either, otherwise a substring. An empty pattern matches everything.
pub fn matches(pattern: &str, name: &str) -> bool {
    if pattern.is_empty() {
        return true;
    }
    if !pattern.contains(['*', '?']) {
        return name.contains(pattern);
    }
    glob(pattern.as_bytes(), name.as_bytes())
}

/// Iterative glob match with single-star backtracking (linear in practice).
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == b'?' || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_clean_relative_paths() {
        for ok in ["a", "notes.txt", "docs/2024/report.pdf", "x y/z-1_2.tar.gz"] {
            assert!(validate(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn refuses_traversal_and_odd_names() {
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../b",
            "a//b",
            "./a",
            "a/",
            "a\0b",
            "a\\b",
        ] {
            assert!(validate(bad).is_err(), "{bad:?}");
        }
        assert!(validate(&"a".repeat(MAX_NAME_LEN + 1)).is_err());
    }

    #[test]
    fn excerpts_are_bounded_and_cut_between_characters() {
        assert_eq!(excerpt("short"), "short");
        let exact = "a".repeat(MAX_QUOTED_BYTES);
        assert_eq!(excerpt(&exact), exact);
        let long = excerpt(&"b".repeat(5 << 20)).into_owned();
        assert_eq!(long, format!("{}…", "b".repeat(MAX_QUOTED_BYTES)));
        // 'é' is two bytes: the cut never splits one.
        let accents = format!("x{}", "é".repeat(MAX_QUOTED_BYTES));
        let cut = excerpt(&accents);
        assert!(cut.len() <= MAX_QUOTED_BYTES + '…'.len_utf8(), "{cut}");
        assert!(cut.ends_with("é…"), "{cut}");
    }

    #[test]
    fn patterns() {
        assert!(matches("", "anything"));
        assert!(matches("note", "my-notes.txt"));
        assert!(matches("*.txt", "a/b.txt"));
        assert!(!matches("*.txt", "a/b.txt.gz"));
        assert!(matches("a?c*", "abcdef"));
        assert!(!matches("a?c", "ac"));
    }
}
