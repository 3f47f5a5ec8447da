//! Input data: passage corpora (and, later, QA datasets), read as streams.

pub mod corpus;
