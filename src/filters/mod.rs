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
//!
//! Each submodule mirrors one file of containerd v2.4.2's `pkg/filters`, so that the two can be
//! read side by side; each file's tests sit next to its code:
//!
//! - `scanner.rs`: `scanner.go` (token kinds, the scanner, rune classes); its tests hold the
//!   cases of `scanner_test.go` and more;
//! - `parser.rs`: `parser.go` (`Parse`; `ParseAll` is [`Filter::parse_all`], `parseError` is
//!   [`ParseError`]);
//! - `quote.rs`: `quote.go` (`unquote`, `unquoteChar`);
//! - `filter.rs`: `filter.go` (`Any`, `All` and `Always` are [`Filter`]; the selector and its
//!   `Match`); its tests hold the cases of `filter_test.go` and more.
//!
//! `adaptor.go` has no counterpart: its `Adaptor` is the `field` closure given to
//! [`Filter::matches`], and the snapshot fields (`kind`, `name`, `parent`, `labels.<key>`) are
//! resolved in `src/snapshotter.rs`.
//!
//! [`Filter`]: crate::filters::Filter
//! [`Filter::matches`]: crate::filters::Filter::matches
//! [`Filter::parse_all`]: crate::filters::Filter::parse_all
//! [`ParseError`]: crate::filters::ParseError

mod filter;
mod parser;
mod quote;
mod scanner;

pub use filter::Filter;
pub use parser::ParseError;
