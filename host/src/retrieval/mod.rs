//! Dense retrieval: a BERT-family embedder, an on-disk index (passages and arroy vectors in
//! one LMDB environment), search, and the HTTP server that speaks Search-R1's and ReSearch's APIs.

pub mod bert;
pub mod embedder;
pub mod index;
pub mod ingest;
pub mod scan;
pub mod search;
pub mod server;
pub mod tiny;
