//! What a parsed filter is and how it matches: a port of containerd's `pkg/filters/filter.go`.

use regex::Regex;

/// A parsed list of filter expressions: the list is OR-ed, each expression's comma-separated
/// selectors are AND-ed.
#[derive(Debug, Clone)]
pub struct Filter {
    // An empty selector list matches everything (containerd's `Always`).
    pub(super) exprs: Vec<Vec<Selector>>,
}

impl Filter {
    /// `field` resolves a field path (e.g. ["labels", "containerd.io/gc.root"] or ["kind"]) to
    /// its value, or None when the field is not present — the role of containerd's Adaptor.
    pub fn matches<S: AsRef<str>>(&self, field: &dyn Fn(&[String]) -> Option<S>) -> bool {
        self.exprs
            .iter()
            .any(|sels| sels.iter().all(|s| s.matches(field)))
    }
}

#[derive(Debug, Clone)]
pub(super) struct Selector {
    pub(super) fieldpath: Vec<String>,
    pub(super) op: Op,
}

#[derive(Debug, Clone)]
pub(super) enum Op {
    Present,
    // None: the unquoted value is not UTF-8, so it equals no field value.
    Equal(Option<String>),
    NotEqual(Option<String>),
    // containerd compiles at match time and, on error, logs and never matches; compiling once
    // here is equivalent. The error text is kept for Debug output.
    Matches(Result<Regex, String>),
}

impl Selector {
    fn matches<S: AsRef<str>>(&self, field: &dyn Fn(&[String]) -> Option<S>) -> bool {
        let value = field(&self.fieldpath);
        let value = value.as_ref().map(AsRef::as_ref);
        match &self.op {
            Op::Present => value.is_some(),
            Op::Equal(want) => match (&value, want) {
                (Some(v), Some(w)) => v == w,
                _ => false,
            },
            // An absent field reads as "", as with containerd's adaptors.
            Op::NotEqual(want) => match want {
                Some(w) => value.unwrap_or("") != w,
                None => true,
            },
            Op::Matches(Ok(re)) => re.is_match(value.unwrap_or("")),
            Op::Matches(Err(_)) => false,
        }
    }
}

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
