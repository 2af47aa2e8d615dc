//! A small, bounded XDR (RFC 4506) encoder and decoder: exactly the subset libvirt's
//! RPC programs use (docs/protocol.md §1.5).
//!
//! ```text
//! int / unsigned / enum / bool   [b0 b1 b2 b3]                 big-endian, 4 bytes
//! hyper / unsigned hyper / double [b0 .. b7]                   big-endian, 8 bytes
//! string<N>                      [len u32][bytes ...][0-3 pad]  len <= N, padded to 4
//! opaque[N] (fixed, e.g. UUID)   [N raw bytes][0-3 pad]         no length word
//! T * (optional)                 [0]  |  [1][T]
//! ```
//!
//! Decoding is two-phase for everything variable-sized: the claimed length is checked
//! against the limit *and* against the bytes that are actually left before anything is
//! allocated, so a hostile length word can never make the decoder allocate more than
//! the input holds. [`Decoder::allocated`] reports what was allocated so tests can hold
//! the decoder to that. [`Decoder::finish`] rejects trailing bytes.
//!
//! Like libvirt's XDR routines, the decoder does not check that padding bytes are zero.
//! Unlike them, [`Decoder::string`] rejects strings that are not UTF-8 (the API hands out
//! `String`); [`Decoder::var_opaque`] gives the raw bytes where that matters.

use thiserror::Error;

/// Why a byte string is not a valid XDR encoding of the expected type.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// The input ended before the value did.
    #[error("XDR input truncated")]
    Truncated,
    /// A string or array length word is larger than the type's bound.
    #[error("XDR string of {len} bytes exceeds the maximum of {max}")]
    StringTooLong {
        /// The claimed length.
        len: usize,
        /// The bound of the type.
        max: usize,
    },
    /// A bool was neither 0 nor 1.
    #[error("XDR bool has invalid value {0}")]
    BadBool(u32),
    /// An optional-pointer discriminant was neither 0 nor 1.
    #[error("XDR optional discriminant has invalid value {0}")]
    BadOptional(u32),
    /// A string is not UTF-8.
    #[error("XDR string is not valid UTF-8")]
    BadUtf8,
    /// A union discriminant or enum value is not one the type defines.
    #[error("XDR discriminant {0} is not defined for this type")]
    BadDiscriminant(i32),
    /// An array has more elements than its bound.
    #[error("XDR array of {len} elements exceeds the maximum of {max}")]
    ArrayTooLong {
        /// The claimed element count.
        len: usize,
        /// The bound of the type.
        max: usize,
    },
    /// Bytes were left over after the value.
    #[error("{0} trailing bytes after XDR value")]
    TrailingBytes(usize),
}

/// Bytes of padding that follow `len` bytes of opaque data.
pub const fn pad_len(len: usize) -> usize {
    (4 - len % 4) % 4
}

/// An append-only XDR writer.
#[derive(Debug, Default, Clone)]
pub struct Encoder {
    buf: Vec<u8>,
}

impl Encoder {
    /// An empty encoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty encoder with room for `cap` bytes.
    pub fn with_capacity(cap: usize) -> Self {
        Self {
            buf: Vec::with_capacity(cap),
        }
    }

    /// The encoded bytes.
    pub fn into_vec(self) -> Vec<u8> {
        self.buf
    }

    /// The bytes encoded so far.
    pub fn as_slice(&self) -> &[u8] {
        &self.buf
    }

    /// Number of bytes encoded so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether nothing was encoded yet.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Appends raw bytes with no length word and no padding (already-encoded XDR).
    pub fn put_raw(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// `unsigned int`.
    pub fn put_u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    /// `int` or enum.
    pub fn put_i32(&mut self, v: i32) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    /// `unsigned hyper`.
    pub fn put_u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    /// `hyper`.
    pub fn put_i64(&mut self, v: i64) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    /// `double` (IEEE 754, big-endian).
    pub fn put_f64(&mut self, v: f64) {
        self.buf.extend_from_slice(&v.to_bits().to_be_bytes());
    }

    /// `bool` as 0 or 1.
    pub fn put_bool(&mut self, v: bool) {
        self.put_u32(u32::from(v));
    }

    /// Variable-length opaque: length word, bytes, zero padding.
    ///
    /// Lengths above `u32::MAX` cannot be represented; callers keep to the protocol
    /// bounds, which are far below it.
    pub fn put_var_opaque(&mut self, bytes: &[u8]) {
        debug_assert!(u32::try_from(bytes.len()).is_ok());
        self.put_u32(bytes.len() as u32);
        self.put_fixed_opaque(bytes);
    }

    /// `string<N>`: length word, UTF-8 bytes, zero padding.
    pub fn put_string(&mut self, s: &str) {
        self.put_var_opaque(s.as_bytes());
    }

    /// Optional string (`string *`): discriminant 0, or 1 and the string.
    pub fn put_opt_string(&mut self, s: Option<&str>) {
        match s {
            None => self.put_u32(0),
            Some(s) => {
                self.put_u32(1);
                self.put_string(s);
            }
        }
    }

    /// Fixed-length opaque: the bytes with no length word, zero padded to 4.
    pub fn put_fixed_opaque(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
        self.buf
            .extend(std::iter::repeat_n(0u8, pad_len(bytes.len())));
    }
}

/// A bounds-checked XDR reader over a byte slice.
#[derive(Debug, Clone)]
pub struct Decoder<'a> {
    buf: &'a [u8],
    pos: usize,
    allocated: usize,
}

impl<'a> Decoder<'a> {
    /// A decoder reading `buf` from its start.
    pub fn new(buf: &'a [u8]) -> Self {
        Self {
            buf,
            pos: 0,
            allocated: 0,
        }
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Bytes read so far.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// The unread rest of the input.
    pub fn rest(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }

    /// Total bytes of heap memory this decoder has allocated for decoded values
    /// (string contents). Never more than [`Decoder::position`].
    pub fn allocated(&self) -> usize {
        self.allocated
    }

    /// Succeeds only if the whole input was consumed.
    pub fn finish(&self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(DecodeError::TrailingBytes(n)),
        }
    }

    /// Takes `n` raw bytes, failing (before anything else happens) if fewer remain.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.remaining() {
            return Err(DecodeError::Truncated);
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    /// `unsigned int`.
    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        self.array().map(u32::from_be_bytes)
    }

    /// `int` or enum.
    pub fn i32(&mut self) -> Result<i32, DecodeError> {
        self.array().map(i32::from_be_bytes)
    }

    /// `unsigned hyper`.
    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        self.array().map(u64::from_be_bytes)
    }

    /// `hyper`.
    pub fn i64(&mut self) -> Result<i64, DecodeError> {
        self.array().map(i64::from_be_bytes)
    }

    /// `double`.
    pub fn f64(&mut self) -> Result<f64, DecodeError> {
        self.u64().map(f64::from_bits)
    }

    /// `bool`: only 0 and 1 are accepted.
    pub fn bool(&mut self) -> Result<bool, DecodeError> {
        match self.u32()? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(DecodeError::BadBool(v)),
        }
    }

    /// An optional-pointer discriminant: `Ok(true)` if a value follows.
    pub fn present(&mut self) -> Result<bool, DecodeError> {
        match self.u32()? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(DecodeError::BadOptional(v)),
        }
    }

    /// Variable-length opaque of at most `max` bytes, borrowed from the input.
    pub fn var_opaque(&mut self, max: usize) -> Result<&'a [u8], DecodeError> {
        let len = usize::try_from(self.u32()?).map_err(|_| DecodeError::Truncated)?;
        if len > max {
            return Err(DecodeError::StringTooLong { len, max });
        }
        let padded = len
            .checked_add(pad_len(len))
            .ok_or(DecodeError::Truncated)?;
        let bytes = self.take(padded)?;
        Ok(&bytes[..len])
    }

    /// `string<max>`: longer strings and invalid UTF-8 are errors.
    pub fn string(&mut self, max: usize) -> Result<String, DecodeError> {
        let bytes = self.var_opaque(max)?;
        let s = std::str::from_utf8(bytes).map_err(|_| DecodeError::BadUtf8)?;
        self.allocated += s.len();
        Ok(s.to_owned())
    }

    /// Optional `string<max>` (`string *`).
    pub fn opt_string(&mut self, max: usize) -> Result<Option<String>, DecodeError> {
        if self.present()? {
            self.string(max).map(Some)
        } else {
            Ok(None)
        }
    }

    /// Fixed-length opaque of `N` bytes (plus padding to 4).
    pub fn fixed_opaque<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let out = self.array::<N>()?;
        self.take(pad_len(N))?;
        Ok(out)
    }
}

/// A type with an XDR encoding.
pub trait XdrEncode {
    /// Appends the XDR form of `self`.
    fn encode(&self, e: &mut Encoder);

    /// The XDR form of `self` as a fresh vector.
    fn to_xdr(&self) -> Vec<u8> {
        let mut e = Encoder::new();
        self.encode(&mut e);
        e.into_vec()
    }
}

/// A type that can be decoded from XDR.
pub trait XdrDecode: Sized {
    /// Reads one value, leaving the decoder after it.
    fn decode(d: &mut Decoder<'_>) -> Result<Self, DecodeError>;

    /// Decodes a value that must span all of `bytes`.
    fn from_xdr(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut d = Decoder::new(bytes);
        let v = Self::decode(&mut d)?;
        d.finish()?;
        Ok(v)
    }
}

/// `void`: encodes to nothing.
impl XdrEncode for () {
    fn encode(&self, _e: &mut Encoder) {}
}

impl XdrDecode for () {
    fn decode(_d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_are_big_endian() {
        let mut e = Encoder::new();
        e.put_u32(0x0102_0304);
        e.put_i32(-2);
        e.put_u64(0x0102_0304_0506_0708);
        e.put_i64(-1);
        e.put_bool(true);
        let v = e.into_vec();
        assert_eq!(&v[..8], &[1, 2, 3, 4, 0xff, 0xff, 0xff, 0xfe]);
        let mut d = Decoder::new(&v);
        assert_eq!(d.u32(), Ok(0x0102_0304));
        assert_eq!(d.i32(), Ok(-2));
        assert_eq!(d.u64(), Ok(0x0102_0304_0506_0708));
        assert_eq!(d.i64(), Ok(-1));
        assert_eq!(d.bool(), Ok(true));
        assert_eq!(d.finish(), Ok(()));
    }

    #[test]
    fn string_is_padded() {
        let mut e = Encoder::new();
        e.put_string("vm1");
        e.put_string("abcd");
        e.put_string("");
        assert_eq!(
            e.as_slice(),
            b"\0\0\0\x03vm1\0\0\0\0\x04abcd\0\0\0\0".as_slice()
        );
    }

    #[test]
    fn string_bounds() {
        let bytes = b"\0\0\0\x05hello\0\0\0";
        assert_eq!(Decoder::new(bytes).string(5).as_deref(), Ok("hello"));
        assert_eq!(
            Decoder::new(bytes).string(4),
            Err(DecodeError::StringTooLong { len: 5, max: 4 })
        );
        // Padding missing: truncated.
        assert_eq!(
            Decoder::new(&bytes[..9]).string(5),
            Err(DecodeError::Truncated)
        );
    }

    #[test]
    fn hostile_length_fails_before_allocating() {
        let mut d = Decoder::new(b"\x7f\xff\xff\xffabc");
        assert_eq!(d.string(usize::MAX), Err(DecodeError::Truncated));
        assert_eq!(d.allocated(), 0);
        let mut d = Decoder::new(b"\xff\xff\xff\xffabc");
        assert_eq!(d.string(usize::MAX), Err(DecodeError::Truncated));
    }

    #[test]
    fn invalid_utf8_rejected() {
        assert_eq!(
            Decoder::new(b"\0\0\0\x01\xff\0\0\0").string(10),
            Err(DecodeError::BadUtf8)
        );
    }

    #[test]
    fn bool_and_optional_reject_other_values() {
        assert_eq!(
            Decoder::new(&[0, 0, 0, 2]).bool(),
            Err(DecodeError::BadBool(2))
        );
        assert_eq!(
            Decoder::new(&[0, 0, 0, 2]).opt_string(1),
            Err(DecodeError::BadOptional(2))
        );
        assert_eq!(Decoder::new(&[0, 0, 0, 0]).opt_string(1), Ok(None));
    }

    #[test]
    fn fixed_opaque_has_no_length_word() {
        let mut e = Encoder::new();
        e.put_fixed_opaque(&[1, 2, 3, 4, 5]);
        assert_eq!(e.as_slice(), &[1, 2, 3, 4, 5, 0, 0, 0]);
        let mut d = Decoder::new(e.as_slice());
        assert_eq!(d.fixed_opaque::<5>(), Ok([1, 2, 3, 4, 5]));
        assert_eq!(d.finish(), Ok(()));
    }

    #[test]
    fn trailing_bytes_rejected() {
        assert_eq!(
            u32_from(&[0, 0, 0, 1, 9]),
            Err(DecodeError::TrailingBytes(1))
        );
        assert_eq!(u32_from(&[0, 0, 1]), Err(DecodeError::Truncated));
    }

    fn u32_from(b: &[u8]) -> Result<u32, DecodeError> {
        let mut d = Decoder::new(b);
        let v = d.u32()?;
        d.finish()?;
        Ok(v)
    }

    #[test]
    fn double_round_trips_bits() {
        let mut e = Encoder::new();
        e.put_f64(-1.5);
        assert_eq!(e.as_slice(), &[0xbf, 0xf8, 0, 0, 0, 0, 0, 0]);
        assert_eq!(Decoder::new(e.as_slice()).f64(), Ok(-1.5));
    }
}
