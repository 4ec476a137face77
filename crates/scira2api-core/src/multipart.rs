//! The `model` field of a `multipart/form-data` upload (transcription, translation, image
//! edits), read as the body streams by so that the upload can be routed by it and sent on with
//! the field rewritten — without ever holding the body whole.
//!
//! Clients put the field anywhere: Python's SDK sends it before the file, Node's SDK and curl
//! as the user wrote them (the documented examples: after the file). What precedes the field is
//! held in memory up to [`SPOOL_AT`], and beyond that in an unlinked temporary file, so a 25 MB
//! file ahead of its `model` costs no memory; once the field is read, the rest streams through.
//! The whole upload is bounded by the caller's limit.

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt, stream};
use scira2api_types::Error;
use scira2api_upstream::ByteStream;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

/// Bytes held in memory before what precedes the `model` field goes to a temporary file.
pub const SPOOL_AT: usize = 1024 * 1024;
/// The longest part header block accepted.
const MAX_HEADERS: usize = 16 * 1024;
/// The longest `model` value accepted.
const MAX_MODEL: usize = 256;

/// The boundary of a `multipart/form-data` content type.
pub fn boundary(content_type: &str) -> Option<&str> {
    let mut parts = content_type.split(';');
    if !parts
        .next()?
        .trim()
        .eq_ignore_ascii_case("multipart/form-data")
    {
        return None;
    }
    parts.find_map(|p| {
        let (k, v) = p.split_once('=')?;
        if !k.trim().eq_ignore_ascii_case("boundary") {
            return None;
        }
        let v = v.trim().trim_matches('"');
        (1..=200).contains(&v.len()).then_some(v)
    })
}

/// Bytes gathered before one write to the spool file (writes go through the blocking pool).
const SPOOL_WRITE: usize = 256 * 1024;

/// What precedes the `model` field's value: in memory, or spooled to a temporary file (the
/// last bytes still in `buf`).
enum Held {
    Memory(BytesMut),
    File {
        file: tokio::fs::File,
        buf: BytesMut,
        len: u64,
    },
}

impl Held {
    fn len(&self) -> u64 {
        match self {
            Held::Memory(b) => b.len() as u64,
            Held::File { len, .. } => *len,
        }
    }

    async fn push(&mut self, bytes: &[u8]) -> Result<(), Error> {
        if let Held::Memory(b) = self {
            if b.len() + bytes.len() <= SPOOL_AT {
                b.extend_from_slice(bytes);
                return Ok(());
            }
            let file = spool_file().await?;
            let len = b.len() as u64;
            *self = Held::File {
                file,
                buf: std::mem::take(b),
                len,
            };
        }
        if let Held::File { file, buf, len } = self {
            buf.extend_from_slice(bytes);
            *len += bytes.len() as u64;
            if buf.len() >= SPOOL_WRITE {
                file.write_all(buf).await.map_err(spool_error)?;
                buf.clear();
            }
        }
        Ok(())
    }

    /// The held bytes as a stream (a spooled file read back in 64 KiB chunks).
    async fn into_stream(self) -> Result<ByteStream, Error> {
        match self {
            Held::Memory(b) => Ok(Box::pin(stream::once(async move { Ok(b.freeze()) }))),
            Held::File { mut file, buf, .. } => {
                file.write_all(&buf).await.map_err(spool_error)?;
                file.flush().await.map_err(spool_error)?;
                file.seek(std::io::SeekFrom::Start(0))
                    .await
                    .map_err(spool_error)?;
                Ok(Box::pin(stream::unfold(Some(file), |file| async move {
                    let mut file = file?;
                    let mut buf = vec![0u8; 64 * 1024];
                    match file.read(&mut buf).await {
                        Ok(0) => None,
                        Ok(n) => {
                            buf.truncate(n);
                            Some((Ok(Bytes::from(buf)), Some(file)))
                        }
                        Err(e) => Some((Err(spool_error(e)), None)),
                    }
                })))
            }
        }
    }
}

fn spool_error(e: std::io::Error) -> Error {
    Error::Internal(format!(
        "could not hold an upload in a temporary file ({}): {e}",
        std::env::temp_dir().display()
    ))
}

/// A new temporary file, already unlinked: it disappears with its handle, whatever happens.
async fn spool_file() -> Result<tokio::fs::File, Error> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let path = std::env::temp_dir().join(format!(
        "scira2api-upload-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let file = tokio::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .await
        .map_err(spool_error)?;
    let _ = tokio::fs::remove_file(&path).await;
    log::debug!("an upload's head is spooled to a temporary file");
    Ok(file)
}

/// An upload whose `model` field has been read.
pub struct ModelUpload {
    /// The field's value (trimmed).
    pub model: String,
    held: Held,
    /// The part of the read input after the value (it starts with the next delimiter).
    after: Bytes,
    rest: ByteStream,
}

impl ModelUpload {
    /// The whole upload again, with `model` as the field's value.
    pub async fn with_model(self, model: &str) -> Result<ByteStream, Error> {
        let head = self.held.into_stream().await?;
        let value = Bytes::copy_from_slice(model.as_bytes());
        let middle = stream::iter([Ok(value), Ok(self.after)]);
        Ok(Box::pin(head.chain(middle).chain(self.rest)))
    }

    /// How much of the upload was held to find the field.
    pub fn held_bytes(&self) -> u64 {
        self.held.len()
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(hay, needle)
}

fn malformed(what: &str) -> Error {
    Error::invalid(
        format!("the multipart/form-data body is malformed: {what}"),
        None,
    )
}

/// The `name` of a part from its header block.
fn part_name(headers: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(headers).ok()?;
    let line = text.split("\r\n").find(|l| {
        l.get(..20)
            .is_some_and(|h| h.eq_ignore_ascii_case("content-disposition:"))
    })?;
    line.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("name")
            .then(|| v.trim().trim_matches('"').to_owned())
    })
}

enum State {
    /// Before the first delimiter.
    Preamble,
    /// Right after a delimiter: `\r\n` (a part follows) or `--` (the end).
    AfterDelimiter,
    /// In a part's header block.
    Headers,
    /// In a part that is not the model (passed over).
    Body,
    /// In the model's value.
    Value,
}

/// Reads `input` (a `multipart/form-data` body with `boundary`) up to the end of its `model`
/// field; at most `limit` bytes held. A body without the field is a 400 naming `model`.
pub async fn read_model<S>(input: S, boundary: &str, limit: usize) -> Result<ModelUpload, Error>
where
    S: Stream<Item = Result<Bytes, Error>> + 'static,
{
    let mut rest: ByteStream = Box::pin(input);
    let delimiter = [b"\r\n--", boundary.as_bytes()].concat();
    let mut held = Held::Memory(BytesMut::new());
    let mut pending = BytesMut::new();
    let mut state = State::Preamble;
    let mut more = true;
    loop {
        let need_more = match state {
            State::Preamble => {
                let opening = &delimiter[2..];
                if pending.starts_with(opening) {
                    let d = pending.split_to(opening.len());
                    held.push(&d).await?;
                    state = State::AfterDelimiter;
                    false
                } else if let Some(i) = find(&pending, &delimiter) {
                    let d = pending.split_to(i + delimiter.len());
                    held.push(&d).await?;
                    state = State::AfterDelimiter;
                    false
                } else {
                    true
                }
            }
            State::AfterDelimiter => {
                if pending.len() < 2 {
                    true
                } else if pending.starts_with(b"--") {
                    return Err(Error::invalid(
                        "the upload has no `model` field",
                        Some("model"),
                    ));
                } else if pending.starts_with(b"\r\n") {
                    let d = pending.split_to(2);
                    held.push(&d).await?;
                    state = State::Headers;
                    false
                } else {
                    return Err(malformed("a delimiter is followed by neither CRLF nor --"));
                }
            }
            State::Headers => match find(&pending, b"\r\n\r\n") {
                Some(i) => {
                    let block = pending.split_to(i + 4);
                    let is_model = part_name(&block[..i]).as_deref() == Some("model");
                    held.push(&block).await?;
                    state = if is_model { State::Value } else { State::Body };
                    false
                }
                None if pending.len() > MAX_HEADERS => {
                    return Err(malformed("a part's headers are longer than 16 KiB"));
                }
                None => true,
            },
            State::Body => match find(&pending, &delimiter) {
                Some(i) => {
                    let d = pending.split_to(i + delimiter.len());
                    held.push(&d).await?;
                    state = State::AfterDelimiter;
                    false
                }
                None => {
                    // Keep what could be the start of a delimiter split across chunks.
                    let keep = delimiter.len() - 1;
                    if pending.len() > keep {
                        let d = pending.split_to(pending.len() - keep);
                        held.push(&d).await?;
                    }
                    true
                }
            },
            State::Value => match find(&pending, &delimiter) {
                Some(i) if i <= MAX_MODEL => {
                    let value = pending.split_to(i);
                    let model = std::str::from_utf8(&value)
                        .map_err(|_| Error::invalid("`model` is not UTF-8", Some("model")))?
                        .trim()
                        .to_owned();
                    return Ok(ModelUpload {
                        model,
                        held,
                        after: pending.freeze(),
                        rest,
                    });
                }
                Some(_) => return Err(Error::invalid("`model` is too long", Some("model"))),
                None if pending.len() > MAX_MODEL + delimiter.len() => {
                    return Err(Error::invalid("`model` is too long", Some("model")));
                }
                None => true,
            },
        };
        if !need_more {
            continue;
        }
        if !more {
            return Err(malformed("it ended before its closing delimiter"));
        }
        match rest.next().await {
            Some(chunk) => {
                let chunk = chunk?;
                if held.len() as usize + pending.len() + chunk.len() > limit {
                    return Err(Error::PayloadTooLarge { limit });
                }
                pending.extend_from_slice(&chunk);
            }
            None => more = false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `body` in chunks of `size`.
    fn chunked(body: &[u8], size: usize) -> ByteStream {
        let parts: Vec<Result<Bytes, Error>> = body
            .chunks(size)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        Box::pin(stream::iter(parts))
    }

    fn form(parts: &[(&str, Option<&str>, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, file, body) in parts {
            out.extend_from_slice(b"--XyZ\r\n");
            match file {
                Some(f) => out.extend_from_slice(
                    format!("Content-Disposition: form-data; name=\"{name}\"; filename=\"{f}\"\r\nContent-Type: audio/mpeg\r\n\r\n").as_bytes(),
                ),
                None => out.extend_from_slice(
                    format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes(),
                ),
            }
            out.extend_from_slice(body);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"--XyZ--\r\n");
        out
    }

    async fn collect(s: ByteStream) -> Vec<u8> {
        let mut out = Vec::new();
        let mut s = s;
        while let Some(c) = s.next().await {
            out.extend_from_slice(&c.unwrap());
        }
        out
    }

    #[test]
    fn the_boundary_is_read_from_the_content_type() {
        assert_eq!(
            boundary("multipart/form-data; boundary=\"a b\""),
            Some("a b")
        );
        assert_eq!(
            boundary("Multipart/Form-Data;charset=utf-8; boundary=--x"),
            Some("--x")
        );
        assert_eq!(boundary("application/json; boundary=x"), None);
        assert_eq!(boundary("multipart/form-data"), None);
    }

    #[actix_rt::test]
    async fn the_model_is_found_anywhere_and_rewritten_in_place() {
        // A file holding starts of the delimiter (never the whole: a client picks a boundary its
        // content lacks), ahead of the model and after it.
        let audio: Vec<u8> = b"\r\n--Xy\r\n--X\r\n-XyZ"
            .iter()
            .copied()
            .chain((0..3 * SPOOL_AT).map(|i| (i % 251) as u8))
            .collect();
        for parts in [
            vec![
                ("model", None, &b"whisper-1"[..]),
                ("file", Some("a.mp3"), &audio[..]),
            ],
            vec![
                ("file", Some("a.mp3"), &audio[..]),
                ("language", None, b"en"),
                ("model", None, b" whisper-1 "),
                ("response_format", None, b"srt"),
            ],
        ] {
            let body = form(&parts);
            for size in [1, 7, 4096, 1 << 20] {
                if size < 4096 && parts[0].0 == "file" {
                    continue; // tiny chunks over megabytes are only slow
                }
                let up = read_model(chunked(&body, size), "XyZ", usize::MAX)
                    .await
                    .unwrap();
                assert_eq!(up.model, "whisper-1");
                let spooled = up.held_bytes() > SPOOL_AT as u64;
                assert_eq!(spooled, parts[0].0 == "file", "only a big head is spooled");
                let out = collect(up.with_model("gpt-4o-transcribe").await.unwrap()).await;
                let original = parts.iter().find(|p| p.0 == "model").unwrap().2;
                let want = {
                    let marker = format!(
                        "name=\"model\"\r\n\r\n{}",
                        String::from_utf8_lossy(original)
                    );
                    let replaced = "name=\"model\"\r\n\r\ngpt-4o-transcribe";
                    let i = find(&body, marker.as_bytes()).unwrap();
                    [&body[..i], replaced.as_bytes(), &body[i + marker.len()..]].concat()
                };
                assert!(
                    out == want,
                    "size {size}: the rest is byte for byte the same"
                );
            }
        }
    }

    #[actix_rt::test]
    async fn no_model_too_big_or_broken_are_errors() {
        let body = form(&[("file", Some("a.mp3"), b"abc")]);
        let e = read_model(chunked(&body, 5), "XyZ", usize::MAX)
            .await
            .err()
            .unwrap();
        assert!(
            matches!(&e, Error::InvalidRequest { param: Some(p), .. } if p == "model"),
            "{e:?}"
        );
        let body = form(&[
            ("file", Some("a.mp3"), &[7u8; 5000][..]),
            ("model", None, b"m"),
        ]);
        let e = read_model(chunked(&body, 512), "XyZ", 4096)
            .await
            .err()
            .unwrap();
        assert!(matches!(e, Error::PayloadTooLarge { limit: 4096 }), "{e:?}");
        let cut = &body[..body.len() / 2];
        let e = read_model(chunked(cut, 512), "XyZ", usize::MAX)
            .await
            .err()
            .unwrap();
        assert!(e.to_string().contains("ended before"), "{e}");
        let e = read_model(chunked(&body, 512), "other", usize::MAX)
            .await
            .err()
            .unwrap();
        assert!(e.to_string().contains("ended before"), "{e}");
    }
}
