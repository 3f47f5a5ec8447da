//! Search over an index: queries are embedded with the index's own embedder, then matched
//! exactly (a scan of every vector, best for small indexes) or approximately (arroy's forest,
//! for large ones). The host's `retriever` interface for search plugins uses this same code.

use super::embedder::{Embedder, Embeddings, SettingsOverrides};
use super::index::{Index, IndexMeta};
use super::scan::QuantizedScan;
use crate::plugins::Passage;
use crate::plugins::retriever::Retriever;
use anyhow::{Context, Result, bail};
use candle_core::{Device, Tensor};
use std::num::NonZeroUsize;
use std::path::Path;

/// How vectors are matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SearchMode {
    /// `scan` up to `--exact-limit` passages, ANN above.
    #[default]
    Auto,
    /// Compare the query with every f32 vector (one matrix product): the ground truth.
    Exact,
    /// Compare the query with every vector's sign bits (Hamming distance), the nearest rows'
    /// int8 codes, then re-rank the best candidates with their f32 vectors (exact scores).
    Scan,
    /// arroy's random-projection forest.
    Ann,
}

/// Largest index searched exactly in `auto` mode.
pub const DEFAULT_EXACT_LIMIT: u64 = 100_000;

/// Search settings.
#[derive(Debug, Clone, clap::Args)]
pub struct SearchOptions {
    /// exact, scan (sign bits, int8 codes, exact re-rank), ann, or auto (scan up to --exact-limit passages).
    #[arg(long, value_enum, default_value_t = SearchMode::Auto)]
    pub mode: SearchMode,
    /// Largest index that `auto` scans in full.
    #[arg(long, default_value_t = DEFAULT_EXACT_LIMIT, value_name = "PASSAGES")]
    pub exact_limit: u64,
    /// ANN nodes inspected per query [default: arroy's, top-k × trees]; higher is more
    /// accurate and slower.
    #[arg(long, value_name = "NODES")]
    pub search_k: Option<NonZeroUsize>,
    /// Use this embedder folder instead of the one recorded in the index (it must be the same
    /// model with the same settings; this is checked).
    #[arg(long, value_name = "DIR")]
    pub embedder: Option<std::path::PathBuf>,
}

impl Default for SearchOptions {
    fn default() -> Self {
        SearchOptions {
            mode: SearchMode::Auto,
            exact_limit: DEFAULT_EXACT_LIMIT,
            search_k: None,
            embedder: None,
        }
    }
}

/// One result.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Hit {
    /// Corpus id.
    pub id: String,
    pub title: String,
    pub text: String,
    /// Cosine similarity to the query.
    pub score: f32,
}

impl Hit {
    /// The passage in FlashRAG `contents` form.
    pub fn contents(&self) -> String {
        crate::data::corpus::join_contents(&self.title, &self.text)
    }
}

/// Vectors held in memory for exact search.
struct Flat {
    keys: Vec<u32>,
    /// `[passages, dims]`.
    matrix: Tensor,
}

enum Strategy {
    Exact(Flat),
    Scan(QuantizedScan),
    Ann { search_k: Option<NonZeroUsize> },
}

/// An index opened for search, with its embedder.
pub struct Searcher {
    index: Index,
    embedder: Embedder,
    strategy: Strategy,
}

impl Searcher {
    /// Opens the index in `dir`, loads its embedder and checks it is the one the index was
    /// built with.
    pub fn open(dir: &Path, options: &SearchOptions) -> Result<Searcher> {
        let index = Index::open(dir)?;
        let meta = index.require_complete()?;
        let embedder = load_index_embedder(&meta, options.embedder.as_deref())?;
        index.check_embedder(embedder.identity())?;
        Searcher::with_embedder(index, embedder, options)
    }

    /// Wraps an open, complete index and its (checked) embedder.
    pub fn with_embedder(
        index: Index,
        embedder: Embedder,
        options: &SearchOptions,
    ) -> Result<Searcher> {
        let meta = index.require_complete()?;
        index.check_embedder(embedder.identity())?;
        let mode = match options.mode {
            SearchMode::Auto if meta.passages <= options.exact_limit => SearchMode::Scan,
            SearchMode::Auto => SearchMode::Ann,
            mode => mode,
        };
        let strategy = match mode {
            SearchMode::Exact => {
                let (keys, vectors) = index.all_vectors()?;
                let rows = keys.len();
                let matrix = Tensor::from_vec(vectors.data, (rows, vectors.dims), &Device::Cpu)?;
                Strategy::Exact(Flat { keys, matrix })
            }
            SearchMode::Scan => {
                let (keys, vectors) = index.all_vectors()?;
                Strategy::Scan(QuantizedScan::new(keys, vectors))
            }
            SearchMode::Ann | SearchMode::Auto => Strategy::Ann {
                search_k: options.search_k,
            },
        };
        Ok(Searcher {
            index,
            embedder,
            strategy,
        })
    }

    /// The embedder queries go through.
    pub fn embedder(&self) -> &Embedder {
        &self.embedder
    }

    /// The index.
    pub fn index(&self) -> &Index {
        &self.index
    }

    /// `exact`, `scan` or `ann`.
    pub fn mode_name(&self) -> &'static str {
        match self.strategy {
            Strategy::Exact(_) => "exact",
            Strategy::Scan(_) => "scan",
            Strategy::Ann { .. } => "ann",
        }
    }

    /// The `k` best passages for each query, best first.
    pub fn search<S: AsRef<str>>(&self, queries: &[S], k: usize) -> Result<Vec<Vec<Hit>>> {
        for (i, query) in queries.iter().enumerate() {
            if query.as_ref().trim().is_empty() {
                bail!("query {} is empty", i + 1);
            }
        }
        if queries.is_empty() || k == 0 {
            return Ok(vec![Vec::new(); queries.len()]);
        }
        let vectors = self.embedder.embed_queries(queries)?;
        let matches = self.search_vectors(&vectors, k)?;
        self.resolve(matches)
    }

    /// Turns (internal key, score) matches into hits with their passages.
    pub fn resolve(&self, matches: Vec<Vec<(u32, f32)>>) -> Result<Vec<Vec<Hit>>> {
        let rtxn = self.index.read_txn()?;
        matches
            .into_iter()
            .map(|row| {
                row.into_iter()
                    .map(|(key, score)| {
                        let passage = self.index.passage(&rtxn, key)?;
                        Ok(Hit {
                            id: passage.id,
                            title: passage.title,
                            text: passage.text,
                            score,
                        })
                    })
                    .collect()
            })
            .collect()
    }

    /// The `k` nearest stored vectors (internal key, cosine) of each query vector.
    pub fn search_vectors(&self, queries: &Embeddings, k: usize) -> Result<Vec<Vec<(u32, f32)>>> {
        match &self.strategy {
            Strategy::Exact(flat) => exact_top_k(flat, queries, k),
            Strategy::Scan(scan) => {
                if queries.dims != scan.dims() {
                    anyhow::bail!(
                        "the queries have {} dimensions but the index holds {}-dimensional vectors",
                        queries.dims,
                        scan.dims()
                    );
                }
                Ok(scan.search(queries, k))
            }
            Strategy::Ann { search_k } => {
                let rtxn = self.index.read_txn()?;
                let reader = self.index.reader(&rtxn)?;
                (0..queries.len())
                    .map(|i| {
                        let mut query = reader.nns(k);
                        if let Some(search_k) = search_k {
                            query.search_k(*search_k);
                        }
                        let found = query.by_vector(&rtxn, queries.row(i))?;
                        // arroy's cosine distance is (1 - cos) / 2.
                        Ok(found
                            .into_iter()
                            .map(|(key, distance)| (key, 1.0 - 2.0 * distance))
                            .collect())
                    })
                    .collect()
            }
        }
    }
}

/// Loads the embedder an index was built with (from `override_dir` or the recorded path),
/// with the recorded settings.
pub fn load_index_embedder(meta: &IndexMeta, override_dir: Option<&Path>) -> Result<Embedder> {
    let dir = override_dir.unwrap_or(&meta.embedder_path);
    let settings = &meta.embedder.settings;
    let overrides = SettingsOverrides {
        pooling: Some(settings.pooling),
        query_prefix: Some(settings.query_prefix.clone()),
        passage_prefix: Some(settings.passage_prefix.clone()),
        max_length: Some(settings.max_length),
    };
    Embedder::load(dir, &overrides, &Device::Cpu).with_context(|| {
        format!(
            "cannot load the index's embedder from {} (pass --embedder DIR if it moved)",
            dir.display()
        )
    })
}

/// Scores every stored vector against each query (one matrix product) and keeps the best `k`.
fn exact_top_k(flat: &Flat, queries: &Embeddings, k: usize) -> Result<Vec<Vec<(u32, f32)>>> {
    let rows = queries.len();
    if flat.keys.is_empty() {
        return Ok(vec![Vec::new(); rows]);
    }
    let query = Tensor::from_slice(&queries.data, (rows, queries.dims), &Device::Cpu)?;
    let scores = query.matmul(&flat.matrix.t()?)?.to_vec2::<f32>()?;
    Ok(scores
        .into_iter()
        .map(|row| {
            let mut order: Vec<usize> = (0..row.len()).collect();
            let keep = k.min(order.len());
            let by_score = |a: &usize, b: &usize| row[*b].total_cmp(&row[*a]).then(a.cmp(b));
            if keep < order.len() {
                order.select_nth_unstable_by(keep, by_score);
                order.truncate(keep);
            }
            order.sort_by(by_score);
            order.into_iter().map(|i| (flat.keys[i], row[i])).collect()
        })
        .collect())
}

impl Retriever for Searcher {
    fn retrieve(&self, queries: &[String], top_k: usize) -> Result<Vec<Vec<Passage>>> {
        Ok(self
            .search(queries, top_k)?
            .into_iter()
            .map(|hits| {
                hits.into_iter()
                    .map(|hit| Passage {
                        id: hit.id,
                        title: hit.title,
                        text: hit.text,
                        score: hit.score,
                    })
                    .collect()
            })
            .collect())
    }
}
