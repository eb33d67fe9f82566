//! A zip written as a stream of upload parts: entries are deflated into a buffer that is handed to a
//! [`PartSink`] whenever it reaches the part size, so memory stays at about one part however large the
//! export. Entries use data descriptors (sizes after the data), which every unzip tool reads. Each entry's
//! uncompressed bytes are hashed (SHA-256) and its records counted for the manifest.

use std::io::Write;
use std::sync::{Arc, Mutex, PoisonError};

use serde::Serialize;
use sha2::{Digest, Sha256};
use zip::CompressionMethod;
use zip::write::{SimpleFileOptions, StreamWriter, ZipWriter};

/// S3's smallest part (but the last) is 5 MiB; 8 MiB parts keep 10,000 parts above 80 GB.
pub const PART_BYTES: usize = 8 * 1024 * 1024;

/// Where finished parts go (an S3 multipart upload; a vector in tests). Parts are numbered from 1, in order.
pub trait PartSink {
    fn put_part(&mut self, number: i32, bytes: Vec<u8>) -> impl Future<Output = anyhow::Result<()>> + Send;
}

/// One entry of the archive, as the manifest lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    pub name: String,
    /// Records in the file: lines of an NDJSON file, elements of a JSON array, 1 for a JSON object.
    pub records: u64,
    /// Uncompressed size.
    pub bytes: u64,
    /// SHA-256 of the uncompressed bytes, lowercase hex.
    pub sha256: String,
}

/// The compressed bytes not yet handed on; shared with the zip writer, which owns its own handle.
#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Buffer {
    fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    fn take(&self) -> Vec<u8> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

struct Open {
    name: String,
    records: u64,
    bytes: u64,
    hash: Sha256,
}

/// The archive being written.
pub struct ZipStream<P> {
    zip: ZipWriter<StreamWriter<Buffer>>,
    buffer: Buffer,
    sink: P,
    part_bytes: usize,
    parts: i32,
    size: u64,
    open: Option<Open>,
    entries: Vec<Entry>,
}

/// What a finished archive was.
#[derive(Debug)]
pub struct Finished<P> {
    pub sink: P,
    /// Bytes of the zip.
    pub size: u64,
    pub parts: i32,
    pub entries: Vec<Entry>,
}

fn zip_error(e: zip::result::ZipError) -> anyhow::Error {
    anyhow::Error::new(e).context("writing the zip")
}

impl<P: PartSink + Send> ZipStream<P> {
    /// `part_bytes` is the size at which a part is handed on (at least 5 MiB for S3, but the last part).
    pub fn new(sink: P, part_bytes: usize) -> Self {
        let buffer = Buffer::default();
        let zip = ZipWriter::new_stream(buffer.clone()).set_auto_large_file();
        Self { zip, buffer, sink, part_bytes, parts: 0, size: 0, open: None, entries: Vec::new() }
    }

    /// Starts an entry (ending the one before).
    pub fn start(&mut self, name: &str) -> anyhow::Result<()> {
        self.end()?;
        let options = SimpleFileOptions::default().compression_method(CompressionMethod::Deflated);
        self.zip.start_file(name, options).map_err(zip_error)?;
        self.open = Some(Open { name: name.to_owned(), records: 0, bytes: 0, hash: Sha256::new() });
        Ok(())
    }

    /// Bytes of the open entry that are not a record of their own (brackets, separators).
    pub fn write(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        let open = self.open.as_mut().ok_or_else(|| anyhow::anyhow!("no entry is open"))?;
        self.zip.write_all(bytes)?;
        open.hash.update(bytes);
        open.bytes += bytes.len() as u64;
        Ok(())
    }

    /// Counts `n` records in the open entry.
    pub fn count(&mut self, n: u64) {
        if let Some(open) = self.open.as_mut() {
            open.records += n;
        }
    }

    /// One NDJSON line: the value and a newline, counted as a record.
    pub fn line(&mut self, value: &impl Serialize) -> anyhow::Result<()> {
        let mut bytes = serde_json::to_vec(value)?;
        bytes.push(b'\n');
        self.write(&bytes)?;
        self.count(1);
        Ok(())
    }

    /// A whole JSON entry: `records` says how many records the document holds.
    pub async fn document(&mut self, name: &str, value: &impl Serialize, records: u64) -> anyhow::Result<()> {
        self.start(name)?;
        self.write(&serde_json::to_vec_pretty(value)?)?;
        self.count(records);
        self.end()?;
        self.flush().await
    }

    /// Ends the open entry, if any, and lists it.
    pub fn end(&mut self) -> anyhow::Result<()> {
        if let Some(open) = self.open.take() {
            // Finishing an entry writes its data descriptor; the next start (or finish) does that.
            self.entries.push(Entry {
                name: open.name,
                records: open.records,
                bytes: open.bytes,
                sha256: hex(&open.hash.finalize()),
            });
        }
        Ok(())
    }

    /// The entries ended so far.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Hands the buffered bytes on as a part once they reach the part size.
    pub async fn flush(&mut self) -> anyhow::Result<()> {
        if self.buffer.len() >= self.part_bytes {
            self.send_part().await?;
        }
        Ok(())
    }

    async fn send_part(&mut self) -> anyhow::Result<()> {
        let bytes = self.buffer.take();
        self.parts += 1;
        self.size += bytes.len() as u64;
        self.sink.put_part(self.parts, bytes).await
    }

    /// Ends the open entry, writes the central directory and hands on the last part (there is always at
    /// least one).
    pub async fn finish(mut self) -> anyhow::Result<Finished<P>> {
        self.end()?;
        let Self { zip, buffer, mut sink, mut parts, mut size, entries, .. } = self;
        zip.finish().map_err(zip_error)?;
        let rest = buffer.take();
        if !rest.is_empty() || parts == 0 {
            parts += 1;
            size += rest.len() as u64;
            sink.put_part(parts, rest).await?;
        }
        Ok(Finished { sink, size, parts, entries })
    }
}

pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    #[derive(Default)]
    struct Parts(Vec<(i32, Vec<u8>)>);

    impl PartSink for Parts {
        async fn put_part(&mut self, number: i32, bytes: Vec<u8>) -> anyhow::Result<()> {
            self.0.push((number, bytes));
            Ok(())
        }
    }

    /// Hex of chained SHA-256 digests: deflate cannot shrink it below about half, so parts fill up.
    fn noise(seed: u64, n: usize) -> String {
        let mut digest = Sha256::digest(seed.to_le_bytes());
        let mut text = String::new();
        while text.len() < n {
            text.push_str(&hex(&digest));
            digest = Sha256::digest(digest);
        }
        text
    }

    #[tokio::test]
    async fn a_large_archive_leaves_in_parts_of_the_part_size_and_unzips_with_its_manifest_true() -> anyhow::Result<()>
    {
        let part = 64 * 1024;
        let mut z = ZipStream::new(Parts::default(), part);
        z.start("data/lines.ndjson")?;
        let mut expected = Vec::new();
        for i in 0..800u64 {
            let value = serde_json::json!({"i": i, "text": noise(i, 1000)});
            z.line(&value)?;
            expected.extend(serde_json::to_vec(&value)?);
            expected.push(b'\n');
            z.flush().await?;
        }
        z.document("profile.json", &serde_json::json!({"id": "usr_1"}), 1).await?;
        let done = z.finish().await?;

        let parts = &done.sink.0;
        assert!(parts.len() >= 5, "about 400 KB compressed in 64 KB parts: {}", parts.len());
        assert_eq!(parts.iter().map(|p| p.0).collect::<Vec<_>>(), (1..=parts.len() as i32).collect::<Vec<_>>());
        let (last, full) = parts.split_last().ok_or_else(|| anyhow::anyhow!("no parts"))?;
        for (n, bytes) in full {
            // A part is handed on at the first flush past the size: over it by at most what deflate emits at
            // once (its blocks, some tens of KB), never by the archive.
            assert!(bytes.len() >= part && bytes.len() < 2 * part, "part {n} is {} bytes", bytes.len());
        }
        assert!(!last.1.is_empty());
        let zip_bytes: Vec<u8> = parts.iter().flat_map(|p| p.1.clone()).collect();
        assert_eq!(done.size, zip_bytes.len() as u64);

        let mut archive = zip::ZipArchive::new(std::io::Cursor::new(zip_bytes))?;
        let mut lines = Vec::new();
        archive.by_name("data/lines.ndjson")?.read_to_end(&mut lines)?;
        assert_eq!(lines, expected);
        let entry = &done.entries[0];
        assert_eq!(
            (entry.name.as_str(), entry.records, entry.bytes),
            ("data/lines.ndjson", 800, expected.len() as u64)
        );
        assert_eq!(entry.sha256, hex(&Sha256::digest(&expected)));
        assert_eq!(done.entries[1].records, 1);
        Ok(())
    }

    #[tokio::test]
    async fn a_tiny_archive_is_one_part() -> anyhow::Result<()> {
        let mut z = ZipStream::new(Parts::default(), PART_BYTES);
        z.document("manifest.json", &serde_json::json!({"files": []}), 1).await?;
        let done = z.finish().await?;
        assert_eq!(done.sink.0.len(), 1);
        let mut archive = zip::ZipArchive::new(std::io::Cursor::new(done.sink.0[0].1.clone()))?;
        assert_eq!(archive.len(), 1);
        let mut text = String::new();
        archive.by_index(0)?.read_to_string(&mut text)?;
        assert!(text.contains("files"));
        Ok(())
    }
}
