//! `http-search`: outgoing HTTP only with a network grant, only to the granted authorities, and
//! both server API shapes (Search-R1 `/retrieve`, ReSearch `/batch_search`) against a loopback
//! responder.

use crate::common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

/// A one-request HTTP server on loopback: records the request, sends `status` and `body`.
fn serve_once(status: u16, body: &'static str) -> (SocketAddr, mpsc::Receiver<(String, String)>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().expect("address");
    let (sender, receiver) = mpsc::channel();
    thread::spawn(move || {
        let Ok((stream, _)) = listener.accept() else {
            return;
        };
        stream.set_read_timeout(Some(Duration::from_secs(10))).ok();
        let mut reader = BufReader::new(stream);
        let mut request_line = String::new();
        reader.read_line(&mut request_line).ok();
        let mut length = 0usize;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 || header == "\r\n" {
                break;
            }
            if let Some(value) = header.to_ascii_lowercase().strip_prefix("content-length:") {
                length = value.trim().parse().unwrap_or(0);
            }
        }
        let mut payload = vec![0u8; length];
        reader.read_exact(&mut payload).ok();
        let _ = sender.send((
            request_line.trim().to_string(),
            String::from_utf8_lossy(&payload).into_owned(),
        ));
        let mut stream = reader.into_inner();
        let reply = format!(
            "HTTP/1.1 {status} OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(reply.as_bytes()).ok();
    });
    (address, receiver)
}

#[test]
fn without_a_network_grant_the_plugin_is_refused_at_load_time() {
    let error = common::load_http_search("[config]\nurl = \"http://127.0.0.1:8000\"")
        .err()
        .expect("must be refused");
    assert!(error.contains("http-search-test"), "{error}");
    assert!(
        error.contains("wasi:http") && error.contains("no network capability"),
        "{error}"
    );
}

#[test]
fn searchr1_api_round_trip() {
    let (address, requests) = serve_once(
        200,
        r#"{"result": [[{"document": {"id": "12", "contents": "\"Paris\"\nParis is the capital of France."}, "score": 0.91},
                        {"document": {"id": 13, "contents": "no title line"}, "score": 0.5}],
                       []]}"#,
    );
    let plugin = common::load_http_search(&format!(
        "[capabilities]\nnetwork = [\"{address}\"]\n[config]\nurl = \"http://{address}\"\napi = \"searchr1\""
    ))
    .expect("loads with a grant");
    let results = plugin
        .search(&["capital of France".into(), "nothing".into()], 3)
        .expect("search succeeds");
    let (request_line, body) = requests
        .recv_timeout(Duration::from_secs(5))
        .expect("request seen");
    assert!(
        request_line.starts_with("POST /retrieve "),
        "{request_line}"
    );
    let body: serde_json::Value = serde_json::from_str(&body).expect("JSON body");
    assert_eq!(
        body,
        serde_json::json!({"queries": ["capital of France", "nothing"], "topk": 3, "return_scores": true})
    );
    assert_eq!(results.len(), 2);
    assert_eq!(results[0][0].id, "12");
    assert_eq!(results[0][0].title, "Paris");
    assert_eq!(results[0][0].text, "Paris is the capital of France.");
    assert!((results[0][0].score - 0.91).abs() < 1e-6);
    assert_eq!(results[0][1].id, "13");
    assert_eq!(results[0][1].title, "");
    assert!(results[1].is_empty());
}

#[test]
fn research_api_round_trip() {
    let (address, requests) = serve_once(
        200,
        r#"[[{"id": "1", "contents": "\"Lyon\"\nLyon is a city."}, {"id": "2", "contents": "\"Nice\"\nNice is nice."}]]"#,
    );
    let plugin = common::load_http_search(&format!(
        "[capabilities]\nnetwork = [\"127.0.0.1:*\"]\n[config]\nurl = \"http://{address}/\"\napi = \"research\""
    ))
    .expect("loads with a grant");
    let results = plugin
        .search(&["cities".into()], 5)
        .expect("search succeeds");
    let (request_line, body) = requests
        .recv_timeout(Duration::from_secs(5))
        .expect("request seen");
    assert!(
        request_line.starts_with("POST /batch_search "),
        "{request_line}"
    );
    let body: serde_json::Value = serde_json::from_str(&body).expect("JSON body");
    assert_eq!(body, serde_json::json!({"query": ["cities"], "top_n": 5}));
    let ids: Vec<&str> = results[0].iter().map(|p| p.id.as_str()).collect();
    assert_eq!(ids, ["1", "2"]);
    assert!(
        results[0][0].score > results[0][1].score,
        "rank order becomes descending scores"
    );
}

#[test]
fn a_request_outside_the_grant_is_denied() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let address = listener.local_addr().expect("address");
    let plugin = common::load_http_search(&format!(
        "[capabilities]\nnetwork = [\"127.0.0.1:1\"]\n[config]\nurl = \"http://{address}\""
    ))
    .expect("loads with a (different) grant");
    let error = plugin.search(&["q".into()], 3).unwrap_err().to_string();
    assert!(error.contains("HttpRequestDenied"), "{error}");
    assert!(
        matches!(listener.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the request reached a server it was not granted"
    );
}

#[test]
fn a_server_error_is_reported_with_its_status() {
    let (address, _requests) = serve_once(500, r#"{"detail": "index not loaded"}"#);
    let plugin = common::load_http_search(&format!(
        "[capabilities]\nnetwork = [\"{address}\"]\n[config]\nurl = \"http://{address}\""
    ))
    .expect("loads");
    let error = plugin.search(&["q".into()], 3).unwrap_err().to_string();
    assert!(
        error.contains("answered 500") && error.contains("index not loaded"),
        "{error}"
    );
}

#[test]
fn a_server_that_never_answers_is_cut_at_the_plugins_deadline() {
    // The server takes the request and keeps the connection open without a reply; the
    // plugin's own HTTP timeout (60 s) is far away, its deadline (500 ms) is not.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().expect("address");
    thread::spawn(move || {
        if let Ok((stream, _)) = listener.accept() {
            thread::sleep(Duration::from_secs(30));
            drop(stream);
        }
    });
    let plugin = common::load_http_search(&format!(
        "[limits]\ntimeout-ms = 500\n[capabilities]\nnetwork = [\"{address}\"]\n\
         [config]\nurl = \"http://{address}\"\ntimeout-ms = 60000"
    ))
    .expect("loads with a grant");
    let started = std::time::Instant::now();
    let error = plugin
        .search(&["anything".into()], 3)
        .expect_err("no answer within the deadline");
    assert!(
        started.elapsed() < Duration::from_millis(700),
        "{:?}",
        started.elapsed()
    );
    let text = error.to_string();
    assert!(
        text.contains("search.search") && text.contains("blocked in a host call"),
        "{text}"
    );
}
