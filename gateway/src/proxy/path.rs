//! Request paths resolved before routing, so that a prefix cannot be escaped with dot segments:
//! `/public/../admin` is routed, and forwarded, as `/admin` (RFC 3986 §5.2.4; `%2e` counts as a
//! dot, being the same unreserved character, §6.2.2.2). Nothing else about the path changes.

use std::borrow::Cow;

/// `path` with its `.` and `..` segments resolved; borrowed when it has none.
pub fn normalize(path: &str) -> Cow<'_, str> {
    if !path.starts_with('/') || !path.split('/').any(|s| dots(s).is_some()) {
        return Cow::Borrowed(path);
    }
    let mut kept: Vec<&str> = Vec::new();
    let mut ends_in_dir = false;
    for segment in path.split('/').skip(1) {
        ends_in_dir = true;
        match dots(segment) {
            Some(1) => {}
            Some(_) => {
                kept.pop();
            }
            None => {
                kept.push(segment);
                ends_in_dir = false;
            }
        }
    }
    let mut out = String::with_capacity(path.len());
    for segment in &kept {
        out.push('/');
        out.push_str(segment);
    }
    if ends_in_dir || out.is_empty() {
        out.push('/');
    }
    Cow::Owned(out)
}

/// 1 for a `.` segment, 2 for `..`, with `%2e` in either case counting as a dot.
fn dots(segment: &str) -> Option<usize> {
    let mut rest = segment.as_bytes();
    let mut count = 0;
    while !rest.is_empty() {
        rest = if rest[0] == b'.' {
            &rest[1..]
        } else if rest.len() >= 3 && rest[0] == b'%' && rest[1] == b'2' && rest[2].eq_ignore_ascii_case(&b'e') {
            &rest[3..]
        } else {
            return None;
        };
        count += 1;
    }
    (1..=2).contains(&count).then_some(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_dot_segments() {
        for (input, expected) in [
            ("/a/b/c", "/a/b/c"),
            ("/public/../admin", "/admin"),
            ("/public/%2e%2e/admin", "/admin"),
            ("/public/.%2E/admin", "/admin"),
            ("/a/./b", "/a/b"),
            ("/a/%2e/b", "/a/b"),
            ("/a/b/..", "/a/"),
            ("/a/b/.", "/a/b/"),
            ("/..", "/"),
            ("/../../a", "/a"),
            ("/a/.../b", "/a/.../b"),
            ("/a/.b/c", "/a/.b/c"),
            ("/a//../b", "/a/b"),
            ("/", "/"),
            ("*", "*"),
        ] {
            assert_eq!(normalize(input), expected, "{input}");
        }
    }

    #[test]
    fn borrows_when_there_is_nothing_to_do() {
        assert!(matches!(normalize("/orders/1.json"), Cow::Borrowed(_)));
    }
}
