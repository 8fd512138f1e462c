//! The parser: a port of containerd's `pkg/filters/parser.go`.

use super::filter::{Filter, Op, Selector};
use super::quote::unquote;
use super::scanner::{
    Scanner, TOKEN_EOF, TOKEN_FIELD, TOKEN_ILLEGAL, TOKEN_OPERATOR, TOKEN_QUOTED, TOKEN_SEPARATOR,
    TOKEN_VALUE,
};
use regex::Regex;
use std::fmt;

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
