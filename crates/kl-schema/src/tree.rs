//! A read-only JSON tree that borrows from its text, for mapping answers.
//!
//! An answer is mapped once per process (the rendering is kept), but a
//! long-running stream meets tens of thousands of answers, and a
//! `serde_json::Value` costs an allocation for every key, string and number
//! and a hashed index for every object. A [`Tape`] is one list of tokens in
//! text order: strings and numbers borrow from the text (only strings with
//! escapes are copied), an array or object records where it ends, and an
//! object's members are found by a scan: answers' objects are small, and a
//! scan costs less than hashing. Numbers stay as written.

use serde_json::Value;

/// A JSON text read into tokens.
#[derive(Debug)]
pub(crate) struct Tape<'a> {
    toks: Vec<Tok<'a>>,
    /// The strings that had escapes, unescaped.
    owned: Vec<String>,
}

#[derive(Debug, Clone, Copy)]
enum Tok<'a> {
    Null,
    Bool(bool),
    /// As written in the text.
    Number(&'a str),
    /// A string without escapes, between its quotes.
    Str(&'a str),
    /// A string with escapes: its index in [`Tape::owned`].
    Owned(usize),
    /// An array: the index of the token after its last element.
    Array(usize),
    /// An object (key and value tokens in turn): the index of the token
    /// after its last member.
    Object(usize),
}

/// One value on a tape.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Cursor<'t, 'a> {
    tape: &'t Tape<'a>,
    at: usize,
}

impl<'a> Tape<'a> {
    /// The tokens of `text`, which must be one JSON value (and nothing else
    /// but whitespace); `None` when it is not.
    pub(crate) fn parse(text: &'a str) -> Option<Tape<'a>> {
        let mut p = Parser {
            text,
            bytes: text.as_bytes(),
            at: 0,
            tape: Tape { toks: Vec::with_capacity(text.len() / 8), owned: Vec::new() },
        };
        p.value(0)?;
        p.skip_ws();
        (p.at == p.bytes.len()).then_some(p.tape)
    }

    /// The value the text holds.
    pub(crate) fn root(&self) -> Cursor<'_, 'a> {
        Cursor { tape: self, at: 0 }
    }
}

impl<'t, 'a> Cursor<'t, 'a> {
    fn tok(self) -> Tok<'a> {
        self.tape.toks[self.at]
    }

    fn at(self, at: usize) -> Cursor<'t, 'a> {
        Cursor { tape: self.tape, at }
    }

    /// The index of the token after this value.
    fn after(self) -> usize {
        match self.tok() {
            Tok::Array(end) | Tok::Object(end) => end,
            _ => self.at + 1,
        }
    }

    /// The values of an array, or the keys and values of an object in turn.
    fn children(self) -> impl Iterator<Item = Cursor<'t, 'a>> {
        let end = match self.tok() {
            Tok::Array(end) | Tok::Object(end) => end,
            _ => self.at + 1,
        };
        let mut next = self.at + 1;
        std::iter::from_fn(move || {
            (next < end).then(|| {
                let c = self.at(next);
                next = c.after();
                c
            })
        })
    }

    /// An object's members, in text order.
    fn members(self) -> impl Iterator<Item = (Cursor<'t, 'a>, Cursor<'t, 'a>)> {
        let mut children = self.children();
        std::iter::from_fn(move || Some((children.next()?, children.next()?)))
    }

    pub(crate) fn is_null(self) -> bool {
        matches!(self.tok(), Tok::Null)
    }

    pub(crate) fn is_object(self) -> bool {
        matches!(self.tok(), Tok::Object(_))
    }

    pub(crate) fn is_number_or_bool(self) -> bool {
        matches!(self.tok(), Tok::Number(_) | Tok::Bool(_))
    }

    pub(crate) fn as_str(self) -> Option<&'t str> {
        match self.tok() {
            Tok::Str(s) => Some(s),
            Tok::Owned(i) => Some(&self.tape.owned[i]),
            _ => None,
        }
    }

    /// An array's elements; `None` for anything else.
    pub(crate) fn items(self) -> Option<impl Iterator<Item = Cursor<'t, 'a>>> {
        matches!(self.tok(), Tok::Array(_)).then(|| self.children())
    }

    /// The member `key` of an object (the last, if it repeats, as
    /// `serde_json` keeps it); `None` for anything else.
    pub(crate) fn get(self, key: &str) -> Option<Cursor<'t, 'a>> {
        if !self.is_object() {
            return None;
        }
        self.members().filter(|(k, _)| k.as_str() == Some(key)).last().map(|(_, v)| v)
    }

    /// The value as a `serde_json::Value` (numbers as written).
    pub(crate) fn to_value(self) -> Value {
        match self.tok() {
            Tok::Null => Value::Null,
            Tok::Bool(b) => Value::Bool(b),
            Tok::Number(n) => serde_json::from_str(n).unwrap_or(Value::Null),
            Tok::Str(_) | Tok::Owned(_) => Value::String(self.as_str().unwrap_or_default().to_owned()),
            Tok::Array(_) => Value::Array(self.children().map(Cursor::to_value).collect()),
            Tok::Object(_) => {
                let mut map = serde_json::Map::new();
                for (k, v) in self.members() {
                    map.insert(k.as_str().unwrap_or_default().to_owned(), v.to_value());
                }
                Value::Object(map)
            }
        }
    }
}

/// Equality as `serde_json::Value` has it: numbers as written, an object's
/// members in any order.
impl PartialEq for Cursor<'_, '_> {
    fn eq(&self, other: &Self) -> bool {
        match (self.tok(), other.tok()) {
            (Tok::Null, Tok::Null) => true,
            (Tok::Bool(a), Tok::Bool(b)) => a == b,
            (Tok::Number(a), Tok::Number(b)) => a == b,
            (Tok::Str(_) | Tok::Owned(_), Tok::Str(_) | Tok::Owned(_)) => self.as_str() == other.as_str(),
            (Tok::Array(_), Tok::Array(_)) => {
                let (mut a, mut b) = (self.children(), other.children());
                loop {
                    match (a.next(), b.next()) {
                        (None, None) => return true,
                        (Some(x), Some(y)) if x == y => {}
                        _ => return false,
                    }
                }
            }
            (Tok::Object(_), Tok::Object(_)) => {
                // As maps: the last of a repeated key counts.
                fn keys<'t>(c: Cursor<'t, '_>) -> Vec<&'t str> {
                    let mut keys: Vec<&str> = c.members().filter_map(|(k, _)| k.as_str()).collect();
                    keys.sort_unstable();
                    keys.dedup();
                    keys
                }
                let mine = keys(*self);
                mine == keys(*other) && mine.iter().all(|k| self.get(k) == other.get(k))
            }
            _ => false,
        }
    }
}

/// Nesting deeper than this is refused, as `serde_json` refuses it.
const MAX_DEPTH: usize = 128;

struct Parser<'a> {
    text: &'a str,
    bytes: &'a [u8],
    at: usize,
    tape: Tape<'a>,
}

impl<'a> Parser<'a> {
    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.bytes.get(self.at) {
            self.at += 1;
        }
    }

    fn eat(&mut self, b: u8) -> bool {
        self.skip_ws();
        if self.bytes.get(self.at) == Some(&b) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn literal(&mut self, word: &str, tok: Tok<'a>) -> Option<()> {
        let end = self.at + word.len();
        (self.bytes.get(self.at..end)? == word.as_bytes()).then(|| {
            self.at = end;
            self.tape.toks.push(tok);
        })
    }

    /// Reads one value onto the tape.
    fn value(&mut self, depth: usize) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.skip_ws();
        match *self.bytes.get(self.at)? {
            b'{' => self.container(b'}', Tok::Object, |p| {
                p.skip_ws();
                if p.bytes.get(p.at) != Some(&b'"') {
                    return None;
                }
                p.string()?;
                if !p.eat(b':') {
                    return None;
                }
                p.value(depth + 1)
            }),
            b'[' => self.container(b']', Tok::Array, |p| p.value(depth + 1)),
            b'"' => self.string(),
            b't' => self.literal("true", Tok::Bool(true)),
            b'f' => self.literal("false", Tok::Bool(false)),
            b'n' => self.literal("null", Tok::Null),
            b'-' | b'0'..=b'9' => self.number(),
            _ => None,
        }
    }

    /// An array or object at its opening bracket: `item` reads each
    /// element or member, commas between, up to `close`. Its token, made by
    /// `tok` from the index after its end, goes before its contents.
    fn container(
        &mut self,
        close: u8,
        tok: fn(usize) -> Tok<'a>,
        mut item: impl FnMut(&mut Self) -> Option<()>,
    ) -> Option<()> {
        self.at += 1;
        let start = self.tape.toks.len();
        self.tape.toks.push(tok(0));
        if !self.eat(close) {
            loop {
                item(self)?;
                if self.eat(close) {
                    break;
                }
                if !self.eat(b',') {
                    return None;
                }
            }
        }
        self.tape.toks[start] = tok(self.tape.toks.len());
        Some(())
    }

    /// A number, checked against JSON's grammar.
    fn number(&mut self) -> Option<()> {
        let start = self.at;
        let digits = |p: &mut Parser<'a>| {
            let from = p.at;
            while p.bytes.get(p.at).is_some_and(u8::is_ascii_digit) {
                p.at += 1;
            }
            p.at > from
        };
        if self.bytes.get(self.at) == Some(&b'-') {
            self.at += 1;
        }
        match self.bytes.get(self.at) {
            Some(b'0') => self.at += 1,
            Some(b'1'..=b'9') => {
                digits(self);
            }
            _ => return None,
        }
        if self.bytes.get(self.at) == Some(&b'.') {
            self.at += 1;
            if !digits(self) {
                return None;
            }
        }
        if let Some(b'e' | b'E') = self.bytes.get(self.at) {
            self.at += 1;
            if let Some(b'+' | b'-') = self.bytes.get(self.at) {
                self.at += 1;
            }
            if !digits(self) {
                return None;
            }
        }
        self.tape.toks.push(Tok::Number(&self.text[start..self.at]));
        Some(())
    }

    /// A string at the opening quote: borrowed unless it has escapes.
    fn string(&mut self) -> Option<()> {
        self.at += 1;
        let mut copy: Option<String> = None;
        loop {
            // The next quote or backslash; what lies before it is the
            // string's own text, which may hold no control character.
            let run = memchr::memchr2(b'"', b'\\', &self.bytes[self.at..])?;
            let piece = &self.text[self.at..self.at + run];
            if piece.bytes().any(|b| b < 0x20) {
                return None;
            }
            self.at += run + 1;
            if self.bytes[self.at - 1] == b'"' {
                let tok = match copy {
                    None => Tok::Str(piece),
                    Some(mut s) => {
                        s.push_str(piece);
                        self.tape.owned.push(s);
                        Tok::Owned(self.tape.owned.len() - 1)
                    }
                };
                self.tape.toks.push(tok);
                return Some(());
            }
            let out = copy.get_or_insert_with(String::new);
            out.push_str(piece);
            let escaped = *self.bytes.get(self.at)?;
            self.at += 1;
            match escaped {
                b'"' => out.push('"'),
                b'\\' => out.push('\\'),
                b'/' => out.push('/'),
                b'b' => out.push('\u{8}'),
                b'f' => out.push('\u{c}'),
                b'n' => out.push('\n'),
                b'r' => out.push('\r'),
                b't' => out.push('\t'),
                b'u' => out.push(self.unicode_escape()?),
                _ => return None,
            }
        }
    }

    /// The character of a `\u` escape whose `\u` was read: a surrogate
    /// pair makes one character; a lone surrogate is refused, as
    /// `serde_json` refuses it.
    fn unicode_escape(&mut self) -> Option<char> {
        let first = self.hex4()?;
        match first {
            0xD800..=0xDBFF => {
                if self.bytes.get(self.at..self.at + 2)? != b"\\u" {
                    return None;
                }
                self.at += 2;
                let second = self.hex4()?;
                if !(0xDC00..=0xDFFF).contains(&second) {
                    return None;
                }
                char::from_u32(0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00))
            }
            0xDC00..=0xDFFF => None,
            c => char::from_u32(c),
        }
    }

    fn hex4(&mut self) -> Option<u32> {
        let digits = self.text.get(self.at..self.at + 4)?;
        let n = u32::from_str_radix(digits, 16).ok().filter(|_| digits.bytes().all(|b| b.is_ascii_hexdigit()))?;
        self.at += 4;
        Some(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn read(text: &str) -> Option<Value> {
        Tape::parse(text).map(|t| t.root().to_value())
    }

    #[test]
    fn reads_what_serde_json_reads() {
        let texts = [
            r#"{"a":1,"b":[true,false,null],"c":{"d":"e"},"n":-1.5e-3,"big":123456789012345678901234567890}"#,
            r#" { "esc" : "q\" b\\ s\/ \b\f\n\r\t \u00e9 \ud83d\ude00 ✓" , "e" : [ ] , "o" : { } } "#,
            r#"{"dup":1,"x":[1,[2,[3]],{"y":{}}],"dup":2}"#,
            r#"[]"#,
            r#""x""#,
            r#"0"#,
        ];
        for text in texts {
            let value: Value = serde_json::from_str(text).unwrap();
            assert_eq!(read(text), Some(value), "{text}");
        }
        let tape = Tape::parse(r#"{"a":"b","n":[1,{"k":"v\n"}],"a":"c"}"#).unwrap();
        let root = tape.root();
        assert_eq!(root.get("a").and_then(Cursor::as_str), Some("c"), "the last of a repeated key");
        let items: Vec<_> = root.get("n").unwrap().items().unwrap().collect();
        assert_eq!(items.len(), 2);
        assert_eq!(items[1].get("k").and_then(Cursor::as_str), Some("v\n"));
        assert!(root.get("missing").is_none() && items[0].get("k").is_none() && root.items().is_none());
    }

    #[test]
    fn equality_is_serde_jsons() {
        let tape = Tape::parse(r#"[{"a":1,"b":[2]},{"b":[2],"a":1},{"a":1},"\u0041","A",1.0,1]"#).unwrap();
        let v: Vec<_> = tape.root().items().unwrap().collect();
        let values: Vec<Value> = v.iter().map(|c| c.to_value()).collect();
        for i in 0..v.len() {
            for j in 0..v.len() {
                assert_eq!(v[i] == v[j], values[i] == values[j], "{} vs {}", values[i], values[j]);
            }
        }
    }

    #[test]
    fn refuses_what_serde_json_refuses() {
        for text in [
            "",
            "{",
            "{\"a\"}",
            "{\"a\":}",
            "[1,]",
            "{\"a\":1,}",
            "01",
            "1.",
            "-",
            "1e",
            "tru",
            "\"\\x\"",
            "\"\\ud800\"",
            "\"\\udc00\"",
            "\"a\nb\"",
            "{} x",
            "\"\\u12\"",
            "\"\\u+123\"",
            "'a'",
        ] {
            assert!(serde_json::from_str::<Value>(text).is_err(), "{text:?} is JSON after all");
            assert!(Tape::parse(text).is_none(), "{text:?}");
        }
        let deep = "[".repeat(MAX_DEPTH + 2) + &"]".repeat(MAX_DEPTH + 2);
        assert!(Tape::parse(&deep).is_none());
        assert_eq!(read(r#"{"a":[1,{"b":null}]}"#), Some(json!({"a":[1,{"b":null}]})));
    }
}
