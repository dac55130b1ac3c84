//! Reply encoding. Commands write their replies straight into an [`Out`] buffer, in the
//! protocol version the connection negotiated (RESP2 unless `HELLO 3`). Writing in place keeps
//! the hot path free of an intermediate reply tree: a GET copies its value once, into the
//! socket buffer.

/// An output buffer plus the protocol version replies are encoded in.
#[derive(Debug, Default)]
pub struct Out {
    pub buf: Vec<u8>,
    pub resp3: bool,
}

impl Out {
    pub fn new(resp3: bool) -> Self {
        Out {
            buf: Vec::with_capacity(256),
            resp3,
        }
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub fn ok(&mut self) {
        self.buf.extend_from_slice(b"+OK\r\n");
    }

    /// A status reply (`+text`). `text` must not contain CR or LF.
    pub fn simple(&mut self, text: &str) {
        self.buf.push(b'+');
        self.buf.extend_from_slice(text.as_bytes());
        self.buf.extend_from_slice(b"\r\n");
    }

    /// An error reply. `text` is the full message including its code, e.g.
    /// `ERR syntax error` or `WRONGTYPE Operation against ...`. CR/LF are replaced by spaces,
    /// as Valkey does, so an error can never break the framing.
    pub fn error(&mut self, text: &str) {
        self.buf.push(b'-');
        self.buf.extend(
            text.bytes()
                .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
        );
        self.buf.extend_from_slice(b"\r\n");
    }

    pub fn int(&mut self, v: i64) {
        self.buf.push(b':');
        self.push_num(v);
        self.buf.extend_from_slice(b"\r\n");
    }

    pub fn bulk(&mut self, data: &[u8]) {
        self.buf.push(b'$');
        self.push_num(data.len() as i64);
        self.buf.extend_from_slice(b"\r\n");
        self.buf.extend_from_slice(data);
        self.buf.extend_from_slice(b"\r\n");
    }

    /// A bulk string holding the decimal form of `v` (e.g. a GET of an integer-encoded value).
    pub fn bulk_int(&mut self, v: i64) {
        let mut tmp = itoa::Buffer::new();
        self.bulk(tmp.format(v).as_bytes());
    }

    /// The null bulk string (`$-1` in RESP2, `_` in RESP3).
    pub fn nil(&mut self) {
        if self.resp3 {
            self.buf.extend_from_slice(b"_\r\n");
        } else {
            self.buf.extend_from_slice(b"$-1\r\n");
        }
    }

    /// The null array (`*-1` in RESP2, `_` in RESP3).
    pub fn nil_array(&mut self) {
        if self.resp3 {
            self.buf.extend_from_slice(b"_\r\n");
        } else {
            self.buf.extend_from_slice(b"*-1\r\n");
        }
    }

    pub fn array(&mut self, len: usize) {
        self.header(b'*', len);
    }

    /// A map of `len` pairs (`%` in RESP3, a flat array of 2×len in RESP2).
    pub fn map(&mut self, len: usize) {
        if self.resp3 {
            self.header(b'%', len);
        } else {
            self.header(b'*', len * 2);
        }
    }

    /// A set of `len` elements (`~` in RESP3, an array in RESP2).
    pub fn set(&mut self, len: usize) {
        if self.resp3 {
            self.header(b'~', len);
        } else {
            self.header(b'*', len);
        }
    }

    /// A double (`,` in RESP3, a bulk string in RESP2), rendered the way Valkey renders it.
    pub fn double(&mut self, v: f64) {
        let mut text = Vec::with_capacity(24);
        crate::util::format_double(v, &mut text);
        if self.resp3 {
            self.buf.push(b',');
            self.buf.extend_from_slice(&text);
            self.buf.extend_from_slice(b"\r\n");
        } else {
            self.bulk(&text);
        }
    }

    /// A boolean (`#t`/`#f` in RESP3, `:1`/`:0` in RESP2).
    pub fn boolean(&mut self, v: bool) {
        if self.resp3 {
            self.buf
                .extend_from_slice(if v { b"#t\r\n" } else { b"#f\r\n" });
        } else {
            self.int(v as i64);
        }
    }

    /// A verbatim text string (`=` with `txt:` in RESP3, a bulk string in RESP2), as INFO and
    /// CLIENT INFO reply.
    pub fn verbatim(&mut self, text: &[u8]) {
        if self.resp3 {
            self.buf.push(b'=');
            self.push_num(text.len() as i64 + 4);
            self.buf.extend_from_slice(b"\r\ntxt:");
            self.buf.extend_from_slice(text);
            self.buf.extend_from_slice(b"\r\n");
        } else {
            self.bulk(text);
        }
    }

    /// Appends bytes that are already a complete encoded reply (e.g. gathered from another core).
    pub fn raw(&mut self, encoded: &[u8]) {
        self.buf.extend_from_slice(encoded);
    }

    fn header(&mut self, kind: u8, len: usize) {
        self.buf.push(kind);
        self.push_num(len as i64);
        self.buf.extend_from_slice(b"\r\n");
    }

    fn push_num(&mut self, v: i64) {
        let mut tmp = itoa::Buffer::new();
        self.buf.extend_from_slice(tmp.format(v).as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(resp3: bool, f: impl FnOnce(&mut Out)) -> String {
        let mut out = Out::new(resp3);
        f(&mut out);
        String::from_utf8(out.buf).unwrap()
    }

    #[test]
    fn resp2_and_resp3_shapes() {
        assert_eq!(enc(false, |o| o.nil()), "$-1\r\n");
        assert_eq!(enc(true, |o| o.nil()), "_\r\n");
        assert_eq!(enc(false, |o| o.nil_array()), "*-1\r\n");
        assert_eq!(enc(false, |o| o.map(2)), "*4\r\n");
        assert_eq!(enc(true, |o| o.map(2)), "%2\r\n");
        assert_eq!(enc(true, |o| o.set(3)), "~3\r\n");
        assert_eq!(enc(false, |o| o.boolean(true)), ":1\r\n");
        assert_eq!(enc(true, |o| o.boolean(false)), "#f\r\n");
        assert_eq!(enc(false, |o| o.bulk(b"hi")), "$2\r\nhi\r\n");
        assert_eq!(enc(false, |o| o.int(-42)), ":-42\r\n");
        assert_eq!(enc(true, |o| o.verbatim(b"a")), "=5\r\ntxt:a\r\n");
    }

    #[test]
    fn errors_cannot_break_framing() {
        assert_eq!(enc(false, |o| o.error("ERR a\r\nb")), "-ERR a  b\r\n");
    }
}
