//! The libvirt `key = value` file syntax (libvirt's `virconf.c`, default flags).
//!
//! ```text
//! file       := statement (separator statement)*
//! statement  := blank-or-eol* ( '#' <anything up to EOL>
//!                             | name blank* '=' blank* value blank* ('#' <to EOL>)? )
//! separator  := blank* ( EOF | EOL (blank|EOL)* | ';' (blank|EOL)* )
//! name       := ASCII letter (ASCII letter | digit | '_')*
//! value      := string | number | list
//! string     := '"' <no '"', no EOL> '"'
//!             | '\'' <no '\'', no EOL> '\''
//!             | '"""' <anything, EOL included> '"""'
//! number     := ('-' | '+')? digit+        -- '-' makes an `Int`, otherwise a `ULong`
//! list       := '[' (blank|EOL)* ( value (blank|EOL)* (',' (blank|EOL)* value? (blank|EOL)*)* )? ']'
//! blank      := ' ' | '\t'             EOL := '\n' | '\r'
//! ```
//!
//! Rules that follow from libvirt's parser and are easy to get wrong:
//!
//! * There are **no escapes** of any kind inside strings; `"a\"b"` is the string `a\`
//!   followed by junk, which is a syntax error.
//! * A triple-quoted string is recognised only when at least seven bytes remain from its
//!   first quote, so a bare `""""""` at the very end of a file is an empty string followed
//!   by junk.
//! * Comments are **not** allowed inside lists, and a value must start on the line of its
//!   `=`. A trailing comma inside a list is fine, an empty element (`[1,,2]`) is not.
//! * Statements may also be separated by `;`. A file made only of blanks and newlines is an
//!   error ("expecting a name"), while an empty file is fine.
//! * Duplicate keys are **not** a syntax error: every entry is kept in file order and
//!   lookups ([`ConfFile::get`]) return the first one, as libvirt does.
//! * A string value ends at its first NUL byte, as in libvirt (`g_strndup`).
//!
//! Differences from libvirt, all for inputs where libvirt misbehaves: a number that does not
//! fit in 64 bits is an error (libvirt silently wraps it), lists nested deeper than
//! [`MAX_LIST_DEPTH`] are an error (libvirt recurses without limit), and a string value
//! that is not valid UTF-8 is an error (comments may hold any bytes).
//!
//! Errors carry a 1-based line (counted in `'\n'`, as libvirt counts) and a 1-based column
//! (in characters) of the place where the parser stopped, and libvirt's message text.

use std::fmt;

/// Deepest nesting of lists the parser accepts.
pub const MAX_LIST_DEPTH: usize = 64;

/// One value on the right-hand side of `key = value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// A quoted string, exactly as written (no escape processing).
    String(String),
    /// A number written with a leading `-` (libvirt's `VIR_CONF_LLONG`), `-0` included.
    Int(i64),
    /// A number written without a sign or with `+` (libvirt's `VIR_CONF_ULLONG`).
    ULong(u64),
    /// A bracketed list; elements may be of any type, lists included.
    List(Vec<Value>),
}

impl Value {
    /// A short name of the value's type, for messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::String(_) => "string",
            Value::Int(_) => "signed integer",
            Value::ULong(_) => "unsigned integer",
            Value::List(_) => "list",
        }
    }

    /// The string, if this is a string value.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }
}

/// One `key = value` statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The key, `[A-Za-z][A-Za-z0-9_]*`.
    pub key: String,
    /// The parsed value.
    pub value: Value,
    /// 1-based line of the key.
    pub line: usize,
    /// 1-based column (in characters) of the key.
    pub column: usize,
}

/// A parsed file: its entries in file order, duplicates included.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfFile {
    /// Every statement of the file, in order. Comments are not kept.
    pub entries: Vec<Entry>,
}

impl ConfFile {
    /// The entry libvirt uses for `key`: the first one in the file.
    pub fn get(&self, key: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.key == key)
    }

    /// Every later entry whose key already appeared, paired with the first entry for it.
    pub fn duplicates(&self) -> impl Iterator<Item = (&Entry, &Entry)> + '_ {
        self.entries.iter().enumerate().filter_map(|(i, dup)| {
            let first = self.entries[..i].iter().find(|e| e.key == dup.key)?;
            Some((first, dup))
        })
    }
}

/// A syntax error: where the parser stopped, and libvirt's description of why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{line}:{column}: {message}")]
pub struct ParseError {
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// What was wrong, e.g. `expecting a value`.
    pub message: String,
}

/// Parses a whole file.
pub fn parse(text: &str) -> Result<ConfFile, ParseError> {
    parse_bytes(text.as_bytes())
}

/// Parses a whole file given as bytes; only string values need to be UTF-8.
pub fn parse_bytes(src: &[u8]) -> Result<ConfFile, ParseError> {
    let mut p = Parser {
        src,
        pos: 0,
        depth: 0,
        cursor: Cursor::default(),
    };
    let mut entries = Vec::new();
    while p.pos < src.len() {
        if let Some(entry) = p.statement()? {
            entries.push(entry);
        }
        p.separator()?;
    }
    Ok(ConfFile { entries })
}

/// Line and column (both 1-based) of byte offset `pos` in `src`.
pub fn line_column(src: &[u8], pos: usize) -> (usize, usize) {
    let before = &src[..pos.min(src.len())];
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    let line = 1 + before.iter().filter(|&&b| b == b'\n').count();
    // Count characters, not bytes: skip UTF-8 continuation bytes.
    let column = 1 + before[line_start..]
        .iter()
        .filter(|&&b| b & 0xC0 != 0x80)
        .count();
    (line, column)
}

fn is_blank(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

fn is_eol(b: u8) -> bool {
    b == b'\n' || b == b'\r'
}

const TRIPLE: &[u8] = b"\"\"\"";

struct Parser<'a> {
    src: &'a [u8],
    pos: usize,
    depth: usize,
    cursor: Cursor,
}

/// [`line_column`] for offsets asked in increasing order (the entries), counted from the
/// previous offset so that a whole file costs linear time, not quadratic.
#[derive(Debug, Clone, Copy, Default)]
struct Cursor {
    pos: usize,
    line: usize,
    column: usize,
}

impl Cursor {
    fn locate(&mut self, src: &[u8], pos: usize) -> (usize, usize) {
        let pos = pos.min(src.len());
        if self.line == 0 || pos < self.pos {
            *self = Cursor {
                pos: 0,
                line: 1,
                column: 1,
            };
        }
        for &b in src.get(self.pos..pos).unwrap_or_default() {
            if b == b'\n' {
                self.line += 1;
                self.column = 1;
            } else if b & 0xC0 != 0x80 {
                self.column += 1;
            }
        }
        self.pos = pos;
        (self.line, self.column)
    }
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.src.get(self.pos).copied()
    }

    fn at(&self, b: u8) -> bool {
        self.peek() == Some(b)
    }

    fn skip_while(&mut self, pred: impl Fn(u8) -> bool) {
        while self.peek().is_some_and(&pred) {
            self.pos += 1;
        }
    }

    fn skip_blanks(&mut self) {
        self.skip_while(is_blank);
    }

    fn skip_blanks_and_eol(&mut self) {
        self.skip_while(|b| is_blank(b) || is_eol(b));
    }

    fn skip_to_eol(&mut self) {
        self.skip_while(|b| !is_eol(b));
    }

    fn error_at(&self, pos: usize, message: &str) -> ParseError {
        let (line, column) = line_column(self.src, pos);
        ParseError {
            line,
            column,
            message: message.to_owned(),
        }
    }

    fn error(&self, message: &str) -> ParseError {
        self.error_at(self.pos, message)
    }

    /// A comment line (returns `None`) or one `key = value` entry.
    fn statement(&mut self) -> Result<Option<Entry>, ParseError> {
        self.skip_blanks_and_eol();
        if self.at(b'#') {
            self.skip_to_eol();
            return Ok(None);
        }
        let start = self.pos;
        let key = self.name()?;
        self.skip_blanks();
        if !self.at(b'=') {
            return Err(self.error("expecting an assignment"));
        }
        self.pos += 1;
        let value = self.value()?;
        self.skip_blanks();
        if self.at(b'#') {
            self.skip_to_eol();
        }
        let (line, column) = self.cursor.locate(self.src, start);
        Ok(Some(Entry {
            key,
            value,
            line,
            column,
        }))
    }

    fn separator(&mut self) -> Result<(), ParseError> {
        self.skip_blanks();
        match self.peek() {
            None => Ok(()),
            Some(b) if is_eol(b) => {
                self.skip_blanks_and_eol();
                Ok(())
            }
            Some(b';') => {
                self.pos += 1;
                self.skip_blanks_and_eol();
                Ok(())
            }
            Some(_) => Err(self.error("expecting a separator")),
        }
    }

    fn name(&mut self) -> Result<String, ParseError> {
        if !self.peek().is_some_and(|b| b.is_ascii_alphabetic()) {
            return Err(self.error("expecting a name"));
        }
        let start = self.pos;
        self.skip_while(|b| b.is_ascii_alphanumeric() || b == b'_');
        // Only ASCII bytes were accepted, so this conversion is lossless.
        Ok(String::from_utf8_lossy(&self.src[start..self.pos]).into_owned())
    }

    fn value(&mut self) -> Result<Value, ParseError> {
        self.skip_blanks();
        match self.peek() {
            Some(b'"' | b'\'') => self.string().map(Value::String),
            Some(b'[') => self.list(),
            Some(b) if b.is_ascii_digit() || b == b'-' || b == b'+' => self.number(),
            _ => Err(self.error("expecting a value")),
        }
    }

    fn string(&mut self) -> Result<String, ParseError> {
        let open = self.pos;
        let (start, end) = if self.at(b'\'') {
            self.quoted(b'\'')?
        } else if self.pos + 6 < self.src.len() && self.src[self.pos..].starts_with(TRIPLE) {
            self.triple_quoted()?
        } else {
            self.quoted(b'"')?
        };
        let raw = &self.src[start..end];
        // libvirt copies with g_strndup, which stops at the first NUL.
        let raw = raw.split(|&b| b == 0).next().unwrap_or_default();
        String::from_utf8(raw.to_vec())
            .map_err(|_| self.error_at(open, "string is not valid UTF-8"))
    }

    /// A one-line string; returns the byte range of its content.
    fn quoted(&mut self, quote: u8) -> Result<(usize, usize), ParseError> {
        self.pos += 1;
        let start = self.pos;
        self.skip_while(|b| b != quote && !is_eol(b));
        if !self.at(quote) {
            return Err(self.error("unterminated string"));
        }
        let end = self.pos;
        self.pos += 1;
        Ok((start, end))
    }

    /// A `"""` string, which may span lines; returns the byte range of its content.
    fn triple_quoted(&mut self) -> Result<(usize, usize), ParseError> {
        self.pos += TRIPLE.len();
        let start = self.pos;
        while self.pos + 2 < self.src.len() && !self.src[self.pos..].starts_with(TRIPLE) {
            self.pos += 1;
        }
        if !self.src[self.pos..].starts_with(TRIPLE) {
            return Err(self.error("unterminated string"));
        }
        let end = self.pos;
        self.pos += TRIPLE.len();
        Ok((start, end))
    }

    fn number(&mut self) -> Result<Value, ParseError> {
        let start = self.pos;
        let negative = self.at(b'-');
        if negative || self.at(b'+') {
            self.pos += 1;
        }
        if !self.peek().is_some_and(|b| b.is_ascii_digit()) {
            return Err(self.error("unterminated number"));
        }
        let digits = self.pos;
        self.skip_while(|b| b.is_ascii_digit());
        let magnitude = self.src[digits..self.pos].iter().try_fold(0u64, |acc, &d| {
            acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
        });
        let out_of_range = || self.error_at(start, "number out of range");
        let magnitude = magnitude.ok_or_else(out_of_range)?;
        if !negative {
            return Ok(Value::ULong(magnitude));
        }
        let value = 0i64
            .checked_sub_unsigned(magnitude)
            .ok_or_else(out_of_range)?;
        Ok(Value::Int(value))
    }

    fn list(&mut self) -> Result<Value, ParseError> {
        if self.depth >= MAX_LIST_DEPTH {
            return Err(self.error("lists nested too deeply"));
        }
        self.depth += 1;
        self.pos += 1;
        self.skip_blanks_and_eol();
        let mut items = Vec::new();
        if self.peek().is_some_and(|b| b != b']') {
            items.push(self.value()?);
            self.skip_blanks_and_eol();
        }
        while self.peek().is_some_and(|b| b != b']') {
            if !self.at(b',') {
                return Err(self.error("expecting a separator in list"));
            }
            self.pos += 1;
            self.skip_blanks_and_eol();
            if self.at(b']') {
                break;
            }
            items.push(self.value()?);
            self.skip_blanks_and_eol();
        }
        if !self.at(b']') {
            return Err(self.error("list is not closed with ]"));
        }
        self.pos += 1;
        self.depth -= 1;
        Ok(Value::List(items))
    }
}

impl fmt::Display for Value {
    /// Writes the value back in the file syntax (strings in the first quoting that fits).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // Only a triple-quoted string may hold a line break, '\r' included.
            Value::String(s) if s.contains(['\n', '\r']) => write!(f, "\"\"\"{s}\"\"\""),
            Value::String(s) if !s.contains('"') => write!(f, "\"{s}\""),
            Value::String(s) if !s.contains('\'') => write!(f, "'{s}'"),
            Value::String(s) => write!(f, "\"\"\"{s}\"\"\""),
            Value::Int(n) if *n == 0 => f.write_str("-0"),
            Value::Int(n) => write!(f, "{n}"),
            Value::ULong(n) => write!(f, "{n}"),
            Value::List(items) => {
                f.write_str("[ ")?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{item}")?;
                }
                f.write_str(" ]")
            }
        }
    }
}
