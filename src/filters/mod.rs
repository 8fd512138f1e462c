//! containerd's filter-expression language (`pkg/filters`, containerd v2.4.2), ported to Rust.
//!
//! A filter is a list of expressions; the list is OR-ed. Each expression is a comma-separated
//! list of selectors, all of which must match:
//!
//! ```text
//! selectors := selector ("," selector)*
//! selector  := fieldpath (operator value)
//! fieldpath := field ('.' field)*
//! field     := quoted | [A-Za-z0-9_]+
//! operator  := "==" | "!=" | "~="
//! value     := quoted | [^\s,]+   (graphic runes only)
//! quoted    := <go string syntax, also delimited by `/` or `|` for "~=" values>
//! ```
//!
//! The scanner, parser and unquoting follow containerd's code step by step, quirks included
//! (e.g. whitespace after a value is rejected, `~=` on an absent field matches against "").

use regex::Regex;
use std::fmt;

/// A parsed list of filter expressions: the list is OR-ed, each expression's comma-separated
/// selectors are AND-ed.
#[derive(Debug, Clone)]
pub struct Filter {
    // An empty selector list matches everything (containerd's `Always`).
    exprs: Vec<Vec<Selector>>,
}

/// Why a filter expression could not be parsed: names the expression, the position and the
/// cause, in one line, e.g. `filters: parse error: [name==]: expected value or quoted at 6`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    input: String,
    /// Byte offset into `input`, as containerd reports it.
    pos: usize,
    msg: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // containerd marks one byte; a whole character is marked here so the text stays UTF-8.
        let at = self.input.get(self.pos..).and_then(|t| t.chars().next());
        let body = match at {
            Some(c) => {
                let before = self.input.get(..self.pos).unwrap_or("");
                let after = self.input.get(self.pos + c.len_utf8()..).unwrap_or("");
                format!("[{before} >|{c}|< {after}]: {}", self.msg)
            }
            None => format!("[{}]: {}", self.input, self.msg),
        };
        f.write_str("filters: parse error: ")?;
        for c in body.chars() {
            // Keep the message on one line.
            if c.is_control() || c == '\u{2028}' || c == '\u{2029}' {
                write!(f, "{}", c.escape_default())?;
            } else {
                write!(f, "{c}")?;
            }
        }
        write!(f, " at {}", self.pos)
    }
}

impl std::error::Error for ParseError {}

impl Filter {
    /// Parses every expression; an empty list matches everything (containerd's ParseAll).
    pub fn parse_all<S: AsRef<str>>(filters: &[S]) -> Result<Filter, ParseError> {
        if filters.is_empty() {
            return Ok(Filter {
                exprs: vec![Vec::new()],
            });
        }
        let exprs = filters
            .iter()
            .map(|s| parse(s.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Filter { exprs })
    }

    /// `field` resolves a field path (e.g. ["labels", "containerd.io/gc.root"] or ["kind"]) to
    /// its value, or None when the field is not present — the role of containerd's Adaptor.
    pub fn matches(&self, field: &dyn Fn(&[String]) -> Option<String>) -> bool {
        self.exprs
            .iter()
            .any(|sels| sels.iter().all(|s| s.matches(field)))
    }
}

#[derive(Debug, Clone)]
struct Selector {
    fieldpath: Vec<String>,
    op: Op,
}

#[derive(Debug, Clone)]
enum Op {
    Present,
    // None: the unquoted value is not UTF-8, so it equals no field value.
    Equal(Option<String>),
    NotEqual(Option<String>),
    // containerd compiles at match time and, on error, logs and never matches; compiling once
    // here is equivalent. The error text is kept for Debug output.
    Matches(Result<Regex, String>),
}

impl Selector {
    fn matches(&self, field: &dyn Fn(&[String]) -> Option<String>) -> bool {
        let value = field(&self.fieldpath);
        match &self.op {
            Op::Present => value.is_some(),
            Op::Equal(want) => match (&value, want) {
                (Some(v), Some(w)) => v == w,
                _ => false,
            },
            // An absent field reads as "", as with containerd's adaptors.
            Op::NotEqual(want) => match want {
                Some(w) => value.as_deref().unwrap_or("") != w,
                None => true,
            },
            Op::Matches(Ok(re)) => re.is_match(value.as_deref().unwrap_or("")),
            Op::Matches(Err(_)) => false,
        }
    }
}

fn parse(input: &str) -> Result<Vec<Selector>, ParseError> {
    // containerd special-cases the empty expression to match everything.
    if input.is_empty() {
        return Ok(Vec::new());
    }
    let mut p = Parser {
        input,
        scanner: Scanner::new(input),
    };
    p.selectors()
}

struct Parser<'a> {
    input: &'a str,
    scanner: Scanner<'a>,
}

impl<'a> Parser<'a> {
    fn selectors(&mut self) -> Result<Vec<Selector>, ParseError> {
        let mut ss = vec![self.selector()?];
        loop {
            let tok = self.scanner.peek();
            if tok == ',' as i32 {
                let (pos, tok, _) = self.scanner.scan();
                if tok != TOKEN_SEPARATOR {
                    return Err(self.mkerr(pos, "expected a separator".into()));
                }
                ss.push(self.selector()?);
            } else if tok == TOKEN_EOF {
                return Ok(ss);
            } else {
                let pos = self.scanner.ppos;
                return Err(self.mkerr(pos, format!("unexpected input: {}", rune_string(tok))));
            }
        }
    }

    fn selector(&mut self) -> Result<Selector, ParseError> {
        let fieldpath = self.fieldpath()?;
        // peek yields raw runes, so only ',' and EOF end a presence selector.
        let tok = self.scanner.peek();
        if tok == ',' as i32 || tok == TOKEN_SEPARATOR || tok == TOKEN_EOF {
            return Ok(Selector {
                fieldpath,
                op: Op::Present,
            });
        }
        let op = self.operator()?;
        let value = self.value(op == Operator::Matches)?;
        let op = match op {
            Operator::Equal => Op::Equal(String::from_utf8(value).ok()),
            Operator::NotEqual => Op::NotEqual(String::from_utf8(value).ok()),
            Operator::Matches => Op::Matches(match String::from_utf8(value) {
                Ok(v) => Regex::new(&v).map_err(|e| e.to_string()),
                // Go's regexp rejects patterns that are not UTF-8 too.
                Err(_) => Err("invalid UTF-8".to_string()),
            }),
        };
        Ok(Selector { fieldpath, op })
    }

    fn fieldpath(&mut self) -> Result<Vec<String>, ParseError> {
        let mut fs = vec![self.field()?];
        while self.scanner.peek() == '.' as i32 {
            let (pos, tok, _) = self.scanner.scan();
            if tok != TOKEN_SEPARATOR {
                return Err(self.mkerr(pos, "expected a field separator (`.`)".into()));
            }
            fs.push(self.field()?);
        }
        Ok(fs)
    }

    fn field(&mut self) -> Result<String, ParseError> {
        let (pos, tok, s) = self.scanner.scan();
        match tok {
            TOKEN_FIELD => Ok(s.to_string()),
            // Escapes may yield non-UTF-8 bytes, which Go hands to its adaptor as they are; here
            // they become U+FFFD, which differs only for a key that itself contains U+FFFD.
            TOKEN_QUOTED => Ok(String::from_utf8_lossy(&self.unquote(pos, s, false)?).into_owned()),
            TOKEN_ILLEGAL => Err(self.mkerr(pos, self.scanner.err.into())),
            _ => Err(self.mkerr(pos, "expected field or quoted".into())),
        }
    }

    fn operator(&mut self) -> Result<Operator, ParseError> {
        let (pos, tok, s) = self.scanner.scan();
        match tok {
            TOKEN_OPERATOR => match s {
                "==" => Ok(Operator::Equal),
                "!=" => Ok(Operator::NotEqual),
                "~=" => Ok(Operator::Matches),
                _ => Err(self.mkerr(pos, format!("unsupported operator {s:?}"))),
            },
            TOKEN_ILLEGAL => Err(self.mkerr(pos, self.scanner.err.into())),
            _ => Err(self.mkerr(pos, r#"expected an operator ("=="|"!="|"~=")"#.into())),
        }
    }

    fn value(&mut self, allow_alt_quotes: bool) -> Result<Vec<u8>, ParseError> {
        let (pos, tok, s) = self.scanner.scan();
        match tok {
            TOKEN_VALUE | TOKEN_FIELD => Ok(s.as_bytes().to_vec()),
            TOKEN_QUOTED => self.unquote(pos, s, allow_alt_quotes),
            TOKEN_ILLEGAL => Err(self.mkerr(pos, self.scanner.err.into())),
            _ => Err(self.mkerr(pos, "expected value or quoted".into())),
        }
    }

    fn unquote(&self, pos: usize, s: &str, allow_alts: bool) -> Result<Vec<u8>, ParseError> {
        let first = s.as_bytes().first().copied();
        if !allow_alts && first != Some(b'\'') && first != Some(b'"') {
            return Err(self.mkerr(pos, "invalid quote encountered".into()));
        }
        unquote(s).map_err(|()| self.mkerr(pos, "unquoting failed: quote syntax error".into()))
    }

    fn mkerr(&self, pos: usize, msg: String) -> ParseError {
        ParseError {
            input: self.input.to_string(),
            pos,
            msg,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operator {
    Equal,
    NotEqual,
    Matches,
}

// Go's string(rune): anything that is not a valid scalar value becomes U+FFFD.
fn rune_string(r: i32) -> char {
    u32::try_from(r)
        .ok()
        .and_then(char::from_u32)
        .unwrap_or(char::REPLACEMENT_CHARACTER)
}

// Scanner "runes" are i32 as in Go: a char, or one of these negative token kinds.
const TOKEN_EOF: i32 = -1;
const TOKEN_QUOTED: i32 = -2;
const TOKEN_VALUE: i32 = -3;
const TOKEN_FIELD: i32 = -4;
const TOKEN_SEPARATOR: i32 = -5;
const TOKEN_OPERATOR: i32 = -6;
const TOKEN_ILLEGAL: i32 = -7;

struct Scanner<'a> {
    input: &'a str,
    pos: usize,
    // Bounds the current rune in the string.
    ppos: usize,
    // Set after an operator: the next bare word is a value, not a field.
    value: bool,
    // First error seen, including during peeks (as in Go).
    err: &'static str,
}

impl<'a> Scanner<'a> {
    fn new(input: &'a str) -> Self {
        Scanner {
            input,
            pos: 0,
            ppos: 0,
            value: false,
            err: "",
        }
    }

    fn next(&mut self) -> i32 {
        if self.pos >= self.input.len() {
            return TOKEN_EOF;
        }
        self.pos = self.ppos;
        let Some(c) = self.input.get(self.ppos..).and_then(|t| t.chars().next()) else {
            return TOKEN_EOF;
        };
        self.ppos += c.len_utf8();
        // Go's decoder returns RuneError (U+FFFD) with width 3 for an encoded U+FFFD, which
        // containerd then rejects like invalid UTF-8.
        if c == char::REPLACEMENT_CHARACTER {
            self.error("rune error");
            return TOKEN_ILLEGAL;
        }
        if c == '\0' {
            self.error("unexpected null");
            return TOKEN_ILLEGAL;
        }
        c as i32
    }

    fn peek(&mut self) -> i32 {
        let (pos, ppos) = (self.pos, self.ppos);
        let ch = self.next();
        self.pos = pos;
        self.ppos = ppos;
        ch
    }

    fn text(&self, pos: usize) -> &'a str {
        self.input.get(pos..self.ppos).unwrap_or("")
    }

    fn scan(&mut self) -> (usize, i32, &'a str) {
        let mut ch = self.next();
        let mut pos = self.pos;
        loop {
            if ch == TOKEN_EOF || ch == TOKEN_ILLEGAL {
                break;
            }
            if is_quote_rune(ch) {
                let ok = self.scan_quoted(ch);
                let tok = if ok { TOKEN_QUOTED } else { TOKEN_ILLEGAL };
                return (pos, tok, self.text(pos));
            }
            if is_separator_rune(ch) {
                self.value = false;
                return (pos, TOKEN_SEPARATOR, self.text(pos));
            }
            if is_operator_rune(ch) {
                self.scan_operator();
                self.value = true;
                return (pos, TOKEN_OPERATOR, self.text(pos));
            }
            if is_space(ch) {
                ch = self.next();
                pos = self.pos;
                continue;
            }
            if self.value {
                self.scan_value();
                self.value = false;
                return (pos, TOKEN_VALUE, self.text(pos));
            }
            if is_field_rune(ch) {
                self.scan_field();
                return (pos, TOKEN_FIELD, self.text(pos));
            }
            break;
        }
        (self.pos, ch, "")
    }

    fn scan_field(&mut self) {
        while is_field_rune(self.peek()) {
            self.next();
        }
    }

    fn scan_operator(&mut self) {
        while is_operator_rune(self.peek()) {
            self.next();
        }
    }

    fn scan_value(&mut self) {
        while is_value_rune(self.peek()) {
            self.next();
        }
    }

    fn scan_quoted(&mut self, quote: i32) -> bool {
        let mut illegal = false;
        let mut ch = self.next();
        while ch != quote {
            if ch == '\n' as i32 || ch < 0 {
                self.error("quoted literal not terminated");
                return false;
            }
            if ch == '\\' as i32 {
                let (next, legal) = self.scan_escape(quote);
                ch = next;
                illegal |= !legal;
            } else {
                ch = self.next();
            }
        }
        !illegal
    }

    fn scan_escape(&mut self, quote: i32) -> (i32, bool) {
        let ch = self.next();
        match u8::try_from(ch).unwrap_or(0) {
            b'a' | b'b' | b'f' | b'n' | b'r' | b't' | b'v' | b'\\' => (self.next(), true),
            _ if ch == quote => (self.next(), true),
            b'0'..=b'7' => self.scan_digits(ch, 8, 3),
            b'x' => {
                let c = self.next();
                self.scan_digits(c, 16, 2)
            }
            b'u' => {
                let c = self.next();
                self.scan_digits(c, 16, 4)
            }
            b'U' => {
                let c = self.next();
                self.scan_digits(c, 16, 8)
            }
            _ => {
                self.error("illegal escape sequence");
                (ch, false)
            }
        }
    }

    fn scan_digits(&mut self, mut ch: i32, base: i32, mut n: usize) -> (i32, bool) {
        while n > 0 && digit_val(ch) < base {
            ch = self.next();
            n -= 1;
        }
        if n > 0 {
            self.error("illegal numeric escape sequence");
            return (ch, false);
        }
        (ch, true)
    }

    fn error(&mut self, msg: &'static str) {
        if self.err.is_empty() {
            self.err = msg;
        }
    }
}

fn digit_val(ch: i32) -> i32 {
    match u8::try_from(ch) {
        Ok(c @ b'0'..=b'9') => i32::from(c - b'0'),
        Ok(c @ b'a'..=b'f') => i32::from(c - b'a' + 10),
        Ok(c @ b'A'..=b'F') => i32::from(c - b'A' + 10),
        _ => 16,
    }
}

fn ascii(r: i32) -> Option<u8> {
    u8::try_from(r).ok().filter(u8::is_ascii)
}

fn is_field_rune(r: i32) -> bool {
    ascii(r).is_some_and(|c| c == b'_' || c.is_ascii_alphanumeric())
}

fn is_operator_rune(r: i32) -> bool {
    matches!(ascii(r), Some(b'=' | b'!' | b'~'))
}

fn is_quote_rune(r: i32) -> bool {
    matches!(ascii(r), Some(b'/' | b'|' | b'"'))
}

fn is_separator_rune(r: i32) -> bool {
    matches!(ascii(r), Some(b',' | b'.'))
}

// Go's unicode.IsSpace is the Unicode White_Space property, as is char::is_whitespace.
fn is_space(r: i32) -> bool {
    u32::try_from(r)
        .ok()
        .and_then(char::from_u32)
        .is_some_and(char::is_whitespace)
}

// containerd: r != ',' && !IsSpace(r) && (IsLetter || IsDigit || IsNumber || IsGraphic ||
// IsPunct), which reduces to graphic and not space; looked up in a table taken from Go.
fn is_value_rune(r: i32) -> bool {
    match u32::try_from(r) {
        Ok(r) if r != u32::from(b',') => VALUE_RUNE_BOUNDS.partition_point(|&b| b <= r) % 2 == 1,
        _ => false,
    }
}

// Port of containerd's quote.go `unquote`, for the delimiters its scanner produces (`"`, `/`,
// `|`). Returns bytes: `\x` and octal escapes may produce invalid UTF-8, as in Go.
fn unquote(s: &str) -> Result<Vec<u8>, ()> {
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

// Rune boundaries where Go's (IsGraphic(r) && !IsSpace(r)) flips, starting false at 0;
// generated from Go 1.26 (Unicode 15.0.0) so values end exactly where containerd's do.
#[rustfmt::skip]
const VALUE_RUNE_BOUNDS: &[u32] = &[
    0x21, 0x7F, 0xA1, 0xAD, 0xAE, 0x378, 0x37A, 0x380, 0x384, 0x38B, 0x38C, 0x38D, 0x38E, 0x3A2,
    0x3A3, 0x530, 0x531, 0x557, 0x559, 0x58B, 0x58D, 0x590, 0x591, 0x5C8, 0x5D0, 0x5EB, 0x5EF,
    0x5F5, 0x606, 0x61C, 0x61D, 0x6DD, 0x6DE, 0x70E, 0x710, 0x74B, 0x74D, 0x7B2, 0x7C0, 0x7FB,
    0x7FD, 0x82E, 0x830, 0x83F, 0x840, 0x85C, 0x85E, 0x85F, 0x860, 0x86B, 0x870, 0x88F, 0x898,
    0x8E2, 0x8E3, 0x984, 0x985, 0x98D, 0x98F, 0x991, 0x993, 0x9A9, 0x9AA, 0x9B1, 0x9B2, 0x9B3,
    0x9B6, 0x9BA, 0x9BC, 0x9C5, 0x9C7, 0x9C9, 0x9CB, 0x9CF, 0x9D7, 0x9D8, 0x9DC, 0x9DE, 0x9DF,
    0x9E4, 0x9E6, 0x9FF, 0xA01, 0xA04, 0xA05, 0xA0B, 0xA0F, 0xA11, 0xA13, 0xA29, 0xA2A, 0xA31,
    0xA32, 0xA34, 0xA35, 0xA37, 0xA38, 0xA3A, 0xA3C, 0xA3D, 0xA3E, 0xA43, 0xA47, 0xA49, 0xA4B,
    0xA4E, 0xA51, 0xA52, 0xA59, 0xA5D, 0xA5E, 0xA5F, 0xA66, 0xA77, 0xA81, 0xA84, 0xA85, 0xA8E,
    0xA8F, 0xA92, 0xA93, 0xAA9, 0xAAA, 0xAB1, 0xAB2, 0xAB4, 0xAB5, 0xABA, 0xABC, 0xAC6, 0xAC7,
    0xACA, 0xACB, 0xACE, 0xAD0, 0xAD1, 0xAE0, 0xAE4, 0xAE6, 0xAF2, 0xAF9, 0xB00, 0xB01, 0xB04,
    0xB05, 0xB0D, 0xB0F, 0xB11, 0xB13, 0xB29, 0xB2A, 0xB31, 0xB32, 0xB34, 0xB35, 0xB3A, 0xB3C,
    0xB45, 0xB47, 0xB49, 0xB4B, 0xB4E, 0xB55, 0xB58, 0xB5C, 0xB5E, 0xB5F, 0xB64, 0xB66, 0xB78,
    0xB82, 0xB84, 0xB85, 0xB8B, 0xB8E, 0xB91, 0xB92, 0xB96, 0xB99, 0xB9B, 0xB9C, 0xB9D, 0xB9E,
    0xBA0, 0xBA3, 0xBA5, 0xBA8, 0xBAB, 0xBAE, 0xBBA, 0xBBE, 0xBC3, 0xBC6, 0xBC9, 0xBCA, 0xBCE,
    0xBD0, 0xBD1, 0xBD7, 0xBD8, 0xBE6, 0xBFB, 0xC00, 0xC0D, 0xC0E, 0xC11, 0xC12, 0xC29, 0xC2A,
    0xC3A, 0xC3C, 0xC45, 0xC46, 0xC49, 0xC4A, 0xC4E, 0xC55, 0xC57, 0xC58, 0xC5B, 0xC5D, 0xC5E,
    0xC60, 0xC64, 0xC66, 0xC70, 0xC77, 0xC8D, 0xC8E, 0xC91, 0xC92, 0xCA9, 0xCAA, 0xCB4, 0xCB5,
    0xCBA, 0xCBC, 0xCC5, 0xCC6, 0xCC9, 0xCCA, 0xCCE, 0xCD5, 0xCD7, 0xCDD, 0xCDF, 0xCE0, 0xCE4,
    0xCE6, 0xCF0, 0xCF1, 0xCF4, 0xD00, 0xD0D, 0xD0E, 0xD11, 0xD12, 0xD45, 0xD46, 0xD49, 0xD4A,
    0xD50, 0xD54, 0xD64, 0xD66, 0xD80, 0xD81, 0xD84, 0xD85, 0xD97, 0xD9A, 0xDB2, 0xDB3, 0xDBC,
    0xDBD, 0xDBE, 0xDC0, 0xDC7, 0xDCA, 0xDCB, 0xDCF, 0xDD5, 0xDD6, 0xDD7, 0xDD8, 0xDE0, 0xDE6,
    0xDF0, 0xDF2, 0xDF5, 0xE01, 0xE3B, 0xE3F, 0xE5C, 0xE81, 0xE83, 0xE84, 0xE85, 0xE86, 0xE8B,
    0xE8C, 0xEA4, 0xEA5, 0xEA6, 0xEA7, 0xEBE, 0xEC0, 0xEC5, 0xEC6, 0xEC7, 0xEC8, 0xECF, 0xED0,
    0xEDA, 0xEDC, 0xEE0, 0xF00, 0xF48, 0xF49, 0xF6D, 0xF71, 0xF98, 0xF99, 0xFBD, 0xFBE, 0xFCD,
    0xFCE, 0xFDB, 0x1000, 0x10C6, 0x10C7, 0x10C8, 0x10CD, 0x10CE, 0x10D0, 0x1249, 0x124A, 0x124E,
    0x1250, 0x1257, 0x1258, 0x1259, 0x125A, 0x125E, 0x1260, 0x1289, 0x128A, 0x128E, 0x1290, 0x12B1,
    0x12B2, 0x12B6, 0x12B8, 0x12BF, 0x12C0, 0x12C1, 0x12C2, 0x12C6, 0x12C8, 0x12D7, 0x12D8, 0x1311,
    0x1312, 0x1316, 0x1318, 0x135B, 0x135D, 0x137D, 0x1380, 0x139A, 0x13A0, 0x13F6, 0x13F8, 0x13FE,
    0x1400, 0x1680, 0x1681, 0x169D, 0x16A0, 0x16F9, 0x1700, 0x1716, 0x171F, 0x1737, 0x1740, 0x1754,
    0x1760, 0x176D, 0x176E, 0x1771, 0x1772, 0x1774, 0x1780, 0x17DE, 0x17E0, 0x17EA, 0x17F0, 0x17FA,
    0x1800, 0x180E, 0x180F, 0x181A, 0x1820, 0x1879, 0x1880, 0x18AB, 0x18B0, 0x18F6, 0x1900, 0x191F,
    0x1920, 0x192C, 0x1930, 0x193C, 0x1940, 0x1941, 0x1944, 0x196E, 0x1970, 0x1975, 0x1980, 0x19AC,
    0x19B0, 0x19CA, 0x19D0, 0x19DB, 0x19DE, 0x1A1C, 0x1A1E, 0x1A5F, 0x1A60, 0x1A7D, 0x1A7F, 0x1A8A,
    0x1A90, 0x1A9A, 0x1AA0, 0x1AAE, 0x1AB0, 0x1ACF, 0x1B00, 0x1B4D, 0x1B50, 0x1B7F, 0x1B80, 0x1BF4,
    0x1BFC, 0x1C38, 0x1C3B, 0x1C4A, 0x1C4D, 0x1C89, 0x1C90, 0x1CBB, 0x1CBD, 0x1CC8, 0x1CD0, 0x1CFB,
    0x1D00, 0x1F16, 0x1F18, 0x1F1E, 0x1F20, 0x1F46, 0x1F48, 0x1F4E, 0x1F50, 0x1F58, 0x1F59, 0x1F5A,
    0x1F5B, 0x1F5C, 0x1F5D, 0x1F5E, 0x1F5F, 0x1F7E, 0x1F80, 0x1FB5, 0x1FB6, 0x1FC5, 0x1FC6, 0x1FD4,
    0x1FD6, 0x1FDC, 0x1FDD, 0x1FF0, 0x1FF2, 0x1FF5, 0x1FF6, 0x1FFF, 0x2010, 0x2028, 0x2030, 0x205F,
    0x2070, 0x2072, 0x2074, 0x208F, 0x2090, 0x209D, 0x20A0, 0x20C1, 0x20D0, 0x20F1, 0x2100, 0x218C,
    0x2190, 0x2427, 0x2440, 0x244B, 0x2460, 0x2B74, 0x2B76, 0x2B96, 0x2B97, 0x2CF4, 0x2CF9, 0x2D26,
    0x2D27, 0x2D28, 0x2D2D, 0x2D2E, 0x2D30, 0x2D68, 0x2D6F, 0x2D71, 0x2D7F, 0x2D97, 0x2DA0, 0x2DA7,
    0x2DA8, 0x2DAF, 0x2DB0, 0x2DB7, 0x2DB8, 0x2DBF, 0x2DC0, 0x2DC7, 0x2DC8, 0x2DCF, 0x2DD0, 0x2DD7,
    0x2DD8, 0x2DDF, 0x2DE0, 0x2E5E, 0x2E80, 0x2E9A, 0x2E9B, 0x2EF4, 0x2F00, 0x2FD6, 0x2FF0, 0x2FFC,
    0x3001, 0x3040, 0x3041, 0x3097, 0x3099, 0x3100, 0x3105, 0x3130, 0x3131, 0x318F, 0x3190, 0x31E4,
    0x31F0, 0x321F, 0x3220, 0xA48D, 0xA490, 0xA4C7, 0xA4D0, 0xA62C, 0xA640, 0xA6F8, 0xA700, 0xA7CB,
    0xA7D0, 0xA7D2, 0xA7D3, 0xA7D4, 0xA7D5, 0xA7DA, 0xA7F2, 0xA82D, 0xA830, 0xA83A, 0xA840, 0xA878,
    0xA880, 0xA8C6, 0xA8CE, 0xA8DA, 0xA8E0, 0xA954, 0xA95F, 0xA97D, 0xA980, 0xA9CE, 0xA9CF, 0xA9DA,
    0xA9DE, 0xA9FF, 0xAA00, 0xAA37, 0xAA40, 0xAA4E, 0xAA50, 0xAA5A, 0xAA5C, 0xAAC3, 0xAADB, 0xAAF7,
    0xAB01, 0xAB07, 0xAB09, 0xAB0F, 0xAB11, 0xAB17, 0xAB20, 0xAB27, 0xAB28, 0xAB2F, 0xAB30, 0xAB6C,
    0xAB70, 0xABEE, 0xABF0, 0xABFA, 0xAC00, 0xD7A4, 0xD7B0, 0xD7C7, 0xD7CB, 0xD7FC, 0xF900, 0xFA6E,
    0xFA70, 0xFADA, 0xFB00, 0xFB07, 0xFB13, 0xFB18, 0xFB1D, 0xFB37, 0xFB38, 0xFB3D, 0xFB3E, 0xFB3F,
    0xFB40, 0xFB42, 0xFB43, 0xFB45, 0xFB46, 0xFBC3, 0xFBD3, 0xFD90, 0xFD92, 0xFDC8, 0xFDCF, 0xFDD0,
    0xFDF0, 0xFE1A, 0xFE20, 0xFE53, 0xFE54, 0xFE67, 0xFE68, 0xFE6C, 0xFE70, 0xFE75, 0xFE76, 0xFEFD,
    0xFF01, 0xFFBF, 0xFFC2, 0xFFC8, 0xFFCA, 0xFFD0, 0xFFD2, 0xFFD8, 0xFFDA, 0xFFDD, 0xFFE0, 0xFFE7,
    0xFFE8, 0xFFEF, 0xFFFC, 0xFFFE, 0x10000, 0x1000C, 0x1000D, 0x10027, 0x10028, 0x1003B, 0x1003C,
    0x1003E, 0x1003F, 0x1004E, 0x10050, 0x1005E, 0x10080, 0x100FB, 0x10100, 0x10103, 0x10107,
    0x10134, 0x10137, 0x1018F, 0x10190, 0x1019D, 0x101A0, 0x101A1, 0x101D0, 0x101FE, 0x10280,
    0x1029D, 0x102A0, 0x102D1, 0x102E0, 0x102FC, 0x10300, 0x10324, 0x1032D, 0x1034B, 0x10350,
    0x1037B, 0x10380, 0x1039E, 0x1039F, 0x103C4, 0x103C8, 0x103D6, 0x10400, 0x1049E, 0x104A0,
    0x104AA, 0x104B0, 0x104D4, 0x104D8, 0x104FC, 0x10500, 0x10528, 0x10530, 0x10564, 0x1056F,
    0x1057B, 0x1057C, 0x1058B, 0x1058C, 0x10593, 0x10594, 0x10596, 0x10597, 0x105A2, 0x105A3,
    0x105B2, 0x105B3, 0x105BA, 0x105BB, 0x105BD, 0x10600, 0x10737, 0x10740, 0x10756, 0x10760,
    0x10768, 0x10780, 0x10786, 0x10787, 0x107B1, 0x107B2, 0x107BB, 0x10800, 0x10806, 0x10808,
    0x10809, 0x1080A, 0x10836, 0x10837, 0x10839, 0x1083C, 0x1083D, 0x1083F, 0x10856, 0x10857,
    0x1089F, 0x108A7, 0x108B0, 0x108E0, 0x108F3, 0x108F4, 0x108F6, 0x108FB, 0x1091C, 0x1091F,
    0x1093A, 0x1093F, 0x10940, 0x10980, 0x109B8, 0x109BC, 0x109D0, 0x109D2, 0x10A04, 0x10A05,
    0x10A07, 0x10A0C, 0x10A14, 0x10A15, 0x10A18, 0x10A19, 0x10A36, 0x10A38, 0x10A3B, 0x10A3F,
    0x10A49, 0x10A50, 0x10A59, 0x10A60, 0x10AA0, 0x10AC0, 0x10AE7, 0x10AEB, 0x10AF7, 0x10B00,
    0x10B36, 0x10B39, 0x10B56, 0x10B58, 0x10B73, 0x10B78, 0x10B92, 0x10B99, 0x10B9D, 0x10BA9,
    0x10BB0, 0x10C00, 0x10C49, 0x10C80, 0x10CB3, 0x10CC0, 0x10CF3, 0x10CFA, 0x10D28, 0x10D30,
    0x10D3A, 0x10E60, 0x10E7F, 0x10E80, 0x10EAA, 0x10EAB, 0x10EAE, 0x10EB0, 0x10EB2, 0x10EFD,
    0x10F28, 0x10F30, 0x10F5A, 0x10F70, 0x10F8A, 0x10FB0, 0x10FCC, 0x10FE0, 0x10FF7, 0x11000,
    0x1104E, 0x11052, 0x11076, 0x1107F, 0x110BD, 0x110BE, 0x110C3, 0x110D0, 0x110E9, 0x110F0,
    0x110FA, 0x11100, 0x11135, 0x11136, 0x11148, 0x11150, 0x11177, 0x11180, 0x111E0, 0x111E1,
    0x111F5, 0x11200, 0x11212, 0x11213, 0x11242, 0x11280, 0x11287, 0x11288, 0x11289, 0x1128A,
    0x1128E, 0x1128F, 0x1129E, 0x1129F, 0x112AA, 0x112B0, 0x112EB, 0x112F0, 0x112FA, 0x11300,
    0x11304, 0x11305, 0x1130D, 0x1130F, 0x11311, 0x11313, 0x11329, 0x1132A, 0x11331, 0x11332,
    0x11334, 0x11335, 0x1133A, 0x1133B, 0x11345, 0x11347, 0x11349, 0x1134B, 0x1134E, 0x11350,
    0x11351, 0x11357, 0x11358, 0x1135D, 0x11364, 0x11366, 0x1136D, 0x11370, 0x11375, 0x11400,
    0x1145C, 0x1145D, 0x11462, 0x11480, 0x114C8, 0x114D0, 0x114DA, 0x11580, 0x115B6, 0x115B8,
    0x115DE, 0x11600, 0x11645, 0x11650, 0x1165A, 0x11660, 0x1166D, 0x11680, 0x116BA, 0x116C0,
    0x116CA, 0x11700, 0x1171B, 0x1171D, 0x1172C, 0x11730, 0x11747, 0x11800, 0x1183C, 0x118A0,
    0x118F3, 0x118FF, 0x11907, 0x11909, 0x1190A, 0x1190C, 0x11914, 0x11915, 0x11917, 0x11918,
    0x11936, 0x11937, 0x11939, 0x1193B, 0x11947, 0x11950, 0x1195A, 0x119A0, 0x119A8, 0x119AA,
    0x119D8, 0x119DA, 0x119E5, 0x11A00, 0x11A48, 0x11A50, 0x11AA3, 0x11AB0, 0x11AF9, 0x11B00,
    0x11B0A, 0x11C00, 0x11C09, 0x11C0A, 0x11C37, 0x11C38, 0x11C46, 0x11C50, 0x11C6D, 0x11C70,
    0x11C90, 0x11C92, 0x11CA8, 0x11CA9, 0x11CB7, 0x11D00, 0x11D07, 0x11D08, 0x11D0A, 0x11D0B,
    0x11D37, 0x11D3A, 0x11D3B, 0x11D3C, 0x11D3E, 0x11D3F, 0x11D48, 0x11D50, 0x11D5A, 0x11D60,
    0x11D66, 0x11D67, 0x11D69, 0x11D6A, 0x11D8F, 0x11D90, 0x11D92, 0x11D93, 0x11D99, 0x11DA0,
    0x11DAA, 0x11EE0, 0x11EF9, 0x11F00, 0x11F11, 0x11F12, 0x11F3B, 0x11F3E, 0x11F5A, 0x11FB0,
    0x11FB1, 0x11FC0, 0x11FF2, 0x11FFF, 0x1239A, 0x12400, 0x1246F, 0x12470, 0x12475, 0x12480,
    0x12544, 0x12F90, 0x12FF3, 0x13000, 0x13430, 0x13440, 0x13456, 0x14400, 0x14647, 0x16800,
    0x16A39, 0x16A40, 0x16A5F, 0x16A60, 0x16A6A, 0x16A6E, 0x16ABF, 0x16AC0, 0x16ACA, 0x16AD0,
    0x16AEE, 0x16AF0, 0x16AF6, 0x16B00, 0x16B46, 0x16B50, 0x16B5A, 0x16B5B, 0x16B62, 0x16B63,
    0x16B78, 0x16B7D, 0x16B90, 0x16E40, 0x16E9B, 0x16F00, 0x16F4B, 0x16F4F, 0x16F88, 0x16F8F,
    0x16FA0, 0x16FE0, 0x16FE5, 0x16FF0, 0x16FF2, 0x17000, 0x187F8, 0x18800, 0x18CD6, 0x18D00,
    0x18D09, 0x1AFF0, 0x1AFF4, 0x1AFF5, 0x1AFFC, 0x1AFFD, 0x1AFFF, 0x1B000, 0x1B123, 0x1B132,
    0x1B133, 0x1B150, 0x1B153, 0x1B155, 0x1B156, 0x1B164, 0x1B168, 0x1B170, 0x1B2FC, 0x1BC00,
    0x1BC6B, 0x1BC70, 0x1BC7D, 0x1BC80, 0x1BC89, 0x1BC90, 0x1BC9A, 0x1BC9C, 0x1BCA0, 0x1CF00,
    0x1CF2E, 0x1CF30, 0x1CF47, 0x1CF50, 0x1CFC4, 0x1D000, 0x1D0F6, 0x1D100, 0x1D127, 0x1D129,
    0x1D173, 0x1D17B, 0x1D1EB, 0x1D200, 0x1D246, 0x1D2C0, 0x1D2D4, 0x1D2E0, 0x1D2F4, 0x1D300,
    0x1D357, 0x1D360, 0x1D379, 0x1D400, 0x1D455, 0x1D456, 0x1D49D, 0x1D49E, 0x1D4A0, 0x1D4A2,
    0x1D4A3, 0x1D4A5, 0x1D4A7, 0x1D4A9, 0x1D4AD, 0x1D4AE, 0x1D4BA, 0x1D4BB, 0x1D4BC, 0x1D4BD,
    0x1D4C4, 0x1D4C5, 0x1D506, 0x1D507, 0x1D50B, 0x1D50D, 0x1D515, 0x1D516, 0x1D51D, 0x1D51E,
    0x1D53A, 0x1D53B, 0x1D53F, 0x1D540, 0x1D545, 0x1D546, 0x1D547, 0x1D54A, 0x1D551, 0x1D552,
    0x1D6A6, 0x1D6A8, 0x1D7CC, 0x1D7CE, 0x1DA8C, 0x1DA9B, 0x1DAA0, 0x1DAA1, 0x1DAB0, 0x1DF00,
    0x1DF1F, 0x1DF25, 0x1DF2B, 0x1E000, 0x1E007, 0x1E008, 0x1E019, 0x1E01B, 0x1E022, 0x1E023,
    0x1E025, 0x1E026, 0x1E02B, 0x1E030, 0x1E06E, 0x1E08F, 0x1E090, 0x1E100, 0x1E12D, 0x1E130,
    0x1E13E, 0x1E140, 0x1E14A, 0x1E14E, 0x1E150, 0x1E290, 0x1E2AF, 0x1E2C0, 0x1E2FA, 0x1E2FF,
    0x1E300, 0x1E4D0, 0x1E4FA, 0x1E7E0, 0x1E7E7, 0x1E7E8, 0x1E7EC, 0x1E7ED, 0x1E7EF, 0x1E7F0,
    0x1E7FF, 0x1E800, 0x1E8C5, 0x1E8C7, 0x1E8D7, 0x1E900, 0x1E94C, 0x1E950, 0x1E95A, 0x1E95E,
    0x1E960, 0x1EC71, 0x1ECB5, 0x1ED01, 0x1ED3E, 0x1EE00, 0x1EE04, 0x1EE05, 0x1EE20, 0x1EE21,
    0x1EE23, 0x1EE24, 0x1EE25, 0x1EE27, 0x1EE28, 0x1EE29, 0x1EE33, 0x1EE34, 0x1EE38, 0x1EE39,
    0x1EE3A, 0x1EE3B, 0x1EE3C, 0x1EE42, 0x1EE43, 0x1EE47, 0x1EE48, 0x1EE49, 0x1EE4A, 0x1EE4B,
    0x1EE4C, 0x1EE4D, 0x1EE50, 0x1EE51, 0x1EE53, 0x1EE54, 0x1EE55, 0x1EE57, 0x1EE58, 0x1EE59,
    0x1EE5A, 0x1EE5B, 0x1EE5C, 0x1EE5D, 0x1EE5E, 0x1EE5F, 0x1EE60, 0x1EE61, 0x1EE63, 0x1EE64,
    0x1EE65, 0x1EE67, 0x1EE6B, 0x1EE6C, 0x1EE73, 0x1EE74, 0x1EE78, 0x1EE79, 0x1EE7D, 0x1EE7E,
    0x1EE7F, 0x1EE80, 0x1EE8A, 0x1EE8B, 0x1EE9C, 0x1EEA1, 0x1EEA4, 0x1EEA5, 0x1EEAA, 0x1EEAB,
    0x1EEBC, 0x1EEF0, 0x1EEF2, 0x1F000, 0x1F02C, 0x1F030, 0x1F094, 0x1F0A0, 0x1F0AF, 0x1F0B1,
    0x1F0C0, 0x1F0C1, 0x1F0D0, 0x1F0D1, 0x1F0F6, 0x1F100, 0x1F1AE, 0x1F1E6, 0x1F203, 0x1F210,
    0x1F23C, 0x1F240, 0x1F249, 0x1F250, 0x1F252, 0x1F260, 0x1F266, 0x1F300, 0x1F6D8, 0x1F6DC,
    0x1F6ED, 0x1F6F0, 0x1F6FD, 0x1F700, 0x1F777, 0x1F77B, 0x1F7DA, 0x1F7E0, 0x1F7EC, 0x1F7F0,
    0x1F7F1, 0x1F800, 0x1F80C, 0x1F810, 0x1F848, 0x1F850, 0x1F85A, 0x1F860, 0x1F888, 0x1F890,
    0x1F8AE, 0x1F8B0, 0x1F8B2, 0x1F900, 0x1FA54, 0x1FA60, 0x1FA6E, 0x1FA70, 0x1FA7D, 0x1FA80,
    0x1FA89, 0x1FA90, 0x1FABE, 0x1FABF, 0x1FAC6, 0x1FACE, 0x1FADC, 0x1FAE0, 0x1FAE9, 0x1FAF0,
    0x1FAF9, 0x1FB00, 0x1FB93, 0x1FB94, 0x1FBCB, 0x1FBF0, 0x1FBFA, 0x20000, 0x2A6E0, 0x2A700,
    0x2B73A, 0x2B740, 0x2B81E, 0x2B820, 0x2CEA2, 0x2CEB0, 0x2EBE1, 0x2F800, 0x2FA1E, 0x30000,
    0x3134B, 0x31350, 0x323B0, 0xE0100, 0xE01F0,
];

#[cfg(test)]
mod tests {
    use super::*;

    struct Entry {
        name: &'static str,
        other: &'static str,
        kind: &'static str,
        labels: &'static [(&'static str, &'static str)],
    }

    const fn entry(name: &'static str, labels: &'static [(&'static str, &'static str)]) -> Entry {
        Entry {
            name,
            other: "",
            kind: "",
            labels,
        }
    }

    // The corpus of containerd's TestFilters.
    const CORPUS: &[Entry] = &[
        entry("foo", &[("foo", "true")]),
        entry("bar", &[]),
        entry(
            "foo",
            &[("foo", "present"), ("more complex label", "present")],
        ),
        entry("bar", &[("bar", "true")]),
        entry("fooer", &[("more complex label with \\ and \"", "present")]),
        entry(
            "fooer",
            &[("more complex label with \\ and \".post", "present")],
        ),
        Entry {
            other: "too complex, yo",
            ..entry("baz", &[])
        },
        Entry {
            other: "abc",
            ..entry("bazo", &[])
        },
        entry("compound", &[("foo", "omg_asdf.asdf-qwer")]),
    ];

    // The adaptor of containerd's TestFilters, plus a `kind` field.
    fn lookup(e: &Entry, path: &[String]) -> Option<String> {
        let nonempty = |v: &str| (!v.is_empty()).then(|| v.to_string());
        match path.first().map(String::as_str) {
            Some("name") => nonempty(e.name),
            Some("other") => nonempty(e.other),
            Some("kind") => nonempty(e.kind),
            Some("labels") => {
                let key = path[1..].join(".");
                e.labels
                    .iter()
                    .find(|(k, _)| *k == key)
                    .map(|(_, v)| v.to_string())
            }
            _ => None,
        }
    }

    fn matching(filter: &Filter, corpus: &[Entry]) -> Vec<usize> {
        (0..corpus.len())
            .filter(|&i| filter.matches(&|p: &[String]| lookup(&corpus[i], p)))
            .collect()
    }

    fn run(input: &str) -> Result<Vec<usize>, String> {
        Filter::parse_all(&[input])
            .map(|f| matching(&f, CORPUS))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn containerd_filter_table() {
        let all: Vec<usize> = (0..CORPUS.len()).collect();
        let ok = |v: &[usize]| Ok::<_, String>(v.to_vec());
        let err = |s: &str| Err::<Vec<usize>, _>(s.to_string());
        let cases: &[(&str, Result<Vec<usize>, String>)] = &[
            ("", Ok(all.clone())),
            ("name", Ok(all.clone())),
            ("labels.foo", ok(&[0, 2, 8])),
            ("labels.foo,name", ok(&[0, 2, 8])),
            ("labels.foo==true", ok(&[0])),
            ("labels.foo==omg_asdf.asdf-qwer", ok(&[8])),
            (
                "labels.|foo|==omg_asdf.asdf-qwer",
                err("filters: parse error: [labels. >|||< foo|==omg_asdf.asdf-qwer]: invalid quote encountered at 7"),
            ),
            ("name==bar", ok(&[1, 3])),
            ("name!=bar", ok(&[0, 2, 4, 5, 6, 7, 8])),
            ("name==bar,labels.bar", ok(&[3])),
            ("other==\"too complex, yo\"", ok(&[6])),
            ("other~=[abc]+,name!=foo", ok(&[6, 7])),
            ("other~=/[abc]+/,name!=foo", ok(&[6, 7])),
            ("other~=/[abc]{1,2}/,name!=foo", ok(&[6, 7])),
            ("other~=/[abc]{0,1}\"\\//,name!=foo", ok(&[])),
            ("name==bar,labels.bar==true", ok(&[3])),
            ("name==bar,labels.bar==wrong", ok(&[])),
            (r#"name==foo,labels."more complex label""#, ok(&[2])),
            (r#"labels."more complex label with \\ and \""==present"#, ok(&[4])),
            (r#"labels."more complex label with \\ and \"".post==present"#, ok(&[5])),
            (
                r#"labels.?"more complex label with \\ and \"".post==present"#,
                err(r#"filters: parse error: [labels. >|?|< "more complex label with \\ and \"".post==present]: expected field or quoted at 7"#),
            ),
            (
                "name==foo,",
                err("filters: parse error: [name==foo,]: expected field or quoted at 10"),
            ),
            (
                "labels.",
                err("filters: parse error: [labels.]: expected field or quoted at 7"),
            ),
            (
                "image~=,id?=?fbaq",
                err("filters: parse error: [image~= >|,|< id?=?fbaq]: expected value or quoted at 7"),
            ),
            (
                "labels.ns/key==value",
                err("filters: parse error: [labels.ns >|/|< key==value]: quoted literal not terminated at 9"),
            ),
            (
                "labels.key==/value",
                err("filters: parse error: [labels.key== >|/|< value]: quoted literal not terminated at 12"),
            ),
        ];
        for (input, want) in cases {
            assert_eq!(&run(input), want, "input {input:?}");
        }
    }

    #[test]
    fn extra_semantics() {
        let cases: &[(&str, Result<&[usize], &str>)] = &[
            // `!=` matches an absent field; `~=` tests an absent field as "".
            ("other!=abc", Ok(&[0, 1, 2, 3, 4, 5, 6, 8])),
            ("other~=^$", Ok(&[0, 1, 2, 3, 4, 5, 8])),
            ("labels.foo!=true", Ok(&[1, 2, 3, 4, 5, 6, 7, 8])),
            // An invalid regexp is not a parse error; it never matches.
            ("name~=(", Ok(&[])),
            ("name~=/a{2,1}/", Ok(&[])),
            ("name~=|^fo+$|", Ok(&[0, 2])),
            ("name~=\"^ba\\x7a\"", Ok(&[6, 7])),
            ("name == foo", Ok(&[0, 2])),
            ("  name==foo,  labels.foo", Ok(&[0, 2])),
            ("\"name\"==foo", Ok(&[0, 2])),
            ("name==\"\\u0066oo\"", Ok(&[0, 2])),
            ("name==\"\\146oo\"", Ok(&[0, 2])),
            ("name!=\"\\xff\"", Ok(&[0, 1, 2, 3, 4, 5, 6, 7, 8])),
            ("name==\"\\xff\"", Ok(&[])),
            ("name~=\"\\xff\"", Ok(&[])),
            ("labels.foo==omg_asdf.asdf-qwer,name==compound", Ok(&[8])),
            ("labels.\"foo\"", Ok(&[0, 2, 8])),
            ("labels.more.\"complex\"", Ok(&[])),
            (
                "name==foo ",
                Err("filters: parse error: [name==foo >| |< ]: unexpected input:   at 9"),
            ),
            (
                "name ",
                Err(r#"filters: parse error: [name ]: expected an operator ("=="|"!="|"~=") at 5"#),
            ),
            (
                "name=foo",
                Err(r#"filters: parse error: [name >|=|< foo]: unsupported operator "=" at 4"#),
            ),
            (
                "name===foo",
                Err(r#"filters: parse error: [name >|=|< ==foo]: unsupported operator "===" at 4"#),
            ),
            (
                "name==/foo/",
                Err("filters: parse error: [name== >|/|< foo/]: invalid quote encountered at 6"),
            ),
            (
                "name==\"foo\".bar",
                Err("filters: parse error: [name==\"foo\" >|.|< bar]: unexpected input: . at 11"),
            ),
            (
                "name==",
                Err("filters: parse error: [name==]: expected value or quoted at 6"),
            ),
            (
                ",name",
                Err("filters: parse error: [ >|,|< name]: expected field or quoted at 0"),
            ),
            (
                "name,,kind",
                Err("filters: parse error: [name, >|,|< kind]: expected field or quoted at 5"),
            ),
            (
                "labels.\"\\777\"",
                Err("filters: parse error: [labels. >|\"|< \\777\"]: unquoting failed: quote syntax error at 7"),
            ),
            (
                "labels.\"\\q\"",
                Err("filters: parse error: [labels. >|\"|< \\q\"]: illegal escape sequence at 7"),
            ),
            (
                "name==\"a\nb\"",
                Err("filters: parse error: [name== >|\"|< a\\nb\"]: quoted literal not terminated at 6"),
            ),
            (
                "name==a\u{1}",
                Err("filters: parse error: [name==a >|\\u{1}|< ]: unexpected input: \\u{1} at 7"),
            ),
            (
                "name==a\0",
                Err("filters: parse error: [name==a >|\\u{0}|< ]: unexpected input: \u{fffd} at 7"),
            ),
            (
                "name==\u{fffd}",
                Err("filters: parse error: [name== >|\u{fffd}|< ]: rune error at 6"),
            ),
            (
                "name牛",
                Err(r#"filters: parse error: [name >|牛|< ]: expected an operator ("=="|"!="|"~=") at 4"#),
            ),
        ];
        for (input, want) in cases {
            let want = want.map(<[usize]>::to_vec).map_err(str::to_string);
            assert_eq!(run(input), want, "input {input:?}");
        }
    }

    #[test]
    fn parse_all_ors_expressions() {
        let none: [&str; 0] = [];
        let f = Filter::parse_all(&none).expect("empty list");
        assert_eq!(matching(&f, CORPUS).len(), CORPUS.len());

        let f = Filter::parse_all(&["name==bar", "labels.foo==true"]).expect("valid");
        assert_eq!(matching(&f, CORPUS), vec![0, 1, 3]);

        let f = Filter::parse_all(&[String::from("name==nothing"), String::new()]).expect("valid");
        assert_eq!(matching(&f, CORPUS).len(), CORPUS.len());

        let e = Filter::parse_all(&["name", "name=="]).expect_err("second is invalid");
        assert_eq!(
            e.to_string(),
            "filters: parse error: [name==]: expected value or quoted at 6"
        );
    }

    #[test]
    fn field_paths_reach_the_adaptor() {
        let f =
            Filter::parse_all(&[r#"labels."containerd.io/gc.root",kind==committed,labels.a.b~=x"#])
                .expect("valid");
        let seen = std::cell::RefCell::new(Vec::new());
        let field = |p: &[String]| -> Option<String> {
            seen.borrow_mut().push(p.to_vec());
            match p.first().map(String::as_str) {
                Some("kind") => Some("committed".into()),
                Some("labels") => Some("xyz".into()),
                _ => None,
            }
        };
        assert!(f.matches(&field));
        let want: Vec<Vec<String>> = [
            &["labels", "containerd.io/gc.root"][..],
            &["kind"],
            &["labels", "a", "b"],
        ]
        .iter()
        .map(|p| p.iter().map(|s| s.to_string()).collect())
        .collect();
        assert_eq!(*seen.borrow(), want);
    }

    #[test]
    fn snapshot_like_adaptor() {
        struct Info {
            name: &'static str,
            kind: &'static str,
            labels: &'static [(&'static str, &'static str)],
        }
        let infos = [
            Info {
                name: "sha256:aa",
                kind: "committed",
                labels: &[("containerd.io/gc.root", "1")],
            },
            Info {
                name: "k8s.io/1/extract-1",
                kind: "active",
                labels: &[("containerd.io/snapshot.ref", "sha256:bb")],
            },
            Info {
                name: "view-1",
                kind: "view",
                labels: &[],
            },
        ];
        let select = |expr: &[&str]| -> Vec<&str> {
            let f = Filter::parse_all(expr).expect("valid");
            infos
                .iter()
                .filter(|i| {
                    f.matches(&|p: &[String]| match p.first().map(String::as_str) {
                        Some("name") => Some(i.name.to_string()),
                        Some("kind") => Some(i.kind.to_string()),
                        Some("labels") => {
                            let key = p[1..].join(".");
                            i.labels
                                .iter()
                                .find(|(k, _)| *k == key)
                                .map(|(_, v)| v.to_string())
                        }
                        _ => None,
                    })
                })
                .map(|i| i.name)
                .collect()
        };
        assert_eq!(
            select(&[r#"labels."containerd.io/gc.root""#]),
            ["sha256:aa"]
        );
        // Quoted values take Go string escapes, so a regexp `\.` must be written `\\.`.
        assert!(Filter::parse_all(&[r#"name~=/^k8s\.io/"#]).is_err());
        // Unquoted, the `/` opens a quoted literal that never ends.
        assert!(Filter::parse_all(&["labels.containerd.io/gc.root"]).is_err());
        assert_eq!(
            select(&["kind!=committed"]),
            ["k8s.io/1/extract-1", "view-1"]
        );
        assert_eq!(
            select(&["kind==view", "kind==committed"]),
            ["sha256:aa", "view-1"]
        );
        assert_eq!(select(&[r#"name~=/^k8s\\.io\//"#]), ["k8s.io/1/extract-1"]);
        assert_eq!(
            select(&[r#"labels."containerd.io/snapshot.ref"~=^sha256:"#]),
            ["k8s.io/1/extract-1"]
        );
    }

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

    type Tok = (usize, i32, &'static str, &'static str);

    #[test]
    fn containerd_scanner_table() {
        const F: i32 = TOKEN_FIELD;
        const O: i32 = TOKEN_OPERATOR;
        const V: i32 = TOKEN_VALUE;
        const S: i32 = TOKEN_SEPARATOR;
        const Q: i32 = TOKEN_QUOTED;
        const I: i32 = TOKEN_ILLEGAL;
        const E: i32 = TOKEN_EOF;
        let cases: &[(&str, &[Tok])] = &[
            ("name", &[(0, F, "name", ""), (4, E, "", "")]),
            (
                "name==value,foo!=bar",
                &[
                    (0, F, "name", ""),
                    (4, O, "==", ""),
                    (6, V, "value", ""),
                    (11, S, ",", ""),
                    (12, F, "foo", ""),
                    (15, O, "!=", ""),
                    (17, V, "bar", ""),
                    (20, E, "", ""),
                ],
            ),
            (
                "name==value,labels.foo=value,other.bar~=match",
                &[
                    (0, F, "name", ""),
                    (4, O, "==", ""),
                    (6, V, "value", ""),
                    (11, S, ",", ""),
                    (12, F, "labels", ""),
                    (18, S, ".", ""),
                    (19, F, "foo", ""),
                    (22, O, "=", ""),
                    (23, V, "value", ""),
                    (28, S, ",", ""),
                    (29, F, "other", ""),
                    (34, S, ".", ""),
                    (35, F, "bar", ""),
                    (38, O, "~=", ""),
                    (40, V, "match", ""),
                    (45, E, "", ""),
                ],
            ),
            (
                "name~=[abc]+,foo=test",
                &[
                    (0, F, "name", ""),
                    (4, O, "~=", ""),
                    (6, V, "[abc]+", ""),
                    (12, S, ",", ""),
                    (13, F, "foo", ""),
                    (16, O, "=", ""),
                    (17, V, "test", ""),
                    (21, E, "", ""),
                ],
            ),
            (
                r"name~=[abc]\+,foo=test",
                &[
                    (0, F, "name", ""),
                    (4, O, "~=", ""),
                    (6, V, r"[abc]\+", ""),
                    (13, S, ",", ""),
                    (14, F, "foo", ""),
                    (17, O, "=", ""),
                    (18, V, "test", ""),
                    (22, E, "", ""),
                ],
            ),
            (
                "name~=/[abc]{0,2}/,foo=test",
                &[
                    (0, F, "name", ""),
                    (4, O, "~=", ""),
                    (6, Q, "/[abc]{0,2}/", ""),
                    (18, S, ",", ""),
                    (19, F, "foo", ""),
                    (22, O, "=", ""),
                    (23, V, "test", ""),
                    (27, E, "", ""),
                ],
            ),
            (
                "name~=牛,labels.moo=true",
                &[
                    (0, F, "name", ""),
                    (4, O, "~=", ""),
                    (6, V, "牛", ""),
                    (9, S, ",", ""),
                    (10, F, "labels", ""),
                    (16, S, ".", ""),
                    (17, F, "moo", ""),
                    (20, O, "=", ""),
                    (21, V, "true", ""),
                    (25, E, "", ""),
                ],
            ),
            (
                "name~=|牛|,labels.moo=true",
                &[
                    (0, F, "name", ""),
                    (4, O, "~=", ""),
                    (6, Q, "|牛|", ""),
                    (11, S, ",", ""),
                    (12, F, "labels", ""),
                    (18, S, ".", ""),
                    (19, F, "moo", ""),
                    (22, O, "=", ""),
                    (23, V, "true", ""),
                    (27, E, "", ""),
                ],
            ),
            (
                r#"name~="asdf\n\tfooo""#,
                &[
                    (0, F, "name", ""),
                    (4, O, "~=", ""),
                    (6, Q, r#""asdf\n\tfooo""#, ""),
                    (20, E, "", ""),
                ],
            ),
            (
                "foo\0bar",
                &[
                    (0, F, "foo", ""),
                    (3, I, "", "unexpected null"),
                    (4, F, "bar", ""),
                    (7, E, "", ""),
                ],
            ),
            (
                "foo = bar    ",
                &[
                    (0, F, "foo", ""),
                    (4, O, "=", ""),
                    (6, V, "bar", ""),
                    (13, E, "", ""),
                ],
            ),
            (
                "compound.labels==punctuated_value.foo-bar",
                &[
                    (0, F, "compound", ""),
                    (8, S, ".", ""),
                    (9, F, "labels", ""),
                    (15, O, "==", ""),
                    (17, V, "punctuated_value.foo-bar", ""),
                    (41, E, "", ""),
                ],
            ),
            (
                "interrupted=",
                &[(0, F, "interrupted", ""), (11, O, "=", ""), (12, E, "", "")],
            ),
            (
                "doublevalue=value value",
                &[
                    (0, F, "doublevalue", ""),
                    (11, O, "=", ""),
                    (12, V, "value", ""),
                    (18, F, "value", ""),
                    (23, E, "", ""),
                ],
            ),
            (
                r#""leading quote".postquote==value"#,
                &[
                    (0, Q, r#""leading quote""#, ""),
                    (15, S, ".", ""),
                    (16, F, "postquote", ""),
                    (25, O, "==", ""),
                    (27, V, "value", ""),
                    (32, E, "", ""),
                ],
            ),
            (
                "input==,id!=ff",
                &[
                    (0, F, "input", ""),
                    (5, O, "==", ""),
                    (7, S, ",", ""),
                    (8, F, "id", ""),
                    (10, O, "!=", ""),
                    (12, V, "ff", ""),
                    (14, E, "", ""),
                ],
            ),
            (
                r"input~=/foo\/bar/,id!=ff",
                &[
                    (0, F, "input", ""),
                    (5, O, "~=", ""),
                    (7, Q, r"/foo\/bar/", ""),
                    (17, S, ",", ""),
                    (18, F, "id", ""),
                    (20, O, "!=", ""),
                    (22, V, "ff", ""),
                    (24, E, "", ""),
                ],
            ),
            (
                "input~=|foo/bar|,id!=ff",
                &[
                    (0, F, "input", ""),
                    (5, O, "~=", ""),
                    (7, Q, "|foo/bar|", ""),
                    (16, S, ",", ""),
                    (17, F, "id", ""),
                    (19, O, "!=", ""),
                    (21, V, "ff", ""),
                    (23, E, "", ""),
                ],
            ),
            (
                "labels.containerd.io/key==value",
                &[
                    (0, F, "labels", ""),
                    (6, S, ".", ""),
                    (7, F, "containerd", ""),
                    (17, S, ".", ""),
                    (18, F, "io", ""),
                    (20, I, "/key==value", "quoted literal not terminated"),
                    (31, E, "", ""),
                ],
            ),
            (
                "labels.\"containerd.io\nkey\"==value",
                &[
                    (0, F, "labels", ""),
                    (6, S, ".", ""),
                    (7, I, "\"containerd.io\n", "quoted literal not terminated"),
                    (22, F, "key", ""),
                    (25, I, "\"==value", "quoted literal not terminated"),
                    (33, E, "", ""),
                ],
            ),
            (
                r#"labels."\g""#,
                &[
                    (0, F, "labels", ""),
                    (6, S, ".", ""),
                    (7, I, r#""\g""#, "illegal escape sequence"),
                    (11, E, "", ""),
                ],
            ),
            (
                r#"labels."\xaz""#,
                &[
                    (0, F, "labels", ""),
                    (6, S, ".", ""),
                    (7, I, r#""\xaz""#, "illegal numeric escape sequence"),
                    (13, E, "", ""),
                ],
            ),
        ];
        for (input, want) in cases {
            let mut sc = Scanner::new(input);
            let mut got = Vec::new();
            loop {
                let (pos, tok, text) = sc.scan();
                let err = if tok == TOKEN_ILLEGAL { sc.err } else { "" };
                got.push((pos, tok, text, err));
                if tok == TOKEN_EOF || got.len() > want.len() {
                    break;
                }
            }
            assert_eq!(&got, want, "input {input:?}");
            assert_eq!(sc.scan().1, TOKEN_EOF, "must consume all input: {input:?}");
        }
    }

    #[test]
    fn value_runes_follow_go() {
        for c in [
            'a', '牛', '-', '.', '=', '\u{a0}', /* NBSP is a space */
        ] {
            assert_eq!(is_value_rune(c as i32), c != '\u{a0}', "{c:?}");
        }
        // Cc, Cf, Co, Cn, separators and spaces end a value.
        for c in [
            ',', ' ', '\t', '\u{1}', '\u{200b}', '\u{e000}', '\u{378}', '\u{2028}',
        ] {
            assert!(!is_value_rune(c as i32), "{c:?}");
        }
        assert!(!is_value_rune(TOKEN_EOF) && !is_value_rune(TOKEN_ILLEGAL));
        assert!(VALUE_RUNE_BOUNDS.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn whitespace_matches_go() {
        // Every rune for which Go 1.26's unicode.IsSpace is true.
        let go: Vec<u32> = [
            0x9, 0xa, 0xb, 0xc, 0xd, 0x20, 0x85, 0xa0, 0x1680, 0x2000, 0x2001, 0x2002, 0x2003,
            0x2004, 0x2005, 0x2006, 0x2007, 0x2008, 0x2009, 0x200a, 0x2028, 0x2029, 0x202f, 0x205f,
            0x3000,
        ]
        .to_vec();
        let rust: Vec<u32> = (0..=0x10FFFFu32).filter(|&r| is_space(r as i32)).collect();
        assert_eq!(rust, go);
    }

    #[test]
    fn display_is_one_line() {
        let e = Filter::parse_all(&["a\n,b"]).expect_err("invalid");
        let s = e.to_string();
        assert!(!s.contains('\n'), "{s}");
        assert_eq!(
            s,
            r#"filters: parse error: [a\n >|,|< b]: expected an operator ("=="|"!="|"~=") at 2"#
        );
    }

    // Deterministic xorshift so the test needs no extra crates.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    #[test]
    fn random_input_never_panics() {
        const PIECES: &[&str] = &[
            "name", "labels", "kind", "a", "_", "9", ".", ",", "==", "!=", "~=", "=", "!", "~",
            "\"", "/", "|", "'", "\\", "\\x", "\\u", "\\U", "\\0", "\\7", "\\n", "\\\"", "\\/",
            "ff", "1", "g", " ", "\t", "\n", "\0", "\u{1}", "\u{fffd}", "牛", "é", "😀",
            "\u{200b}", "\u{2028}", "[", "]", "(", ")", "{", "}", "*", "+", "?", "^", "$",
        ];
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let mut parsed = 0;
        for i in 0..3000 {
            let mut s = String::new();
            for _ in 0..rng.below(12) {
                if i % 5 == 0 {
                    // Arbitrary scalar values, not only the pieces above.
                    let r = (rng.next() % 0x11_0000) as u32;
                    s.push(char::from_u32(r).unwrap_or('x'));
                } else {
                    s.push_str(PIECES[rng.below(PIECES.len())]);
                }
            }
            match Filter::parse_all(&[s.as_str()]) {
                Ok(f) => {
                    parsed += 1;
                    let _ = matching(&f, CORPUS);
                }
                Err(e) => {
                    let msg = e.to_string();
                    assert!(!msg.contains('\n'), "{msg}");
                    assert!(msg.starts_with("filters: parse error: "), "{msg}");
                }
            }
        }
        assert!(parsed > 50, "too few inputs parsed: {parsed}");
    }
}
