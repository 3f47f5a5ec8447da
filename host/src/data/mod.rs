//! Input data, read as streams where they can be large: passage corpora and QA datasets.

pub mod articles;
pub mod corpus;
pub mod qa;
pub mod text_file;
