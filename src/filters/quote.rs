//! Unquoting of quoted fields and values: a port of containerd's `pkg/filters/quote.go`,
//! itself adapted from Go's strconv.

// Port of containerd's quote.go `unquote`, for the delimiters its scanner produces (`"`, `/`,
// `|`). Returns bytes: `\x` and octal escapes may produce invalid UTF-8, as in Go.
pub(super) fn unquote(s: &str) -> Result<Vec<u8>, ()> {
    let b = s.as_bytes();
    let (Some(&quote), Some(&last)) = (b.first(), b.last()) else {
        return Err(());
    };
    if b.len() < 2 || quote != last || !matches!(quote, b'"' | b'/' | b'|') {
        return Err(());
    }
    let mut rest = s.get(1..s.len() - 1).ok_or(())?;
    if rest.contains('\n') {
        return Err(());
    }
    let mut buf = Vec::with_capacity(rest.len());
    while !rest.is_empty() {
        rest = unquote_char(rest, quote, &mut buf)?;
    }
    Ok(buf)
}

// Decodes one character or escape of `s` into `buf` and returns the remainder.
fn unquote_char<'s>(s: &'s str, quote: u8, buf: &mut Vec<u8>) -> Result<&'s str, ()> {
    let mut chars = s.chars();
    let c = chars.next().ok_or(())?;
    if c == char::from(quote) {
        return Err(());
    }
    if c != '\\' {
        let mut tmp = [0u8; 4];
        buf.extend_from_slice(c.encode_utf8(&mut tmp).as_bytes());
        return Ok(chars.as_str());
    }
    let rest = chars.as_str();
    let esc = *rest.as_bytes().first().ok_or(())?;
    // A non-ASCII escape letter is an error below, so slicing after one byte is safe.
    let s = rest.get(1..).ok_or(())?;
    let simple = match esc {
        b'a' => Some(0x07),
        b'b' => Some(0x08),
        b'f' => Some(0x0c),
        b'n' => Some(b'\n'),
        b'r' => Some(b'\r'),
        b't' => Some(b'\t'),
        b'v' => Some(0x0b),
        b'\\' => Some(b'\\'),
        b'\'' | b'"' | b'|' | b'/' if esc == quote => Some(esc),
        _ => None,
    };
    if let Some(v) = simple {
        buf.push(v);
        return Ok(s);
    }
    match esc {
        b'x' | b'u' | b'U' => {
            let n = match esc {
                b'x' => 2,
                b'u' => 4,
                _ => 8,
            };
            let digits = s.as_bytes().get(..n).ok_or(())?;
            let mut v: u32 = 0;
            for &d in digits {
                let x = char::from(d).to_digit(16).ok_or(())?;
                v = v << 4 | x;
            }
            if esc == b'x' {
                // A single byte, possibly not UTF-8.
                buf.push(u8::try_from(v).map_err(|_| ())?);
            } else {
                // Go accumulates in an int32: \U80000000 and up wrap negative, pass the
                // MaxRune check and, being below RuneSelf, are appended as their low byte.
                if v >= 0x8000_0000 {
                    buf.push(v.to_le_bytes()[0]);
                    return s.get(n..).ok_or(());
                }
                if v > 0x10FFFF {
                    return Err(());
                }
                // Go's utf8.EncodeRune writes U+FFFD for surrogates too.
                let c = char::from_u32(v).unwrap_or(char::REPLACEMENT_CHARACTER);
                let mut tmp = [0u8; 4];
                buf.extend_from_slice(c.encode_utf8(&mut tmp).as_bytes());
            }
            s.get(n..).ok_or(())
        }
        b'0'..=b'7' => {
            let mut v = u32::from(esc - b'0');
            let digits = s.as_bytes().get(..2).ok_or(())?;
            for &d in digits {
                if !(b'0'..=b'7').contains(&d) {
                    return Err(());
                }
                v = (v << 3) | u32::from(d - b'0');
            }
            buf.push(u8::try_from(v).map_err(|_| ())?);
            s.get(2..).ok_or(())
        }
        _ => Err(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unquoting() {
        let cases: &[(&str, Result<&[u8], ()>)] = &[
            (r#""""#, Ok(b"")),
            (r#""abc""#, Ok(b"abc")),
            (r#""\a\b\f\n\r\t\v\\\"""#, Ok(b"\x07\x08\x0c\n\r\t\x0b\\\"")),
            (r#"/a\/b/"#, Ok(b"a/b")),
            (r#"|a\|b/|"#, Ok(b"a|b/")),
            (r#""\x41\101\u00e9\U0001F600""#, Ok("AAé😀".as_bytes())),
            (r#""\xff\377""#, Ok(b"\xff\xff")),
            (r#""\ud800""#, Ok("\u{fffd}".as_bytes())),
            (r#""牛""#, Ok("牛".as_bytes())),
            (r#""\400""#, Err(())),
            (r#""\U00110000""#, Err(())),
            (r#""\U80000000\UFFFFFF41""#, Ok(b"\0A")),
            (r#""\U7FFFFFFF""#, Err(())),
            (r#""\/""#, Err(())),
            (r#"/\"/"#, Err(())),
            (r#""\x4""#, Err(())),
            (r#""\x4g""#, Err(())),
            (r#""\18""#, Err(())),
            (r#""\é""#, Err(())),
            (r#""a"b""#, Err(())),
            (r#""a\"#, Err(())),
            ("\"a\nb\"", Err(())),
            ("\"", Err(())),
            ("", Err(())),
        ];
        for (input, want) in cases {
            assert_eq!(unquote(input), want.map(<[u8]>::to_vec), "input {input:?}");
        }
    }
}
