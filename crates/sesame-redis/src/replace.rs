//! The patch script's work done here instead of in Redis, when it can be: the patch's own record
//! was loaded by this store, so its stored bytes are known, and the script's result from those
//! bytes can be computed in Rust. Redis then only checks that the key still holds those bytes and
//! sets the result (a `GET`, a comparison and a `SET`, a few microseconds), where the patch
//! script scans the record's members in Lua (tens of microseconds of Redis's single thread).
//!
//! The result must be byte for byte what the patch script would write, so this module scans the
//! record's members exactly as the script's `members` function does, and assembles them the same
//! way: unchanged members copied as they are, changed ones replaced in place, removed ones
//! dropped, new ones appended in the patch's order, and the `cookie` member last if it was absent.

/// Records up to this size are replaced whole; a larger one is patched by the script, so that a
/// write never sends Redis twice a large record.
pub(crate) const MAX_BASE_LEN: usize = 4 * 1024;

/// The members of a JSON object as the patch script sees them.
struct Member<'a> {
    /// The member's name, decoded.
    name: std::borrow::Cow<'a, [u8]>,
    /// The name's text as stored, with its quotes.
    head: &'a [u8],
    /// The value's text as stored.
    value: &'a [u8],
}

/// What the script would store for `base` with `cookie` (the `"cookie":{...}` member), the
/// member texts in `sets` (name, `"name":value`), and the names in `removals`; with the raw text
/// of the base's meta member (`"sesame"`), which the script would return. `None` when `base` is
/// not an object the script can read (the script then answers that, and is left to do so).
pub(crate) fn replaced<'a>(
    base: &'a [u8],
    cookie: &str,
    removals: &[&str],
    sets: &[(&str, String)],
) -> Option<(Vec<u8>, Option<&'a [u8]>)> {
    let members = members(base)?;
    let meta = members
        .iter()
        .filter(|member| *member.name == *sesame_core::META_KEY.as_bytes())
        .map(|member| member.value)
        .next_back();
    // What the script's `change` table holds: a replacement text, or `None` for a removal.
    let change = |name: &[u8]| -> Option<Option<&str>> {
        if name == sesame_core::COOKIE_KEY.as_bytes() {
            return Some(Some(cookie));
        }
        if let Some((_, text)) = sets.iter().rev().find(|(set, _)| set.as_bytes() == name) {
            return Some(Some(text.as_str()));
        }
        removals
            .iter()
            .any(|removed| removed.as_bytes() == name)
            .then_some(None)
    };
    let mut written: Vec<&[u8]> = Vec::new();
    let mut out = Vec::with_capacity(base.len() + cookie.len() + 16);
    out.push(b'{');
    let mut first = true;
    let mut push = |out: &mut Vec<u8>, text: &[u8]| {
        if !first {
            out.push(b',');
        }
        first = false;
        out.extend_from_slice(text);
    };
    for member in &members {
        match change(&member.name) {
            None => {
                push(&mut out, member.head);
                out.push(b':');
                out.extend_from_slice(member.value);
            }
            // A name the script has already written (a duplicate member) is dropped.
            Some(_) if written.contains(&&*member.name) => {}
            Some(Some(text)) => {
                push(&mut out, text.as_bytes());
                written.push(&member.name);
            }
            Some(None) => {}
        }
    }
    for (name, text) in sets {
        let name = name.as_bytes();
        if name != sesame_core::COOKIE_KEY.as_bytes() && !written.contains(&name) {
            push(&mut out, text.as_bytes());
            written.push(name);
        }
    }
    if !written.contains(&sesame_core::COOKIE_KEY.as_bytes()) {
        push(&mut out, cookie.as_bytes());
    }
    out.push(b'}');
    Some((out, meta))
}

/// Whitespace as the script's `ws` skips it.
fn is_space(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\r' | b'\n')
}

/// The index of the next non-whitespace byte at or after `i` (the script's `ws`).
fn skip_space(s: &[u8], i: usize) -> Option<usize> {
    (i..s.len()).find(|&at| !is_space(s[at]))
}

/// The index of the closing quote of the string opening at `i` (the script's `string_end`).
fn string_end(s: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    loop {
        let q = j + s.get(j..)?.iter().position(|&b| b == b'"' || b == b'\\')?;
        if s[q] == b'"' {
            return Some(q);
        }
        j = q + 2;
    }
}

/// The index of the last byte of the value starting at `i` (the script's `value_end`).
fn value_end(s: &[u8], i: usize) -> Option<usize> {
    match *s.get(i)? {
        b'"' => string_end(s, i),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut j = i;
            loop {
                let mut p = j + s
                    .get(j..)?
                    .iter()
                    .position(|&b| matches!(b, b'{' | b'}' | b'[' | b']' | b'"'))?;
                match s[p] {
                    b'"' => p = string_end(s, p)?,
                    b'{' | b'[' => depth += 1,
                    _ => {
                        depth = depth.checked_sub(1)?;
                        if depth == 0 {
                            return Some(p);
                        }
                    }
                }
                j = p + 1;
            }
        }
        _ => {
            let e = i + s
                .get(i..)?
                .iter()
                .position(|&b| matches!(b, b',' | b'}' | b']') || is_space(b))?;
            (e != i).then(|| e - 1)
        }
    }
}

/// The members of the object `s`, in order (the script's `members`); `None` when `s` is not an
/// object the script can read.
fn members(s: &[u8]) -> Option<Vec<Member<'_>>> {
    let mut out = Vec::new();
    let mut i = skip_space(s, 0)?;
    if s[i] != b'{' {
        return None;
    }
    i = skip_space(s, i + 1)?;
    if s[i] == b'}' {
        return skip_space(s, i + 1).is_none().then_some(out);
    }
    loop {
        if s[i] != b'"' {
            return None;
        }
        let name_end = string_end(s, i)?;
        let head = &s[i..=name_end];
        let raw_name = &s[i + 1..name_end];
        let name = if raw_name.contains(&b'\\') {
            let decoded: String = sesame_core::serde_json::from_slice(head).ok()?;
            std::borrow::Cow::Owned(decoded.into_bytes())
        } else {
            std::borrow::Cow::Borrowed(raw_name)
        };
        let colon = skip_space(s, name_end + 1)?;
        if s[colon] != b':' {
            return None;
        }
        let v = skip_space(s, colon + 1)?;
        let v_end = value_end(s, v)?;
        out.push(Member {
            name,
            head,
            value: &s[v..=v_end],
        });
        let n = skip_space(s, v_end + 1)?;
        match s[n] {
            b'}' => return skip_space(s, n + 1).is_none().then_some(out),
            b',' => i = skip_space(s, n + 1)?,
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COOKIE: &str = r#""cookie":{"originalMaxAge":null,"expires":null,"path":"/"}"#;

    fn replace(base: &str, removals: &[&str], sets: &[(&str, &str)]) -> Option<String> {
        let sets: Vec<(&str, String)> = sets
            .iter()
            .map(|(name, text)| (*name, (*text).to_owned()))
            .collect();
        let (out, _) = replaced(base.as_bytes(), COOKIE, removals, &sets)?;
        Some(String::from_utf8(out).unwrap())
    }

    #[test]
    fn keeps_untouched_members_byte_for_byte_and_in_place() {
        let base = r#"{ "big": 9007199254740993, "cookie": {"expires": null},
            "list": [1, {"a": "}"}], "n": 1, "esc\u0041": "x\"y" }"#;
        assert_eq!(
            replace(
                base,
                &["list"],
                &[("n", r#""n":2"#), ("new", r#""new":true"#)]
            )
            .unwrap(),
            format!(r#"{{"big":9007199254740993,{COOKIE},"n":2,"esc\u0041":"x\"y","new":true}}"#)
        );
    }

    #[test]
    fn appends_the_cookie_when_absent_and_reports_the_meta_member() {
        let base = r#"{"sesame":{"user":"ada"},"n":1}"#;
        let (out, meta) = replaced(base.as_bytes(), COOKIE, &[], &[]).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!(r#"{{"sesame":{{"user":"ada"}},"n":1,{COOKIE}}}"#)
        );
        assert_eq!(meta, Some(br#"{"user":"ada"}"#.as_slice()));
    }

    #[test]
    fn an_escaped_name_is_matched_by_its_decoded_name() {
        let base = r#"{"\u006e":1}"#;
        assert_eq!(
            replace(base, &[], &[("n", r#""n":2"#)]).unwrap(),
            format!(r#"{{"n":2,{COOKIE}}}"#)
        );
    }

    #[test]
    fn refuses_what_is_not_an_object() {
        for base in [
            "",
            "[]",
            "{",
            r#"{"a":1"#,
            r#"{"a" 1}"#,
            r#"{"a":1} x"#,
            r#"{"a":}"#,
        ] {
            assert_eq!(replace(base, &[], &[]), None, "{base:?}");
        }
        assert_eq!(replace(" {} ", &[], &[]).unwrap(), format!("{{{COOKIE}}}"));
    }
}
