//! `host serve` over loopback: the reference response shapes, 4xx answers to bad input, a
//! bounded load test, and the shipped http-search plugin against it (both APIs, and refused
//! without its network capability).

use crate::common;

use common::{tiny_embedder, write_test_corpus};
use research_host::plugins::Passage;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

/// The index every test serves: built once per test binary.
struct Fixture {
    corpus: PathBuf,
    index: PathBuf,
    _dir: tempfile::TempDir,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let corpus = write_test_corpus(dir.path(), "corpus.jsonl", 200);
        let index = dir.path().join("index");
        let build = Command::new(env!("CARGO_BIN_EXE_host"))
            .args(["index", "build", "--quiet"])
            .arg("--corpus")
            .arg(&corpus)
            .arg("--embedder")
            .arg(tiny_embedder(0))
            .arg("--out")
            .arg(&index)
            .output()
            .unwrap();
        assert!(
            build.status.success(),
            "{}",
            String::from_utf8_lossy(&build.stderr)
        );
        Fixture {
            corpus,
            index,
            _dir: dir,
        }
    })
}

/// A `host serve` process of one test; killed when dropped.
struct Server {
    address: String,
    child: Child,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve() -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_host"))
        .args([
            "serve",
            "--addr",
            "127.0.0.1:0",
            "--max-top-k",
            "50",
            "--index",
        ])
        .arg(&fixture().index)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let address = line
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_string();
    Server { address, child }
}

impl Server {
    /// One HTTP/1.1 request; returns the status and the body.
    fn request(&self, method: &str, path: &str, body: &[u8]) -> (u16, String) {
        let mut stream = TcpStream::connect(&self.address).unwrap();
        write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        self.address,
        body.len()
    )
    .unwrap();
        // The body goes out from a second thread while this one reads: a server may answer
        // (413) and close before a large body is through, and the writer then just stops.
        let mut writer = stream.try_clone().unwrap();
        let body = body.to_vec();
        let sending = std::thread::spawn(move || match writer.write_all(&body) {
            Ok(()) => Ok(()),
            Err(e) if matches!(e.kind(), ErrorKind::BrokenPipe | ErrorKind::ConnectionReset) => {
                Ok(())
            }
            Err(e) => Err(e),
        });
        let mut response = Vec::new();
        stream.read_to_end(&mut response).unwrap();
        sending.join().unwrap().unwrap();
        let text = String::from_utf8_lossy(&response).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad response {text:?}"));
        let body = if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            dechunk(body)
        } else {
            body.to_string()
        };
        (status, body)
    }
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
    out
}

impl Server {
    /// POSTs JSON; the reply parsed as JSON (or as a string when it is not).
    fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let (status, text) = self.request("POST", path, body.to_string().as_bytes());
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }
}

/// (id, contents) of corpus line `i`.
fn passage(i: usize) -> (String, String) {
    let text = std::fs::read_to_string(&fixture().corpus).unwrap();
    let record = research_host::data::corpus::parse_record(text.lines().nth(i).unwrap()).unwrap();
    (record.id.clone(), record.contents())
}

#[test]
fn search_r1_retrieve_with_and_without_scores() {
    let server = serve();
    let (id, contents) = passage(3);
    let (status, body) = server.post(
        "/retrieve",
        json!({"queries": [contents, passage(4).1], "topk": 3, "return_scores": true}),
    );
    assert_eq!(status, 200, "{body}");
    let result = body["result"].as_array().unwrap();
    assert_eq!(result.len(), 2);
    let first = result[0].as_array().unwrap();
    assert_eq!(first.len(), 3);
    assert_eq!(first[0]["document"]["id"], json!(id));
    assert_eq!(first[0]["document"]["contents"], json!(contents));
    assert!(first[0]["score"].as_f64().unwrap() > 0.9999);
    assert_eq!(result[1][0]["document"]["id"], json!(passage(4).0));

    let (status, body) = server.post("/retrieve", json!({"queries": [contents]}));
    assert_eq!(status, 200);
    let plain = body["result"][0].as_array().unwrap();
    assert_eq!(plain.len(), 3, "topk defaults to 3");
    assert_eq!(plain[0], json!({"id": id, "contents": contents}));
}

#[test]
fn research_search_and_batch_search_shapes() {
    let server = serve();
    let (id, contents) = passage(7);
    let (status, body) = server.post("/search", json!({"query": contents, "top_n": 4}));
    assert_eq!(status, 200, "{body}");
    let hits = body.as_array().unwrap();
    assert_eq!(hits.len(), 4);
    assert_eq!(hits[0], json!({"id": id, "contents": contents}));

    let (_, body) = server.post("/search", json!({"query": contents, "return_score": true}));
    assert_eq!(body.as_array().unwrap().len(), 10, "top_n defaults to 10");
    assert!(body[0]["score"].as_f64().unwrap() > 0.9999);

    let (status, body) = server.post(
        "/batch_search",
        json!({"query": [contents, passage(8).1, passage(9).1]}),
    );
    assert_eq!(status, 200);
    let lists = body.as_array().unwrap();
    assert_eq!(lists.len(), 3);
    assert!(
        lists.iter().all(|l| l.as_array().unwrap().len() == 5),
        "top_n defaults to 5"
    );
    assert_eq!(lists[2][0]["id"], json!(passage(9).0));

    let (status, body) = server.request("GET", "/health", b"");
    assert_eq!(status, 200);
    let health: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["passages"], 200);
}

#[test]
fn bad_requests_get_a_4xx_with_a_message_and_the_server_keeps_serving() {
    let server = serve();
    let cases: Vec<(&str, &str, Vec<u8>, u16, &str)> = vec![
        ("POST", "/retrieve", b"{not json".to_vec(), 400, "malformed"),
        ("POST", "/retrieve", b"".to_vec(), 400, "malformed"),
        (
            "POST",
            "/retrieve",
            br#"{"queries": "one"}"#.to_vec(),
            400,
            "malformed",
        ),
        (
            "POST",
            "/retrieve",
            br#"{"topk": 3}"#.to_vec(),
            400,
            "queries",
        ),
        (
            "POST",
            "/retrieve",
            br#"{"queries": ["a", " "]}"#.to_vec(),
            400,
            "query 1 is empty",
        ),
        (
            "POST",
            "/retrieve",
            br#"{"queries": ["a"], "topk": 0}"#.to_vec(),
            400,
            "at least 1",
        ),
        (
            "POST",
            "/retrieve",
            br#"{"queries": ["a"], "topk": 1000000}"#.to_vec(),
            400,
            "exceeds",
        ),
        (
            "POST",
            "/retrieve",
            br#"{"queries": ["a"], "topk": -1}"#.to_vec(),
            400,
            "malformed",
        ),
        (
            "POST",
            "/search",
            br#"{"query": ""}"#.to_vec(),
            400,
            "query is empty",
        ),
        (
            "POST",
            "/search",
            br#"{"query": "a", "top_n": 51}"#.to_vec(),
            400,
            "exceeds",
        ),
        (
            "POST",
            "/batch_search",
            br#"{"query": [""]}"#.to_vec(),
            400,
            "empty",
        ),
        ("POST", "/nowhere", b"{}".to_vec(), 404, "no such endpoint"),
        ("GET", "/retrieve", b"".to_vec(), 405, ""),
    ];
    for (method, path, body, expected, message) in cases {
        let (status, text) = server.request(method, path, &body);
        assert_eq!(
            status,
            expected,
            "{method} {path} {}: {text}",
            String::from_utf8_lossy(&body)
        );
        assert!(text.contains(message), "{path}: {text}");
        if expected != 405 {
            let error: Value = serde_json::from_str(&text).unwrap();
            assert!(error["error"].is_string(), "{text}");
        }
    }
    let huge = format!(r#"{{"queries": ["{}"]}}"#, "a".repeat(5 << 20));
    let (status, _) = server.request("POST", "/retrieve", huge.as_bytes());
    assert_eq!(status, 413);
    let too_many = json!({"queries": vec!["x"; 600]});
    assert_eq!(server.post("/retrieve", too_many).0, 413);
    let (status, body) = server.post("/retrieve", json!({"queries": []}));
    assert_eq!((status, body), (200, json!({"result": []})));
    assert_eq!(
        server.request("GET", "/health", b"").0,
        200,
        "still serving"
    );
}

#[test]
fn eight_concurrent_clients_times_200_requests_without_an_error() {
    let server = serve();
    let probes: Vec<(String, String)> = (0..16).map(passage).collect();
    let errors: usize = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..8)
            .map(|client| {
                let (probes, server) = (&probes, &server);
                scope.spawn(move || {
                    let mut errors = 0;
                    for i in 0..200 {
                        let (id, contents) = &probes[(client * 7 + i) % probes.len()];
                        let (status, body) =
                            server.post("/retrieve", json!({"queries": [contents], "topk": 2}));
                        if status != 200 || body["result"][0][0]["id"] != json!(id) {
                            errors += 1;
                        }
                    }
                    errors
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).sum()
    });
    assert_eq!(errors, 0);
    let (_, body) = server.request("GET", "/health", b"");
    let health: Value = serde_json::from_str(&body).unwrap();
    let (queries, batches) = (
        health["queries_served"].as_u64().unwrap(),
        health["batches_served"].as_u64().unwrap(),
    );
    assert!(queries >= 1600, "{health}");
    assert!(
        batches < queries,
        "concurrent requests share embedding passes: {health}"
    );
}

#[test]
fn http_search_plugin_reaches_host_serve_with_both_apis_and_only_with_its_grant() {
    let server = serve();
    let address = &server.address;
    let (id, contents) = passage(11);
    let mut answers: Vec<Vec<Passage>> = Vec::new();
    for api in ["searchr1", "research"] {
        let manifest = format!(
            "[capabilities]\nnetwork = [\"{address}\"]\n[config]\nurl = \"http://{address}\"\napi = \"{api}\""
        );
        let plugin = common::load_http_search(&manifest).unwrap();
        let results = plugin.search(std::slice::from_ref(&contents), 3).unwrap();
        assert_eq!(results.len(), 1);
        assert_eq!(results[0].len(), 3);
        assert_eq!(results[0][0].id, id, "{api}");
        answers.push(results.into_iter().next().unwrap());
    }
    let ids = |list: &[Passage]| list.iter().map(|p| p.id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&answers[0]), ids(&answers[1]), "both APIs rank alike");
    assert_eq!(answers[0][0].title, answers[1][0].title);

    let error = common::load_http_search(&format!("[config]\nurl = \"http://{address}\""))
        .err()
        .expect("no network capability, no plugin");
    assert!(error.contains("no network capability"), "{error}");
}
