//! The on-disk index: one LMDB environment (heed) holding the passages, the id map, the arroy
//! vectors (cosine) and the index metadata.
//!
//! Every change is a write transaction, so a process killed at any moment leaves the state of
//! the last commit. Passages are added in batches, each committed together with the metadata
//! that says the index is still being built ([`IndexState::Building`] / [`IndexState::Adding`]);
//! only the transaction that builds the ANN trees marks it [`IndexState::Complete`]. An
//! incomplete index is refused for search and resumed by running the same command again.

use super::embedder::{EmbedderIdentity, Embeddings};
use crate::data::corpus::CorpusRecord;
use anyhow::{Context, Result, bail};
use arroy::distances::Cosine;
use heed::byteorder::BE;
use heed::types::{SerdeJson, Str, U32};
use heed::{CommitOrAbort, Env, EnvOpenOptions, RoTxn, WithoutTls};
use rand10::SeedableRng;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Version of the on-disk layout this host writes.
pub const FORMAT_VERSION: u32 = 1;

/// Address space reserved for the environment; the file itself grows with the data.
const MAP_SIZE: usize = 1 << 40;

/// The arroy index number inside the vectors database.
const ARROY_INDEX: u16 = 0;

/// Key of the metadata record.
const META_KEY: &str = "index";

/// Where an index stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IndexState {
    /// Built and searchable.
    Complete,
    /// A first build is in progress or was interrupted: run `host index build` again.
    Building,
    /// An incremental add is in progress or was interrupted: run `host index add` again.
    Adding,
}

/// What one build or add run read from its corpus.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceStats {
    /// The corpus file.
    pub corpus: String,
    /// Passages added by this run.
    pub added: u64,
    /// Records whose id was already in the index (earlier runs, or repeated in the file).
    pub already_present: u64,
    /// Bad records skipped (`--on-bad-record skip`).
    pub skipped: u64,
}

/// Index metadata, checked whenever the index is opened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexMeta {
    /// On-disk layout version.
    pub format: u32,
    /// The embedder every vector was made with.
    pub embedder: EmbedderIdentity,
    /// Where that embedder was loaded from (a hint; `--embedder` overrides it).
    pub embedder_path: PathBuf,
    /// Passages stored.
    pub passages: u64,
    /// Build state.
    pub state: IndexState,
    /// Trees requested for the ANN forest (`None`: arroy's choice).
    pub trees: Option<usize>,
    /// Trees in the forest as built.
    pub built_trees: usize,
    /// Seed of the tree builder.
    pub seed: u64,
    /// Finished build and add runs, oldest first.
    pub sources: Vec<SourceStats>,
    /// The run in progress (or interrupted), if any.
    pub pending: Option<SourceStats>,
    /// Seconds since the Unix epoch: creation and last change.
    pub created_unix: u64,
    pub updated_unix: u64,
}

/// A stored passage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredPassage {
    pub id: String,
    pub title: String,
    pub text: String,
}

type MetaDb = heed::Database<'static, Str, SerdeJson<IndexMeta>>;
type PassageDb = heed::Database<'static, U32<BE>, SerdeJson<StoredPassage>>;
type IdDb = heed::Database<'static, Str, U32<BE>>;
type VectorDb = arroy::Database<'static, Cosine>;

/// An open index.
pub struct Index {
    dir: PathBuf,
    env: Env<WithoutTls>,
    meta: MetaDb,
    passages: PassageDb,
    ids: IdDb,
    vectors: VectorDb,
}

/// True when `dir` holds an index (an LMDB data file).
pub fn exists(dir: &Path) -> bool {
    dir.join("data.mdb").is_file()
}

/// Environments this process has open, by folder, with the inode of their data file: LMDB
/// (and heed) allow one open per file and process, so a second `Index::open` of the same folder
/// shares the first one's environment. A folder deleted and recreated gets a fresh one.
type OpenEnvs = HashMap<PathBuf, (Env<WithoutTls>, u64)>;
static OPEN_ENVS: Mutex<Option<OpenEnvs>> = Mutex::new(None);

fn data_inode(dir: &Path) -> Option<u64> {
    std::fs::metadata(dir.join("data.mdb"))
        .ok()
        .map(|m| m.ino())
}

fn open_env(dir: &Path) -> Result<Env<WithoutTls>> {
    let canonical = dir
        .canonicalize()
        .with_context(|| format!("cannot open {}", dir.display()))?;
    let mut envs = OPEN_ENVS.lock().unwrap_or_else(|e| e.into_inner());
    let envs = envs.get_or_insert_with(HashMap::new);
    if let Some((env, inode)) = envs.get(&canonical) {
        if data_inode(&canonical) == Some(*inode) {
            return Ok(env.clone());
        }
        envs.remove(&canonical);
    }
    // SAFETY: the environment's files are only changed through LMDB (here or in another
    // process using LMDB's own locking); nothing truncates or rewrites them behind its back.
    let env = unsafe {
        EnvOpenOptions::new()
            .read_txn_without_tls()
            .map_size(MAP_SIZE)
            .max_dbs(4)
            .open(&canonical)
    }
    .with_context(|| format!("cannot open the index environment in {}", dir.display()))?;
    if let Some(inode) = data_inode(&canonical) {
        envs.insert(canonical, (env.clone(), inode));
    }
    Ok(env)
}

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Index {
    /// Creates a new, empty index in `dir` (created if missing; must not hold an index).
    pub fn create(
        dir: &Path,
        embedder: EmbedderIdentity,
        embedder_path: PathBuf,
        trees: Option<usize>,
        seed: u64,
    ) -> Result<Index> {
        if exists(dir) {
            bail!("{} already holds an index", dir.display());
        }
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let env = open_env(dir)?;
        let wtxn = env.write_txn()?;
        let (meta, passages, ids, vectors) = env
            .create_databases_and_commit(wtxn, |opener, wtxn| -> Result<_> {
                let meta: heed::Database<Str, SerdeJson<IndexMeta>> =
                    opener.create_database(wtxn, Some("meta"))?;
                let now = now_unix();
                meta.put(
                    wtxn,
                    META_KEY,
                    &IndexMeta {
                        format: FORMAT_VERSION,
                        embedder,
                        embedder_path,
                        passages: 0,
                        state: IndexState::Building,
                        trees,
                        built_trees: 0,
                        seed,
                        sources: Vec::new(),
                        pending: None,
                        created_unix: now,
                        updated_unix: now,
                    },
                )?;
                Ok(CommitOrAbort::<_, ()>::Commit((
                    meta,
                    opener.create_database(wtxn, Some("passages"))?,
                    opener.create_database(wtxn, Some("ids"))?,
                    opener.create_database(wtxn, Some("vectors"))?,
                )))
            })?
            .unwrap_commit();
        Ok(Index {
            dir: dir.to_path_buf(),
            env,
            meta,
            passages,
            ids,
            vectors,
        })
    }

    /// Opens the index in `dir` and checks its metadata (in any state; see [`Index::require_complete`]).
    pub fn open(dir: &Path) -> Result<Index> {
        if !exists(dir) {
            bail!(
                "{} is not an index (no data.mdb); build one with `host index build`",
                dir.display()
            );
        }
        let env = open_env(dir)?;
        let rtxn = env.read_txn()?;
        let databases = env
            .open_databases_and_commit(rtxn, |opener, rtxn| -> Result<_> {
                Ok(CommitOrAbort::<_, ()>::Commit((
                    opener.open_database::<Str, SerdeJson<IndexMeta>>(rtxn, Some("meta"))?,
                    opener.open_database(rtxn, Some("passages"))?,
                    opener.open_database(rtxn, Some("ids"))?,
                    opener.open_database(rtxn, Some("vectors"))?,
                )))
            })
            .with_context(|| format!("{}: not an index of this host", dir.display()))?
            .unwrap_commit();
        let (Some(meta), Some(passages), Some(ids), Some(vectors)) = databases else {
            bail!(
                "{}: not an index of this host (databases missing)",
                dir.display()
            );
        };
        let index = Index {
            dir: dir.to_path_buf(),
            env,
            meta,
            passages,
            ids,
            vectors,
        };
        let meta = index.meta()?;
        if meta.format > FORMAT_VERSION {
            bail!(
                "{}: index format {} is newer than this host understands ({FORMAT_VERSION}); upgrade the host",
                dir.display(),
                meta.format
            );
        }
        Ok(index)
    }

    /// The index folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The metadata as last committed.
    pub fn meta(&self) -> Result<IndexMeta> {
        let rtxn = self.env.read_txn()?;
        self.meta_in(&rtxn)
    }

    fn meta_in(&self, rtxn: &RoTxn) -> Result<IndexMeta> {
        self.meta
            .get(rtxn, META_KEY)
            .with_context(|| format!("{}: unreadable index metadata", self.dir.display()))?
            .with_context(|| format!("{}: index metadata missing", self.dir.display()))
    }

    /// Fails unless the index is complete, saying how to finish an interrupted one.
    pub fn require_complete(&self) -> Result<IndexMeta> {
        let meta = self.meta()?;
        match meta.state {
            IndexState::Complete => Ok(meta),
            IndexState::Building => bail!(
                "{} is an interrupted build ({} passages so far); run the same `host index build` again to resume it",
                self.dir.display(),
                meta.passages
            ),
            IndexState::Adding => bail!(
                "{} has an interrupted `host index add` ({} passages so far); run it again to finish",
                self.dir.display(),
                meta.passages
            ),
        }
    }

    /// Fails when `embedder` is not the one the index was built with.
    pub fn check_embedder(&self, embedder: &EmbedderIdentity) -> Result<()> {
        let meta = self.meta()?;
        if let Some(difference) = meta.embedder.mismatch(embedder) {
            bail!(
                "{} was built with a different embedder: {difference}. Queries must be embedded by the same model and settings (index: {})",
                self.dir.display(),
                meta.embedder_path.display()
            );
        }
        Ok(())
    }

    /// Marks the index as having an add in progress.
    pub fn begin(&self, state: IndexState, corpus: &Path) -> Result<()> {
        let mut wtxn = self.env.write_txn()?;
        let mut meta = self.meta_in(&wtxn)?;
        meta.state = state;
        let corpus = corpus.display().to_string();
        if meta.pending.as_ref().is_none_or(|p| p.corpus != corpus) {
            if let Some(previous) = meta.pending.take() {
                meta.sources.push(previous);
            }
            meta.pending = Some(SourceStats {
                corpus,
                ..SourceStats::default()
            });
        }
        meta.updated_unix = now_unix();
        self.meta.put(&mut wtxn, META_KEY, &meta)?;
        wtxn.commit()?;
        Ok(())
    }

    /// The records whose ids are not stored yet (first occurrence only).
    pub fn new_records(&self, records: Vec<CorpusRecord>) -> Result<(Vec<CorpusRecord>, u64)> {
        let rtxn = self.env.read_txn()?;
        let mut seen = std::collections::HashSet::new();
        let mut fresh = Vec::with_capacity(records.len());
        let mut present = 0;
        for record in records {
            if self.ids.get(&rtxn, &record.id)?.is_some() || !seen.insert(record.id.clone()) {
                present += 1;
            } else {
                fresh.push(record);
            }
        }
        Ok((fresh, present))
    }

    /// Stores `records` with their `vectors` and the run's counters in one transaction.
    pub fn add_batch(
        &self,
        records: &[CorpusRecord],
        vectors: &Embeddings,
        already_present: u64,
        skipped: u64,
    ) -> Result<()> {
        if records.len() != vectors.len() {
            bail!("{} records but {} vectors", records.len(), vectors.len());
        }
        let mut wtxn = self.env.write_txn()?;
        let mut meta = self.meta_in(&wtxn)?;
        if vectors.dims != meta.embedder.dims && !records.is_empty() {
            bail!(
                "vectors have {} dims, the index {}",
                vectors.dims,
                meta.embedder.dims
            );
        }
        let writer = arroy::Writer::<Cosine>::new(self.vectors, ARROY_INDEX, meta.embedder.dims);
        let first = u32::try_from(meta.passages).context("more than 4 billion passages")?;
        for (offset, record) in records.iter().enumerate() {
            let key = first
                .checked_add(offset as u32)
                .context("more than 4 billion passages")?;
            self.passages.put(
                &mut wtxn,
                &key,
                &StoredPassage {
                    id: record.id.clone(),
                    title: record.title.clone(),
                    text: record.text.clone(),
                },
            )?;
            self.ids.put(&mut wtxn, &record.id, &key)?;
            writer.add_item(&mut wtxn, key, vectors.row(offset))?;
        }
        meta.passages += records.len() as u64;
        let pending = meta.pending.get_or_insert_with(SourceStats::default);
        pending.added += records.len() as u64;
        pending.already_present += already_present;
        pending.skipped += skipped;
        meta.updated_unix = now_unix();
        self.meta.put(&mut wtxn, META_KEY, &meta)?;
        wtxn.commit()?;
        Ok(())
    }

    /// Builds (or updates) the ANN forest and marks the index complete, in one transaction.
    pub fn finish(
        &self,
        progress: impl Fn(arroy::WriterProgress) + Sync + Send,
    ) -> Result<IndexMeta> {
        let mut wtxn = self.env.write_txn()?;
        let mut meta = self.meta_in(&wtxn)?;
        let writer = arroy::Writer::<Cosine>::new(self.vectors, ARROY_INDEX, meta.embedder.dims);
        let mut rng = rand10::rngs::StdRng::seed_from_u64(meta.seed);
        let mut builder = writer.builder(&mut rng);
        if let Some(trees) = meta.trees {
            builder.n_trees(trees);
        }
        builder.progress(progress);
        builder
            .build(&mut wtxn)
            .context("building the ANN trees failed")?;
        meta.built_trees = arroy::Reader::<Cosine>::open(&wtxn, ARROY_INDEX, self.vectors)
            .map(|reader| reader.n_trees())
            .unwrap_or(0);
        meta.state = IndexState::Complete;
        if let Some(pending) = meta.pending.take() {
            meta.sources.push(pending);
        }
        meta.updated_unix = now_unix();
        self.meta.put(&mut wtxn, META_KEY, &meta)?;
        wtxn.commit()?;
        Ok(meta)
    }

    /// A read transaction (for [`Index::passage`] and vector search).
    pub fn read_txn(&self) -> Result<RoTxn<'_, WithoutTls>> {
        Ok(self.env.read_txn()?)
    }

    /// Passage by internal key.
    pub fn passage(&self, rtxn: &RoTxn, key: u32) -> Result<StoredPassage> {
        self.passages
            .get(rtxn, &key)?
            .with_context(|| format!("{}: passage #{key} missing", self.dir.display()))
    }

    /// Internal key of a corpus id.
    pub fn key_of(&self, rtxn: &RoTxn, id: &str) -> Result<Option<u32>> {
        Ok(self.ids.get(rtxn, id)?)
    }

    /// An arroy reader over the vectors (the index must be complete).
    pub fn reader<'t>(&self, rtxn: &'t RoTxn) -> Result<arroy::Reader<'t, Cosine>> {
        arroy::Reader::open(rtxn, ARROY_INDEX, self.vectors)
            .with_context(|| format!("{}: cannot read the vectors", self.dir.display()))
    }

    /// Every stored vector: keys and a row-major matrix.
    pub fn all_vectors(&self) -> Result<(Vec<u32>, Embeddings)> {
        let rtxn = self.env.read_txn()?;
        let meta = self.meta_in(&rtxn)?;
        let reader = self.reader(&rtxn)?;
        let mut keys = Vec::with_capacity(meta.passages as usize);
        let mut data = Vec::with_capacity(meta.passages as usize * meta.embedder.dims);
        for item in reader.iter(&rtxn)? {
            let (key, vector) = item?;
            keys.push(key);
            data.extend_from_slice(&vector);
        }
        Ok((
            keys,
            Embeddings {
                dims: meta.embedder.dims,
                data,
            },
        ))
    }

    /// Bytes the environment takes on disk.
    pub fn disk_bytes(&self) -> u64 {
        std::fs::metadata(self.dir.join("data.mdb"))
            .map(|m| m.len())
            .unwrap_or(0)
    }
}
