//! Opens an upload as a stream of export XML: a bare `export.xml`, or an `export.zip` whose XML entry is
//! `apple_health_export/<localized name>.xml` (not `export_cda.xml`), inflated as it is read.
//!
//! Everything works over any blocking [`std::io::Read`] (for S3, a reader over ranged GETs, or an async body
//! bridged with `tokio_util::io::SyncIoBridge` inside `spawn_blocking`); nothing is buffered beyond a few
//! hundred KB and nothing touches disk. The XML passes a filter ([`XmlFilter`]) that removes the internal DTD
//! (iOS 16 shipped a broken one) and characters XML forbids (stray `\x0b`), and keeps line numbers for errors.
//! Zip entries are guarded as they inflate: an entry larger than [`Limits::max_entry_bytes`] or expanding
//! more than [`Limits::max_ratio`] times is refused as a zip bomb.

use std::cell::Cell;
use std::io::{self, BufRead, BufReader, Read};
use std::rc::Rc;

use crate::error::{ImportError, ZipBombTripped, from_io};

/// Limits on what a zip entry may expand to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest uncompressed entry (real exports reach 4 GB of XML).
    pub max_entry_bytes: u64,
    /// Largest uncompressed:compressed ratio, measured as the entry inflates (exports are about 15:1).
    pub max_ratio: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_entry_bytes: 32 << 30, max_ratio: 100 }
    }
}

/// Bytes of the upload consumed so far, and a switch that makes the upload look ended: set when the
/// import stops early so that nothing drains the rest of a multi-GB object.
#[derive(Debug, Clone, Default)]
pub(crate) struct Tap {
    pub read: Rc<Cell<u64>>,
    pub halt: Rc<Cell<bool>>,
}

struct Counting<R> {
    inner: R,
    tap: Tap,
}

impl<R: BufRead> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.tap.halt.get() {
            return Ok(0);
        }
        let n = self.inner.read(buf)?;
        self.tap.read.set(self.tap.read.get() + n as u64);
        Ok(n)
    }
}

impl<R: BufRead> BufRead for Counting<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.tap.halt.get() {
            return Ok(&[]);
        }
        self.inner.fill_buf()
    }

    fn consume(&mut self, amt: usize) {
        self.tap.read.set(self.tap.read.get() + amt as u64);
        self.inner.consume(amt);
    }
}

/// Counts what a zip entry inflates to against what it consumed of the upload.
struct BombGuard<R> {
    inner: R,
    tap: Tap,
    compressed_at_start: u64,
    out: u64,
    limits: Limits,
}

/// Ratios are only judged past this much output, so that a tiny, well compressing entry is not refused.
const RATIO_GRACE: u64 = 1 << 20;

impl<R: Read> Read for BombGuard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.out += n as u64;
        let consumed = self.tap.read.get().saturating_sub(self.compressed_at_start).max(1);
        if self.out > self.limits.max_entry_bytes {
            return Err(io::Error::other(ZipBombTripped(format!(
                "an entry inflates past the limit of {} bytes",
                self.limits.max_entry_bytes
            ))));
        }
        if self.out > RATIO_GRACE && self.out / consumed > self.limits.max_ratio {
            return Err(io::Error::other(ZipBombTripped(format!(
                "an entry inflated {} bytes from {consumed}, more than {}:1",
                self.out, self.limits.max_ratio
            ))));
        }
        Ok(n)
    }
}

/// Whether a zip entry is the export XML: `apple_health_export/<any name>.xml` (localized: `Exportieren.xml`),
/// also without the folder (re-zipped exports), but never the CDA document or files in subfolders.
pub fn is_export_entry(name: &str) -> bool {
    let parts: Vec<&str> = name.split('/').filter(|p| !p.is_empty()).collect();
    let file = match parts.as_slice() {
        [file] => *file,
        [_, file] => *file,
        _ => return false,
    };
    let lower = file.to_lowercase();
    lower.ends_with(".xml") && !lower.ends_with("cda.xml") && !lower.starts_with("._")
}

/// Opens `input` (zip or XML, told apart by the first bytes) and hands the export XML, filtered, to `parse`.
pub(crate) fn with_export_xml<R: Read, T>(
    input: R,
    limits: Limits,
    tap: Tap,
    parse: impl FnOnce(&mut XmlFilter<'_>) -> Result<T, ImportError>,
) -> Result<T, ImportError> {
    let halt = tap.halt.clone();
    let result = open(input, limits, tap, parse);
    // Whatever happened, stop reading: dropping a zip entry would otherwise drain the rest of the upload.
    halt.set(true);
    result
}

fn open<R: Read, T>(
    input: R,
    limits: Limits,
    tap: Tap,
    parse: impl FnOnce(&mut XmlFilter<'_>) -> Result<T, ImportError>,
) -> Result<T, ImportError> {
    // Counting sits after the buffer: it sees what the zip reader consumed, so ratios are measured right.
    let mut buffered = BufReader::with_capacity(64 << 10, input);
    let head = buffered.fill_buf().map_err(from_io)?;
    if head.is_empty() {
        return Err(ImportError::NotAnExport("the file is empty".into()));
    }
    let is_zip = head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06");
    if !is_zip {
        if head.len() >= 4 && head.starts_with(b"PK") {
            return Err(ImportError::Zip("the archive does not start with a file entry".into()));
        }
        let mut input = Counting { inner: buffered, tap };
        return parse(&mut XmlFilter::new(&mut input));
    }
    let mut input = Counting { inner: buffered, tap: tap.clone() };
    let no_export = || {
        ImportError::NotAnExport(
            "the zip holds no apple_health_export/export.xml; upload the export.zip the Health app made".into(),
        )
    };
    loop {
        // The local header is read here first: entries whose sizes follow their data (flag bit 3, written by
        // streaming zippers) are inflated below, since zip's stream reader refuses them.
        let mut header = [0u8; 30];
        input.read_exact(&mut header[..4]).map_err(from_io)?;
        match &header[..4] {
            b"PK\x03\x04" => {}
            b"PK\x01\x02" | b"PK\x05\x06" | b"PK\x06\x06" => return Err(no_export()),
            _ => return Err(ImportError::Zip("an entry does not start where the previous one ended".into())),
        }
        input.read_exact(&mut header[4..]).map_err(from_io)?;
        let u16_at = |i: usize| u16::from_le_bytes([header[i], header[i + 1]]);
        let (flags, method, name_len, extra_len) = (u16_at(6), u16_at(8), u16_at(26), u16_at(28));
        if flags & 8 == 0 {
            let mut replayed = io::Cursor::new(header).chain(&mut input);
            let entry = match zip::read::read_zipfile_from_stream(&mut replayed) {
                Ok(Some(entry)) => entry,
                Ok(None) => return Err(no_export()),
                Err(e) => return Err(from_zip(e)),
            };
            let name = entry.name().map(|n| n.into_owned()).unwrap_or_default();
            if entry.size() > limits.max_entry_bytes {
                return Err(ImportError::ZipBomb(format!(
                    "`{name}` declares {} bytes, over the limit of {}",
                    entry.size(),
                    limits.max_entry_bytes
                )));
            }
            let is_export = !entry.is_dir() && is_export_entry(&name);
            let mut guarded =
                BombGuard { inner: entry, tap: tap.clone(), compressed_at_start: tap.read.get(), out: 0, limits };
            if is_export {
                return parse(&mut XmlFilter::new(&mut guarded));
            }
            // Skipped entries (export_cda.xml, routes, ECGs) still inflate through the guard.
            io::copy(&mut guarded, &mut io::sink()).map_err(from_io)?;
            continue;
        }
        let mut name = vec![0u8; usize::from(name_len)];
        input.read_exact(&mut name).map_err(from_io)?;
        let mut extra = vec![0u8; usize::from(extra_len)];
        input.read_exact(&mut extra).map_err(from_io)?;
        let name = String::from_utf8_lossy(&name).into_owned();
        if method != 8 {
            return Err(ImportError::Zip(format!(
                "`{name}` is stored without compression and without its size; zip the export again"
            )));
        }
        let is_export = !name.ends_with('/') && is_export_entry(&name);
        {
            // A deflate stream ends by itself: the decoder reads exactly up to its end.
            let decoder = flate2::bufread::DeflateDecoder::new(&mut input);
            let mut guarded =
                BombGuard { inner: decoder, tap: tap.clone(), compressed_at_start: tap.read.get(), out: 0, limits };
            if is_export {
                return parse(&mut XmlFilter::new(&mut guarded));
            }
            io::copy(&mut guarded, &mut io::sink()).map_err(from_io)?;
        }
        // The data descriptor: an optional signature, the CRC, then both sizes (8 bytes each with zip64).
        let mut word = [0u8; 4];
        input.read_exact(&mut word).map_err(from_io)?;
        if &word == b"PK\x07\x08" {
            input.read_exact(&mut word).map_err(from_io)?;
        }
        let zip64 = has_zip64_field(&extra);
        let mut sizes = [0u8; 16];
        input.read_exact(&mut sizes[..if zip64 { 16 } else { 8 }]).map_err(from_io)?;
    }
}

/// Whether a local header's extra field holds a zip64 record (id 1), which makes descriptor sizes 8 bytes.
fn has_zip64_field(extra: &[u8]) -> bool {
    let mut i = 0;
    while i + 4 <= extra.len() {
        let id = u16::from_le_bytes([extra[i], extra[i + 1]]);
        let len = usize::from(u16::from_le_bytes([extra[i + 2], extra[i + 3]]));
        if id == 1 {
            return true;
        }
        i += 4 + len;
    }
    false
}

fn from_zip(e: zip::result::ZipError) -> ImportError {
    match e {
        zip::result::ZipError::Io(e) => from_io(e),
        other => ImportError::Zip(other.to_string()),
    }
}

/// Where the root element is looked for at most; a file without one this early is not an export.
const PROLOG_LIMIT: usize = 1 << 20;
const CHUNK: usize = 256 << 10;

/// A [`BufRead`] over the export XML that drops the internal DTD (keeping its newlines) and the control
/// characters XML forbids, counting lines so that an error's byte position maps back to a line.
/// It keeps the previous chunk too: the parser reports positions up to one chunk back.
pub struct XmlFilter<'a> {
    inner: &'a mut dyn Read,
    bufs: [Vec<u8>; 2],
    /// How much of each buffer is data (buffers keep their length between chunks: no zeroing).
    lens: [usize; 2],
    /// Filtered offset and lines before the start of each buffer.
    starts: [(u64, u64); 2],
    cur: usize,
    pos: usize,
    next: (u64, u64),
    prolog_done: bool,
    eof: bool,
}

impl<'a> XmlFilter<'a> {
    pub fn new(inner: &'a mut dyn Read) -> Self {
        Self {
            inner,
            bufs: [Vec::new(), Vec::new()],
            lens: [0, 0],
            starts: [(0, 0); 2],
            cur: 0,
            pos: 0,
            next: (0, 0),
            prolog_done: false,
            eof: false,
        }
    }

    /// The 1-based line of a byte position the parser reported.
    pub fn line_at(&self, pos: u64) -> u64 {
        for i in [self.cur, 1 - self.cur] {
            let (start, lines) = self.starts[i];
            let buf = &self.bufs[i][..self.lens[i]];
            if pos >= start && pos <= start + buf.len() as u64 {
                let upto = (pos - start) as usize;
                return lines + count_newlines(&buf[..upto]) + 1;
            }
        }
        self.next.1 + 1
    }

    fn refill(&mut self) -> io::Result<()> {
        let other = 1 - self.cur;
        let mut buf = std::mem::take(&mut self.bufs[other]);
        let len = if !self.prolog_done {
            buf.clear();
            self.read_prolog(&mut buf)?;
            self.starts[other] = self.next;
            self.next = (self.next.0 + buf.len() as u64, self.next.1 + count_newlines(&buf));
            buf.len()
        } else {
            if buf.len() < CHUNK {
                buf.resize(CHUNK, 0);
            }
            let n = read_some(self.inner, &mut buf[..CHUNK])?;
            let (newlines, bad) = scan(&buf[..n]);
            let n = if bad { compact(&mut buf[..n]) } else { n };
            self.starts[other] = self.next;
            self.next = (self.next.0 + n as u64, self.next.1 + newlines);
            n
        };
        if len == 0 {
            self.eof = true;
        }
        self.bufs[other] = buf;
        self.lens[other] = len;
        self.cur = other;
        self.pos = 0;
        Ok(())
    }

    /// Reads up to the root element's `<`, then blanks the DTD (`<!DOCTYPE ... [ ... ]>`) out of it.
    fn read_prolog(&mut self, buf: &mut Vec<u8>) -> io::Result<()> {
        let mut chunk = vec![0u8; 64 << 10];
        let root = loop {
            if let Some(at) = find_root(buf) {
                break Some(at);
            }
            if buf.len() > PROLOG_LIMIT {
                break None;
            }
            let n = read_some(self.inner, &mut chunk)?;
            if n == 0 {
                break None;
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        self.prolog_done = true;
        if let Some(root) = root {
            let mut prolog: Vec<u8> = buf[..root].to_vec();
            blank_doctype(&mut prolog);
            prolog.extend_from_slice(&buf[root..]);
            *buf = prolog;
        }
        strip_forbidden(buf);
        Ok(())
    }
}

impl Read for XmlFilter<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let avail = self.fill_buf()?;
        let n = avail.len().min(out.len());
        out[..n].copy_from_slice(&avail[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for XmlFilter<'_> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        while self.pos >= self.lens[self.cur] && !self.eof {
            self.refill()?;
        }
        Ok(&self.bufs[self.cur][self.pos..self.lens[self.cur]])
    }

    fn consume(&mut self, amt: usize) {
        self.pos = (self.pos + amt).min(self.lens[self.cur]);
    }
}

fn read_some(r: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match r.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

fn count_newlines(b: &[u8]) -> u64 {
    memchr::memchr_iter(b'\n', b).count() as u64
}

/// Moves the allowed characters to the front; returns how many there are.
fn compact(buf: &mut [u8]) -> usize {
    let mut w = 0;
    for r in 0..buf.len() {
        if !forbidden(buf[r]) {
            buf[w] = buf[r];
            w += 1;
        }
    }
    w
}

/// Newlines and whether any forbidden character occurs, in one pass the compiler vectorizes.
fn scan(buf: &[u8]) -> (u64, bool) {
    let (mut lines, mut bad) = (0u64, false);
    for chunk in buf.chunks(128) {
        let (mut n, mut b) = (0u8, false);
        for &c in chunk {
            n += u8::from(c == b'\n');
            b |= forbidden(c);
        }
        lines += u64::from(n);
        bad |= b;
    }
    (lines, bad)
}

fn forbidden(c: u8) -> bool {
    c < 0x20 && c != b'\t' && c != b'\n' && c != b'\r'
}

/// Removes C0 control characters other than tab, CR and LF (XML 1.0 forbids them; exports contain `\x0b`).
fn strip_forbidden(buf: &mut Vec<u8>) {
    if !buf.iter().any(|&c| forbidden(c)) {
        return;
    }
    buf.retain(|&c| !forbidden(c));
}

/// The offset of the root element's `<`: the first `<` followed by a letter (DTD declarations, comments and
/// processing instructions start with `<!` or `<?`).
fn find_root(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w[0] == b'<' && w[1].is_ascii_alphabetic())
}

/// Replaces `<!DOCTYPE ...>` (with its internal subset, however broken inside) by its newlines only, so that
/// the parser never reads the DTD and line numbers stay true.
fn blank_doctype(prolog: &mut [u8]) {
    let Some(start) = find(prolog, b"<!DOCTYPE") else { return };
    let rest = &prolog[start..];
    let end = match (rest.iter().position(|&c| c == b'['), rest.iter().position(|&c| c == b'>')) {
        // An internal subset: it ends at the last `]` followed (after blanks) by `>`.
        (Some(open), Some(gt)) if open < gt => {
            let mut end = rest.len();
            let mut i = rest.len();
            while i > open {
                i -= 1;
                if rest[i] == b']' {
                    let after = rest[i + 1..].iter().position(|c| !c.is_ascii_whitespace());
                    if let Some(a) = after.filter(|a| rest[i + 1 + a] == b'>') {
                        end = i + 1 + a + 1;
                        break;
                    }
                }
            }
            end
        }
        (_, Some(gt)) => gt + 1,
        _ => rest.len(),
    };
    for c in &mut prolog[start..start + end] {
        if *c != b'\n' {
            *c = b' ';
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_export_entry_is_found_whatever_its_localized_name() {
        assert!(is_export_entry("apple_health_export/export.xml"));
        assert!(is_export_entry("apple_health_export/Exportieren.xml"));
        assert!(is_export_entry("apple_health_export/导出.xml"));
        assert!(!is_export_entry("apple_health_export/export_cda.xml"));
        assert!(!is_export_entry("apple_health_export/Exportieren_cda.xml"));
        assert!(!is_export_entry("apple_health_export/workout-routes/route_2019.gpx"));
        assert!(!is_export_entry("apple_health_export/electrocardiograms/ecg_2020.csv"));
    }

    #[test]
    fn a_broken_internal_dtd_is_blanked_but_its_lines_are_kept() {
        let mut p = b"<?xml version=\"1.0\"?>\n<!DOCTYPE HealthData [\n<!ATTLIST VisionPrescription\n  type CDATA #REQUIRED\n\n<!ELEMENT X EMPTY>\n]>\n".to_vec();
        let lines = count_newlines(&p);
        blank_doctype(&mut p);
        assert_eq!(count_newlines(&p), lines);
        assert!(!p.windows(2).any(|w| w == b"<!"));
        assert!(p.starts_with(b"<?xml"));
    }

    #[test]
    fn forbidden_control_characters_are_removed_and_lines_counted() {
        let mut raw: &[u8] = b"<a>\n<b v=\"x\x0by\"/>\n<c/></a>";
        let mut f = XmlFilter::new(&mut raw);
        let mut s = String::new();
        f.read_to_string(&mut s).expect("reads");
        assert_eq!(s, "<a>\n<b v=\"xy\"/>\n<c/></a>");
        assert_eq!(f.line_at(s.find("<c").expect("c is there") as u64), 3);
    }
}
