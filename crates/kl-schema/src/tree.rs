//! A read-only JSON tree that borrows from its text, for mapping answers.
//!
//! An answer is mapped once per process (the rendering is kept), but a
//! long-running stream meets tens of thousands of answers, and a
//! `serde_json::Value` costs an allocation for every key, string and number
//! and a hashed index for every object. This tree borrows strings and
//! numbers from the text (only strings with escapes are copied) and keeps
//! an object's members in a list: answers' objects are small, and a scan
//! costs less than hashing. Numbers stay as written.

use std::borrow::Cow;

use serde_json::Value;

/// One JSON value, borrowed from the text it was read from.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Node<'a> {
    Null,
    Bool(bool),
    /// As written in the text.
    Number(&'a str),
    String(Cow<'a, str>),
    Array(Vec<Node<'a>>),
    /// Members in text order.
    Object(Vec<(Cow<'a, str>, Node<'a>)>),
}

/// Nesting deeper than this is refused, as `serde_json` refuses it.
const MAX_DEPTH: usize = 128;

impl<'a> Node<'a> {
    /// The tree of `text`, which must be one JSON value (and nothing else
    /// but whitespace); `None` when it is not.
    pub(crate) fn parse(text: &'a str) -> Option<Node<'a>> {
        let mut p = Parser { text, bytes: text.as_bytes(), at: 0 };
        let node = p.value(0)?;
        p.skip_ws();
        (p.at == p.bytes.len()).then_some(node)
    }

    /// The value as a `serde_json::Value` (numbers as written).
    pub(crate) fn to_value(&self) -> Value {
        match self {
            Node::Null => Value::Null,
            Node::Bool(b) => Value::Bool(*b),
            Node::Number(n) => serde_json::from_str(n).unwrap_or(Value::Null),
            Node::String(s) => Value::String(s.as_ref().to_owned()),
            Node::Array(items) => Value::Array(items.iter().map(Node::to_value).collect()),
            Node::Object(members) => {
                let mut map = serde_json::Map::new();
                for (k, v) in members {
                    map.insert(k.as_ref().to_owned(), v.to_value());
                }
                Value::Object(map)
            }
        }
    }
}

struct Parser<'a> {
    text: &'a str,
    bytes: &'a [u8],
    at: usize,
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

    fn literal(&mut self, word: &str, node: Node<'a>) -> Option<Node<'a>> {
        let end = self.at + word.len();
        (self.bytes.get(self.at..end)? == word.as_bytes()).then(|| {
            self.at = end;
            node
        })
    }

    fn value(&mut self, depth: usize) -> Option<Node<'a>> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.skip_ws();
        match *self.bytes.get(self.at)? {
            b'{' => {
                self.at += 1;
                let mut members = Vec::new();
                if self.eat(b'}') {
                    return Some(Node::Object(members));
                }
                loop {
                    self.skip_ws();
                    if self.bytes.get(self.at) != Some(&b'"') {
                        return None;
                    }
                    let key = self.string()?;
                    if !self.eat(b':') {
                        return None;
                    }
                    members.push((key, self.value(depth + 1)?));
                    if self.eat(b'}') {
                        return Some(Node::Object(members));
                    }
                    if !self.eat(b',') {
                        return None;
                    }
                }
            }
            b'[' => {
                self.at += 1;
                let mut items = Vec::new();
                if self.eat(b']') {
                    return Some(Node::Array(items));
                }
                loop {
                    items.push(self.value(depth + 1)?);
                    if self.eat(b']') {
                        return Some(Node::Array(items));
                    }
                    if !self.eat(b',') {
                        return None;
                    }
                }
            }
            b'"' => self.string().map(Node::String),
            b't' => self.literal("true", Node::Bool(true)),
            b'f' => self.literal("false", Node::Bool(false)),
            b'n' => self.literal("null", Node::Null),
            b'-' | b'0'..=b'9' => self.number(),
            _ => None,
        }
    }

    /// A number, checked against JSON's grammar.
    fn number(&mut self) -> Option<Node<'a>> {
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
        Some(Node::Number(&self.text[start..self.at]))
    }

    /// A string at the opening quote: borrowed unless it has escapes.
    fn string(&mut self) -> Option<Cow<'a, str>> {
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
                return Some(match copy {
                    None => Cow::Borrowed(piece),
                    Some(mut s) => {
                        s.push_str(piece);
                        Cow::Owned(s)
                    }
                });
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

    #[test]
    fn reads_what_serde_json_reads() {
        let texts = [
            r#"{"a":1,"b":[true,false,null],"c":{"d":"e"},"n":-1.5e-3,"big":123456789012345678901234567890}"#,
            r#" { "esc" : "q\" b\\ s\/ \b\f\n\r\t \u00e9 \ud83d\ude00 ✓" , "e" : [ ] , "o" : { } } "#,
            r#"[]"#,
            r#""x""#,
            r#"0"#,
        ];
        for text in texts {
            let node = Node::parse(text).unwrap_or_else(|| panic!("{text}"));
            let value: Value = serde_json::from_str(text).unwrap();
            assert_eq!(node.to_value(), value, "{text}");
        }
        assert_eq!(Node::parse(r#"{"a":"b"}"#), Some(Node::Object(vec![("a".into(), Node::String("b".into()))])));
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
            assert_eq!(Node::parse(text), None, "{text:?}");
        }
        let deep = "[".repeat(MAX_DEPTH + 2) + &"]".repeat(MAX_DEPTH + 2);
        assert_eq!(Node::parse(&deep), None);
        assert_eq!(Node::parse(r#"{"a":[1,{"b":null}]}"#).map(|n| n.to_value()), Some(json!({"a":[1,{"b":null}]})));
    }
}
