//! JSON over `wasi:http` for network plugins. A plugin that uses it needs the `network`
//! capability for the server's `host:port` in its `plugin.toml`.

use std::io::{Read, Write};
use wasi::http::outgoing_handler;
use wasi::http::types::{Fields, Method, OutgoingBody, OutgoingRequest, RequestOptions, Scheme};

/// POSTs `body` as JSON to `base` + `path` (with extra `headers`) and parses the JSON reply.
/// Errors name the URL and, for a non-2xx status, show the start of the reply.
pub fn post_json<T: serde::de::DeserializeOwned>(
    base: &str,
    path: &str,
    body: &serde_json::Value,
    headers: &[(&str, &str)],
    timeout_ms: u64,
) -> Result<T, String> {
    let (scheme, rest) = if let Some(rest) = base.strip_prefix("http://") {
        (Scheme::Http, rest)
    } else if let Some(rest) = base.strip_prefix("https://") {
        (Scheme::Https, rest)
    } else {
        return Err(format!(
            "config `url` must start with http:// or https://, not `{base}`"
        ));
    };
    let (authority, prefix) = match rest.split_once('/') {
        Some((authority, prefix)) => (authority, format!("/{}", prefix.trim_end_matches('/'))),
        None => (rest, String::new()),
    };
    let full_path = format!("{}{path}", prefix.trim_end_matches('/'));
    let payload = serde_json::to_vec(body).map_err(|e| e.to_string())?;

    let mut fields = vec![
        ("content-type".to_string(), b"application/json".to_vec()),
        (
            "content-length".to_string(),
            payload.len().to_string().into_bytes(),
        ),
    ];
    fields.extend(
        headers
            .iter()
            .map(|(name, value)| (name.to_ascii_lowercase(), value.as_bytes().to_vec())),
    );
    let headers = Fields::from_list(&fields).map_err(|e| format!("bad request headers: {e:?}"))?;
    let request = OutgoingRequest::new(headers);
    let invalid = |what: &str| format!("invalid {what} in `{base}{path}`");
    request
        .set_method(&Method::Post)
        .map_err(|_| invalid("method"))?;
    request
        .set_scheme(Some(&scheme))
        .map_err(|_| invalid("scheme"))?;
    request
        .set_authority(Some(authority))
        .map_err(|_| invalid("authority"))?;
    request
        .set_path_with_query(Some(&full_path))
        .map_err(|_| invalid("path"))?;
    let outgoing_body = request
        .body()
        .map_err(|_| "request body already taken".to_string())?;
    {
        let mut stream = outgoing_body
            .write()
            .map_err(|_| "request body stream unavailable".to_string())?;
        stream
            .write_all(&payload)
            .map_err(|e| format!("writing the request: {e}"))?;
        stream
            .flush()
            .map_err(|e| format!("writing the request: {e}"))?;
    }
    OutgoingBody::finish(outgoing_body, None)
        .map_err(|e| format!("finishing the request: {e:?}"))?;

    let options = RequestOptions::new();
    let timeout_ns = timeout_ms.saturating_mul(1_000_000);
    // A host may not support timeouts; the request then runs without one.
    let _ = options.set_connect_timeout(Some(timeout_ns));
    let _ = options.set_first_byte_timeout(Some(timeout_ns));
    let future = outgoing_handler::handle(request, Some(options))
        .map_err(|e| format!("POST {base}{path} refused: {e:?}"))?;
    future.subscribe().block();
    let response = future
        .get()
        .ok_or("the response never arrived")?
        .map_err(|_| "the response was already taken".to_string())?
        .map_err(|e| format!("POST {base}{path} failed: {e:?}"))?;
    let status = response.status();
    let incoming = response
        .consume()
        .map_err(|_| "response body unavailable".to_string())?;
    let mut bytes = Vec::new();
    {
        let mut stream = incoming
            .stream()
            .map_err(|_| "response stream unavailable".to_string())?;
        stream
            .read_to_end(&mut bytes)
            .map_err(|e| format!("reading the response: {e}"))?;
    }
    if !(200..300).contains(&status) {
        let text = String::from_utf8_lossy(&bytes);
        return Err(format!(
            "POST {base}{path} answered {status}: {}",
            text.chars().take(300).collect::<String>()
        ));
    }
    serde_json::from_slice(&bytes).map_err(|e| format!("POST {base}{path}: unexpected reply ({e})"))
}
