//! The mock's multipart and file endpoints: `/v1/audio/transcriptions` and `/translations`
//! (a transcript that names the model, the file's size and a digest of its bytes, in the asked
//! `response_format`: json, verbose_json, text, srt, vtt), `/v1/images/edits` (a 1×1 PNG), and
//! `/v1/files` and `/v1/batches` with their ids, kept in memory. A small multipart parser reads
//! the uploads, so a test can see exactly what arrived.

use crate::server::MockState;
use actix_web::{HttpRequest, HttpResponse};
use base64::Engine;
use bytes::Bytes;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Files and batches the mock holds.
#[derive(Debug, Default)]
pub(crate) struct Store {
    files: Vec<(Value, Bytes)>,
    batches: Vec<Value>,
    next: u64,
}

/// One field of a multipart body.
#[derive(Debug)]
pub(crate) struct Part {
    pub(crate) name: String,
    pub(crate) filename: Option<String>,
    pub(crate) data: Bytes,
}

/// Parses a `multipart/form-data` body, or says what is wrong with it.
pub(crate) fn parse_multipart(content_type: &str, body: &Bytes) -> Result<Vec<Part>, String> {
    let boundary = content_type
        .split(';')
        .find_map(|p| p.trim().strip_prefix("boundary="))
        .map(|b| b.trim_matches('"'))
        .ok_or("no boundary in the content type")?;
    let delimiter = format!("--{boundary}");
    let find = |from: usize, needle: &[u8]| {
        body[from..]
            .windows(needle.len())
            .position(|w| w == needle)
            .map(|i| i + from)
    };
    let mut at = find(0, delimiter.as_bytes()).ok_or("no opening delimiter")? + delimiter.len();
    let closing = format!("\r\n{delimiter}");
    let mut parts = Vec::new();
    loop {
        if body[at..].starts_with(b"--") {
            return Ok(parts);
        }
        if !body[at..].starts_with(b"\r\n") {
            return Err("a delimiter not followed by CRLF".to_owned());
        }
        at += 2;
        let head_end = find(at, b"\r\n\r\n").ok_or("a part without the end of its headers")?;
        let head = String::from_utf8_lossy(&body[at..head_end]).into_owned();
        let end = find(head_end + 4, closing.as_bytes()).ok_or("a part without its delimiter")?;
        let disposition = head
            .split("\r\n")
            .find(|l| l.to_ascii_lowercase().starts_with("content-disposition:"))
            .ok_or("a part without Content-Disposition")?;
        let param = |key: &str| {
            disposition.split(';').find_map(|p| {
                let (k, v) = p.split_once('=')?;
                (k.trim() == key).then(|| v.trim().trim_matches('"').to_owned())
            })
        };
        parts.push(Part {
            name: param("name").ok_or("a part without a name")?,
            filename: param("filename"),
            data: body.slice(head_end + 4..end),
        });
        at = end + closing.len();
    }
}

/// FNV-1a, as hex: a digest a test can compute for the bytes it sent.
pub fn digest(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

fn bad(message: &str, param: Option<&str>) -> HttpResponse {
    HttpResponse::BadRequest().json(json!({"error": {"message": message, "type": "invalid_request_error", "param": param, "code": null}}))
}

fn not_found(what: &str) -> HttpResponse {
    HttpResponse::NotFound().json(json!({"error": {"message": format!("No such {what}"), "type": "invalid_request_error", "param": "id", "code": null}}))
}

fn form(req: &HttpRequest, body: &Bytes) -> Result<HashMap<String, Part>, HttpResponse> {
    let ct = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let parts = parse_multipart(ct, body).map_err(|e| bad(&format!("mock: {e}"), None))?;
    Ok(parts.into_iter().map(|p| (p.name.clone(), p)).collect())
}

fn text(part: Option<&Part>) -> Option<String> {
    part.map(|p| String::from_utf8_lossy(&p.data).into_owned())
}

/// Transcriptions and translations.
pub(crate) async fn audio(state: Arc<MockState>, req: HttpRequest, body: Bytes) -> HttpResponse {
    if let Err(r) = crate::server::apply_fault(&state).await {
        return r;
    }
    let fields = match form(&req, &body) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let Some(model) = text(fields.get("model")) else {
        return bad("you must provide a model parameter", Some("model"));
    };
    let Some(file) = fields.get("file").filter(|f| f.filename.is_some()) else {
        return bad("you must provide a file", Some("file"));
    };
    let said = format!(
        "mock transcript by {model} of {} ({} bytes, digest {})",
        file.filename.as_deref().unwrap_or(""),
        file.data.len(),
        digest(&file.data)
    );
    let format = text(fields.get("response_format")).unwrap_or_else(|| "json".to_owned());
    match format.as_str() {
        "json" => HttpResponse::Ok().json(json!({"text": said, "usage": {"type": "duration", "seconds": 3}})),
        "verbose_json" => HttpResponse::Ok().json(json!({"task": "transcribe", "language": text(fields.get("language")).unwrap_or_else(|| "english".into()), "duration": 3.0, "text": said, "segments": []})),
        "text" => HttpResponse::Ok().content_type("text/plain; charset=utf-8").body(format!("{said}\n")),
        "srt" => HttpResponse::Ok().content_type("text/plain; charset=utf-8").body(format!("1\n00:00:00,000 --> 00:00:03,000\n{said}\n\n")),
        "vtt" => HttpResponse::Ok().content_type("text/vtt; charset=utf-8").body(format!("WEBVTT\n\n00:00:00.000 --> 00:00:03.000\n{said}\n\n")),
        other => bad(&format!("response_format {other} is not supported"), Some("response_format")),
    }
}

/// Image edits: a 1×1 PNG per `n`, the prompt revised to name the image's size.
pub(crate) async fn image_edits(
    state: Arc<MockState>,
    req: HttpRequest,
    body: Bytes,
) -> HttpResponse {
    if let Err(r) = crate::server::apply_fault(&state).await {
        return r;
    }
    let fields = match form(&req, &body) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let Some(image) = fields.get("image").or_else(|| fields.get("image[]")) else {
        return bad("you must provide an image", Some("image"));
    };
    let prompt = text(fields.get("prompt")).unwrap_or_default();
    let b64 = base64::engine::general_purpose::STANDARD.encode(crate::endpoints::PNG);
    HttpResponse::Ok().json(
        json!({"created": 1_700_000_000u64, "data": [{"b64_json": b64,
        "revised_prompt": format!("{prompt} (edited {} bytes)", image.data.len())}]}),
    )
}

fn lock(m: &Mutex<Store>) -> std::sync::MutexGuard<'_, Store> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Everything under `/v1/files` and `/v1/batches`.
pub(crate) async fn files(state: Arc<MockState>, req: HttpRequest, body: Bytes) -> HttpResponse {
    if let Err(r) = crate::server::apply_fault(&state).await {
        return r;
    }
    let path = req.path().trim_start_matches("/v1/").to_owned();
    let segments: Vec<&str> = path.split('/').collect();
    let method = req.method().as_str().to_owned();
    let mut store = lock(&state.store);
    match (method.as_str(), segments.as_slice()) {
        ("POST", ["files"]) => {
            let fields = match form(&req, &body) {
                Ok(f) => f,
                Err(r) => return r,
            };
            let Some(file) = fields.get("file") else {
                return bad("you must provide a file", Some("file"));
            };
            store.next += 1;
            let object = json!({"id": format!("file-mock{}", store.next), "object": "file",
                "bytes": file.data.len(), "created_at": 1_700_000_000u64,
                "filename": file.filename.clone().unwrap_or_default(),
                "purpose": text(fields.get("purpose")).unwrap_or_default(), "status": "processed"});
            store.files.push((object.clone(), file.data.clone()));
            HttpResponse::Ok().json(object)
        }
        ("GET", ["files"]) => {
            let data: Vec<&Value> = store.files.iter().map(|(o, _)| o).collect();
            HttpResponse::Ok().json(json!({"object": "list", "data": data, "has_more": false}))
        }
        (m, ["files", id, rest @ ..]) => {
            let Some(at) = store.files.iter().position(|(o, _)| o["id"] == *id) else {
                return not_found("file");
            };
            match (m, rest) {
                ("GET", []) => HttpResponse::Ok().json(&store.files[at].0),
                ("GET", ["content"]) => HttpResponse::Ok()
                    .content_type("application/octet-stream")
                    .body(store.files[at].1.clone()),
                ("DELETE", []) => {
                    store.files.remove(at);
                    HttpResponse::Ok().json(json!({"id": id, "object": "file", "deleted": true}))
                }
                _ => not_found("route"),
            }
        }
        ("POST", ["batches"]) => {
            let Ok(req) = serde_json::from_slice::<Value>(&body) else {
                return bad("mock: body is not JSON", None);
            };
            let Some(input) = req["input_file_id"].as_str() else {
                return bad("input_file_id is required", Some("input_file_id"));
            };
            if !store.files.iter().any(|(o, _)| o["id"] == input) {
                return bad("the input file does not exist", Some("input_file_id"));
            }
            store.next += 1;
            let batch = json!({"id": format!("batch_mock{}", store.next), "object": "batch",
                "endpoint": req["endpoint"], "errors": null, "input_file_id": input,
                "completion_window": req["completion_window"], "status": "validating",
                "output_file_id": null, "error_file_id": null, "created_at": 1_700_000_000u64,
                "request_counts": {"total": 0, "completed": 0, "failed": 0},
                "metadata": req.get("metadata").cloned().unwrap_or(Value::Null)});
            store.batches.push(batch.clone());
            HttpResponse::Ok().json(batch)
        }
        ("GET", ["batches"]) => HttpResponse::Ok()
            .json(json!({"object": "list", "data": store.batches, "has_more": false})),
        (m, ["batches", id, rest @ ..]) => {
            let Some(batch) = store.batches.iter_mut().find(|b| b["id"] == *id) else {
                return not_found("batch");
            };
            match (m, rest) {
                ("GET", []) => HttpResponse::Ok().json(&*batch),
                ("POST", ["cancel"]) => {
                    batch["status"] = json!("cancelling");
                    HttpResponse::Ok().json(&*batch)
                }
                _ => not_found("route"),
            }
        }
        _ => not_found("route"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multipart_bodies_are_parsed() {
        let body = Bytes::from_static(b"--b\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\nContent-Type: audio/wav\r\n\r\nRIFF\r\n-b\r\n--b--\r\n");
        let parts = parse_multipart("multipart/form-data; boundary=b", &body).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(&parts[0].data[..], b"whisper-1");
        assert_eq!(parts[1].filename.as_deref(), Some("a.wav"));
        assert_eq!(&parts[1].data[..], b"RIFF\r\n-b");
        assert!(
            parse_multipart(
                "multipart/form-data; boundary=b",
                &Bytes::from_static(b"--b\r\nx")
            )
            .is_err()
        );
    }
}
