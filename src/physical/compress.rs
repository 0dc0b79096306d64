//! Compressed segments in the archive: the streaming encoder the writer feeds (one per
//! segment, with flush points), and the decoders the archive scan and pgrestorewal read with.
//!
//! The formats are the ones pg_receivewal writes and reads, so an archive moves between the
//! two tools: gzip (one member, as zlib's `gzwrite` writes it), the LZ4 frame format (as
//! `LZ4F_compressBegin`/`Update`/`End`), and zstd (one frame; pg_receivewal refuses zstd).
//!
//! A `.partial` is flushed the way `dir_sync` in walmethods.c flushes it: the encoder ends its
//! current block (gzip `Z_SYNC_FLUSH`, an LZ4 block, a zstd block) before the fsync, so every
//! byte reported flushed decodes from what is on disk. A decoder reads a file up to the first
//! byte that does not decode: the end of a partial that was never finished, or a torn tail.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};

use flate2::write::GzEncoder;
use flate2::{Decompress, FlushDecompress, Status};
use lz4_flex::frame::{BlockMode, BlockSize, FrameDecoder, FrameEncoder, FrameInfo};

use crate::compression::{Compression, Method};

/// A compressing writer into one segment file.
pub enum Encoder {
    Gzip(GzEncoder<File>),
    Lz4(Box<FrameEncoder<File>>),
    Zstd(zstd::stream::write::Encoder<'static, File>),
}

impl Encoder {
    /// Starts a compressed stream at the start of `file`. Panics on `Method::None`: the
    /// uncompressed writer writes in place and needs no encoder.
    pub fn new(c: Compression, file: File) -> io::Result<Encoder> {
        Ok(match c.method {
            Method::None => panic!("no encoder for uncompressed segments"),
            // pg_receivewal's default level is zlib's Z_DEFAULT_COMPRESSION (6).
            Method::Gzip => Encoder::Gzip(GzEncoder::new(
                file,
                if c.level < 0 {
                    flate2::Compression::default()
                } else {
                    flate2::Compression::new(c.level as u32)
                },
            )),
            // LZ4's fast mode (pg_receivewal's default level 0). Block checksums let a reader
            // tell a torn block from WAL; the content checksum covers the finished segment.
            Method::Lz4 => Encoder::Lz4(Box::new(FrameEncoder::with_frame_info(
                FrameInfo::new()
                    .block_size(BlockSize::Max64KB)
                    .block_mode(BlockMode::Linked)
                    .block_checksums(true)
                    .content_checksum(true),
                file,
            ))),
            Method::Zstd => {
                let mut e = zstd::stream::write::Encoder::new(file, c.level)?;
                e.include_checksum(true)?;
                if c.long_distance {
                    e.long_distance_matching(true)?;
                }
                Encoder::Zstd(e)
            }
        })
    }

    pub fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Encoder::Gzip(e) => e.write_all(buf),
            Encoder::Lz4(e) => e.write_all(buf),
            Encoder::Zstd(e) => e.write_all(buf),
        }
    }

    /// Ends the current block and hands it to the file, so that everything written so far
    /// decodes from the file once it is fsync'ed. Not durability itself: the caller fsyncs.
    pub fn flush_point(&mut self) -> io::Result<()> {
        match self {
            // flate2's flush is a Z_SYNC_FLUSH, as pg_receivewal's gzflush(Z_SYNC_FLUSH).
            Encoder::Gzip(e) => e.flush(),
            Encoder::Lz4(e) => e.flush(),
            Encoder::Zstd(e) => e.flush(),
        }
    }

    /// Writes the stream's end (trailer, end mark, checksums) and returns the file.
    pub fn finish(self) -> io::Result<File> {
        match self {
            Encoder::Gzip(e) => e.finish(),
            Encoder::Lz4(e) => e.finish().map_err(io::Error::other),
            Encoder::Zstd(e) => e.finish(),
        }
    }

    pub fn file(&self) -> &File {
        match self {
            Encoder::Gzip(e) => e.get_ref(),
            Encoder::Lz4(e) => e.get_ref(),
            Encoder::Zstd(e) => e.get_ref(),
        }
    }
}

/// The decompressed bytes of a file written with `method` (the file itself for none).
/// Reading stops with an error, or end of file, where the data stops decoding.
pub fn reader(method: Method, file: File) -> io::Result<Box<dyn Read + Send>> {
    let buffered = BufReader::with_capacity(1 << 16, file);
    Ok(match method {
        Method::None => Box::new(buffered),
        // One member, as pg_receivewal writes it; bytes after it are not read.
        Method::Gzip => Box::new(GzipReader {
            input: buffered,
            inflate: Decompress::new_gzip(15),
            error: None,
            done: false,
        }),
        Method::Lz4 => Box::new(FrameDecoder::new(buffered)),
        Method::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(buffered)?.single_frame()),
    })
}

/// A gzip member's content. Unlike flate2's `GzDecoder`, which drops what it decoded in the
/// read that met damage, it hands over every byte before the damage first, and reports the
/// damage on the next read: a torn `.partial` yields all the WAL before its tear.
struct GzipReader<R> {
    input: R,
    inflate: Decompress,
    error: Option<io::Error>,
    done: bool,
}

impl<R: io::BufRead> Read for GzipReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        if self.done || out.is_empty() {
            return Ok(0);
        }
        loop {
            let input = self.input.fill_buf()?;
            let eof = input.is_empty();
            let (in0, out0) = (self.inflate.total_in(), self.inflate.total_out());
            let res = self.inflate.decompress(input, out, FlushDecompress::None);
            let used = (self.inflate.total_in() - in0) as usize;
            let made = (self.inflate.total_out() - out0) as usize;
            self.input.consume(used);
            match res {
                Ok(Status::StreamEnd) => self.done = true,
                Ok(_) if made == 0 && eof => {
                    self.error =
                        Some(io::Error::new(io::ErrorKind::UnexpectedEof, "gzip stream ends before its end"))
                }
                Ok(_) if made == 0 && used == 0 => {
                    self.error =
                        Some(io::Error::new(io::ErrorKind::InvalidData, "gzip stream makes no progress"))
                }
                Ok(_) if made == 0 => continue,
                Ok(_) => {}
                Err(e) => self.error = Some(io::Error::new(io::ErrorKind::InvalidData, e)),
            }
            if made > 0 {
                return Ok(made);
            }
            if let Some(e) = self.error.take() {
                return Err(e);
            }
            return Ok(0);
        }
    }
}

/// What [`decode`] found.
#[derive(Debug)]
pub struct Decoded {
    /// Bytes decoded (and handed to the sink) before the data stopped.
    pub len: u64,
    /// Why decoding stopped before a clean end, if it did: a partial's unfinished stream, a
    /// torn tail, or damage. `None` when the stream ended where it should.
    pub stopped: Option<io::Error>,
}

/// Decodes a file written with `method`, handing at most `limit` bytes to `sink` (and
/// decoding one byte past `limit` to tell whether there is more).
///
/// Where the data stops decoding, every byte before that point is handed over: a decoder
/// that meets damage in the middle of a read returns the error and drops what it decoded in
/// that read, so after an error the file is decoded again, one byte per read from the last
/// good read on. A torn `.partial` thus yields all the WAL before its tear, what was
/// reported flushed included.
pub fn decode(
    method: Method,
    file: File,
    limit: u64,
    sink: &mut dyn FnMut(&[u8]) -> io::Result<()>,
) -> io::Result<Decoded> {
    let again = file.try_clone()?;
    let first = decode_pass(method, file, limit, u64::MAX, sink)?;
    if first.stopped.is_none() || first.len > limit {
        return Ok(first);
    }
    let mut again = again;
    again.seek(SeekFrom::Start(0))?;
    let good = first.len;
    // The second pass hands over only what the first one did not.
    let mut skip = good;
    let mut tail = |b: &[u8]| {
        let drop = (skip as usize).min(b.len());
        skip -= drop as u64;
        if drop < b.len() {
            sink(&b[drop..])?;
        }
        Ok(())
    };
    decode_pass(method, again, limit, good, &mut tail)
}

/// One decoding pass: reads of 64 KiB up to `fine_from` bytes, then of one byte.
fn decode_pass(
    method: Method,
    file: File,
    limit: u64,
    fine_from: u64,
    sink: &mut dyn FnMut(&[u8]) -> io::Result<()>,
) -> io::Result<Decoded> {
    let mut r = reader(method, file)?;
    let mut buf = vec![0u8; 1 << 16];
    let mut len = 0u64;
    loop {
        let want = if len >= fine_from { 1 } else { ((fine_from - len).min(buf.len() as u64)) as usize };
        match r.read(&mut buf[..want]) {
            Ok(0) => return Ok(Decoded { len, stopped: None }),
            Ok(n) => {
                let take = (n as u64).min(limit.saturating_sub(len)) as usize;
                sink(&buf[..take])?;
                len += n as u64;
                if len > limit {
                    return Ok(Decoded { len, stopped: None });
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Ok(Decoded { len, stopped: Some(e) }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    struct Tmp(PathBuf);
    impl Drop for Tmp {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    fn tmp(tag: &str) -> Tmp {
        Tmp(std::env::temp_dir().join(format!("pgrw-compress-{tag}-{}", std::process::id())))
    }

    fn data(n: usize) -> Vec<u8> {
        // WAL-like: runs of repeated bytes and counters, compressible but not trivially.
        (0..n).map(|i| if (i / 512) % 3 == 0 { (i % 251) as u8 } else { (i / 4096) as u8 }).collect()
    }

    fn decode_all(method: Method, path: &std::path::Path, limit: u64) -> (Vec<u8>, Decoded) {
        let mut out = Vec::new();
        let d = decode(method, File::open(path).unwrap(), limit, &mut |b| {
            out.extend_from_slice(b);
            Ok(())
        })
        .unwrap();
        (out, d)
    }

    fn spec(method: Method) -> Compression {
        crate::compression::parse(method.name()).unwrap()
    }

    #[test]
    fn round_trip_every_method() {
        for method in [Method::Gzip, Method::Lz4, Method::Zstd] {
            let t = tmp(&format!("rt-{}", method.name()));
            let want = data(1 << 20);
            let mut e = Encoder::new(spec(method), File::create(&t.0).unwrap()).unwrap();
            for chunk in want.chunks(10_000) {
                e.write_all(chunk).unwrap();
            }
            e.finish().unwrap();
            let (got, d) = decode_all(method, &t.0, 1 << 20);
            assert!(d.stopped.is_none(), "{method:?}: {:?}", d.stopped);
            assert_eq!(d.len, 1 << 20);
            assert!(got == want, "{method:?}");
            assert!(std::fs::metadata(&t.0).unwrap().len() < (1 << 19), "{method:?} compresses");
        }
    }

    /// What a flush point promises: everything written before it decodes from the file as it
    /// is on disk, with the stream unfinished and a torn tail after it.
    #[test]
    fn flush_points_make_an_unfinished_stream_decodable() {
        for method in [Method::Gzip, Method::Lz4, Method::Zstd] {
            let t = tmp(&format!("flush-{}", method.name()));
            let want = data(300_000);
            let mut e = Encoder::new(spec(method), File::create(&t.0).unwrap()).unwrap();
            e.write_all(&want[..123_457]).unwrap();
            e.flush_point().unwrap();
            let flushed_size = std::fs::metadata(&t.0).unwrap().len();
            let (got, d) = decode_all(method, &t.0, 1 << 20);
            assert_eq!(d.len, 123_457, "{method:?}: {:?}", d.stopped);
            assert!(got == want[..123_457], "{method:?}");
            // More written but not flushed, and a torn tail: garbage after the flush point.
            e.write_all(&want[123_457..]).unwrap();
            drop(e);
            let f = std::fs::OpenOptions::new().write(true).open(&t.0).unwrap();
            f.set_len(flushed_size).unwrap();
            use std::os::unix::fs::FileExt;
            f.write_all_at(&[0xA5; 700], flushed_size).unwrap();
            let (got, d) = decode_all(method, &t.0, 1 << 20);
            assert!(d.len >= 123_457 && got[..123_457] == want[..123_457], "{method:?}: {}", d.len);
            assert!(d.len < 300_000, "{method:?}");
        }
    }

    #[test]
    fn limit_stops_early() {
        let t = tmp("limit");
        let mut e = Encoder::new(spec(Method::Gzip), File::create(&t.0).unwrap()).unwrap();
        e.write_all(&data(200_000)).unwrap();
        e.finish().unwrap();
        let (got, d) = decode_all(Method::Gzip, &t.0, 100_000);
        assert_eq!(got.len(), 100_000);
        assert!(d.len > 100_000);
    }
}
