//! Sentence embedder on candle's BERT: MiniLM, E5 and BGE style models from an HF folder.
//!
//! Texts are tokenised without the tokenizer file's own padding (MiniLM's tokenizer.json pads
//! every input to 128), sorted by length and batched so each batch pads only to its longest
//! member. Vectors are pooled (mean over real tokens, or the CLS token) and L2-normalised, so the
//! inner product of two vectors is their cosine similarity.

use super::bert::{BertEncoder, l2_normalise, mean_pool};
use anyhow::{Context, Result, bail};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::Config as BertConfig;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use tokenizers::{Tokenizer, TruncationParams};

/// How token vectors become one text vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
    /// Average over the real (unpadded) tokens: sentence-transformers MiniLM, E5.
    Mean,
    /// The first ([CLS]) token: BGE.
    Cls,
}

/// Everything that changes the vectors an embedder produces besides its weights; stored with
/// an index so queries are embedded exactly like its passages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmbedderSettings {
    /// Pooling of token vectors.
    pub pooling: Pooling,
    /// Prepended to every query (E5: `query: `).
    pub query_prefix: String,
    /// Prepended to every passage (E5: `passage: `).
    pub passage_prefix: String,
    /// Longest input in tokens (longer texts are truncated).
    pub max_length: usize,
}

/// Settings given on the command line; each one overrides what the folder says.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SettingsOverrides {
    /// Pooling [default: from 1_Pooling/config.json, else mean].
    #[arg(long, value_enum)]
    pub pooling: Option<Pooling>,
    /// Text put before each query [default: `query: ` for E5 models, the BGE instruction for
    /// BGE English models, else none].
    #[arg(long, value_name = "TEXT")]
    pub query_prefix: Option<String>,
    /// Text put before each passage [default: `passage: ` for E5 models, else none].
    #[arg(long, value_name = "TEXT")]
    pub passage_prefix: Option<String>,
    /// Longest input in tokens [default: sentence_bert_config.json's max_seq_length, else the
    /// model's position limit].
    #[arg(long, value_name = "TOKENS")]
    pub max_length: Option<usize>,
}

/// The identity of an embedder: which weights, which settings, how many dimensions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmbedderIdentity {
    /// A readable name (the folder name, or `_name_or_path` from config.json).
    pub name: String,
    /// SHA-256 over config.json, tokenizer.json and the weights.
    pub fingerprint: String,
    /// Vector dimensions.
    pub dims: usize,
    /// Settings that shape the vectors.
    pub settings: EmbedderSettings,
}

impl EmbedderIdentity {
    /// Explains every difference between `self` (what an index was built with) and `other`
    /// (the embedder offered now); `None` when they match.
    pub fn mismatch(&self, other: &EmbedderIdentity) -> Option<String> {
        let mut differences = Vec::new();
        if self.fingerprint != other.fingerprint {
            differences.push(format!(
                "weights differ (index: {} {}, given: {} {})",
                self.name,
                &self.fingerprint[..12.min(self.fingerprint.len())],
                other.name,
                &other.fingerprint[..12.min(other.fingerprint.len())]
            ));
        }
        if self.dims != other.dims {
            differences.push(format!("dims {} vs {}", self.dims, other.dims));
        }
        let (a, b) = (&self.settings, &other.settings);
        if a.pooling != b.pooling {
            differences.push(format!("pooling {:?} vs {:?}", a.pooling, b.pooling));
        }
        if a.query_prefix != b.query_prefix {
            differences.push(format!(
                "query prefix {:?} vs {:?}",
                a.query_prefix, b.query_prefix
            ));
        }
        if a.passage_prefix != b.passage_prefix {
            differences.push(format!(
                "passage prefix {:?} vs {:?}",
                a.passage_prefix, b.passage_prefix
            ));
        }
        if a.max_length != b.max_length {
            differences.push(format!("max length {} vs {}", a.max_length, b.max_length));
        }
        (!differences.is_empty()).then(|| differences.join("; "))
    }
}

/// Row-major embeddings: `len()` vectors of `dims` floats.
#[derive(Debug, Clone, PartialEq)]
pub struct Embeddings {
    /// Dimensions of each vector.
    pub dims: usize,
    /// All vectors, one after the other.
    pub data: Vec<f32>,
}

impl Embeddings {
    /// Number of vectors.
    pub fn len(&self) -> usize {
        self.data.len().checked_div(self.dims).unwrap_or(0)
    }

    /// True when there are no vectors.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Vector `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.dims..(i + 1) * self.dims]
    }
}

/// A loaded BERT-family embedder.
pub struct Embedder {
    model: BertEncoder,
    tokenizer: Tokenizer,
    identity: EmbedderIdentity,
    folder: PathBuf,
    device: Device,
    batch_size: usize,
}

/// Texts embedded per forward pass unless told otherwise.
pub const DEFAULT_BATCH_SIZE: usize = 16;

impl Embedder {
    /// Loads the model in `dir` (config.json, tokenizer.json, model.safetensors), with settings
    /// from the folder's sentence-transformers files, overridden by `overrides`.
    pub fn load(dir: &Path, overrides: &SettingsOverrides, device: &Device) -> Result<Embedder> {
        let config_path = dir.join("config.json");
        let config_text = fs::read_to_string(&config_path).with_context(|| {
            format!(
                "{} is not an embedder folder: cannot read config.json",
                dir.display()
            )
        })?;
        let config: BertConfig = serde_json::from_str(&config_text)
            .with_context(|| format!("{}: not a BERT config", config_path.display()))?;
        let raw_config: serde_json::Value = serde_json::from_str(&config_text)
            .with_context(|| format!("{}: not JSON", config_path.display()))?;
        let tokenizer_path = dir.join("tokenizer.json");
        let mut tokenizer = Tokenizer::from_file(&tokenizer_path)
            .map_err(|e| anyhow::anyhow!("{}: {e}", tokenizer_path.display()))?;
        let weights = weight_file(dir)?;
        let name = raw_config
            .get("_name_or_path")
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .unwrap_or_else(|| folder_name(dir));
        let settings = detect_settings(dir, &name, &config, overrides)?;
        if settings.max_length > config.max_position_embeddings {
            bail!(
                "max length {} exceeds the model's {} positions ({})",
                settings.max_length,
                config.max_position_embeddings,
                config_path.display()
            );
        }
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: settings.max_length,
                ..TruncationParams::default()
            }))
            .map_err(|e| anyhow::anyhow!("{}: {e}", tokenizer_path.display()))?;
        // SAFETY: the file is memory-mapped read-only and not modified while the model lives.
        let vb = unsafe {
            VarBuilder::from_mmaped_safetensors(std::slice::from_ref(&weights), DType::F32, device)
        }
        .with_context(|| format!("cannot read {}", weights.display()))?;
        let model = BertEncoder::load(vb, &config)
            .with_context(|| format!("{}: not a BERT model", weights.display()))?;
        let fingerprint = fingerprint(&[&config_path, &tokenizer_path, &weights])?;
        Ok(Embedder {
            model,
            tokenizer,
            identity: EmbedderIdentity {
                name,
                fingerprint,
                dims: config.hidden_size,
                settings,
            },
            folder: dir.to_path_buf(),
            device: device.clone(),
            batch_size: DEFAULT_BATCH_SIZE,
        })
    }

    /// Sets how many texts go through the model at once.
    pub fn with_batch_size(mut self, batch_size: usize) -> Embedder {
        self.batch_size = batch_size.max(1);
        self
    }

    /// Which embedder this is.
    pub fn identity(&self) -> &EmbedderIdentity {
        &self.identity
    }

    /// The folder it was loaded from.
    pub fn folder(&self) -> &Path {
        &self.folder
    }

    /// Vector dimensions.
    pub fn dims(&self) -> usize {
        self.identity.dims
    }

    /// Embeds queries (with the query prefix).
    pub fn embed_queries<S: AsRef<str>>(&self, queries: &[S]) -> Result<Embeddings> {
        self.embed(queries, &self.identity.settings.query_prefix)
    }

    /// Embeds passages given as FlashRAG contents (with the passage prefix).
    pub fn embed_passages<S: AsRef<str>>(&self, passages: &[S]) -> Result<Embeddings> {
        self.embed(passages, &self.identity.settings.passage_prefix)
    }

    /// Number of tokens each text becomes (after prefix and truncation); for reports.
    pub fn token_counts<S: AsRef<str>>(&self, texts: &[S], query: bool) -> Result<Vec<usize>> {
        let settings = &self.identity.settings;
        let prefix = if query {
            &settings.query_prefix
        } else {
            &settings.passage_prefix
        };
        Ok(self
            .tokenize(texts, prefix)?
            .iter()
            .map(|ids| ids.len())
            .collect())
    }

    fn tokenize<S: AsRef<str>>(&self, texts: &[S], prefix: &str) -> Result<Vec<Vec<u32>>> {
        let inputs: Vec<String> = texts
            .iter()
            .map(|t| format!("{prefix}{}", t.as_ref()))
            .collect();
        let encodings = self
            .tokenizer
            .encode_batch(inputs, true)
            .map_err(|e| anyhow::anyhow!("tokenizing failed: {e}"))?;
        Ok(encodings
            .into_iter()
            .map(|e| e.get_ids().to_vec())
            .collect())
    }

    fn embed<S: AsRef<str>>(&self, texts: &[S], prefix: &str) -> Result<Embeddings> {
        let dims = self.dims();
        let mut data = vec![0f32; texts.len() * dims];
        let ids = self.tokenize(texts, prefix)?;
        // Longest first, so each batch pads only to lengths close to its own.
        let mut order: Vec<usize> = (0..ids.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(ids[i].len()));
        let chunks: Vec<&[usize]> = order.chunks(self.batch_size).collect();
        // Two batches in flight: while one runs a serial step (copies, element-wise maths),
        // the other's matrix products keep the thread pool busy.
        let lanes = if self.device.is_cpu() {
            2.min(chunks.len())
        } else {
            1
        };
        let results: Vec<Result<Vec<BatchVectors>>> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..lanes)
                .map(|lane| {
                    let (chunks, ids) = (&chunks, &ids);
                    scope.spawn(move || {
                        let mut done = Vec::new();
                        for (number, chunk) in chunks.iter().enumerate().skip(lane).step_by(lanes) {
                            done.push((
                                number,
                                self.forward(chunk.iter().map(|&i| ids[i].as_slice()))?,
                            ));
                        }
                        Ok(done)
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|w| {
                    w.join()
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("an embedding thread panicked")))
                })
                .collect()
        });
        for lane in results {
            for (number, vectors) in lane? {
                for (row, &i) in chunks[number].iter().enumerate() {
                    data[i * dims..(i + 1) * dims]
                        .copy_from_slice(&vectors[row * dims..(row + 1) * dims]);
                }
            }
        }
        Ok(Embeddings { dims, data })
    }

    /// One padded batch through the model; returns pooled, normalised vectors row-major.
    fn forward<'a>(&self, batch: impl Iterator<Item = &'a [u32]> + Clone) -> Result<Vec<f32>> {
        let rows = batch.clone().count();
        let width = batch.clone().map(|ids| ids.len()).max().unwrap_or(0).max(1);
        let mut input = vec![0u32; rows * width];
        let mut mask = vec![0f32; rows * width];
        for (row, ids) in batch.enumerate() {
            input[row * width..row * width + ids.len()].copy_from_slice(ids);
            mask[row * width..row * width + ids.len()].fill(1.0);
        }
        let input = Tensor::from_vec(input, (rows, width), &self.device)?;
        let mask = Tensor::from_vec(mask, (rows, width), &self.device)?;
        let hidden = self.model.forward(&input, &mask)?;
        let pooled = match self.identity.settings.pooling {
            Pooling::Cls => hidden.narrow(1, 0, 1)?.squeeze(1)?,
            Pooling::Mean => mean_pool(&hidden, &mask)?,
        };
        let normalised = l2_normalise(&pooled)?;
        Ok(normalised.flatten_all()?.to_vec1()?)
    }
}

/// Batch number and its vectors, row-major.
type BatchVectors = (usize, Vec<f32>);

/// The weights file of an embedder folder.
fn weight_file(dir: &Path) -> Result<PathBuf> {
    let path = dir.join("model.safetensors");
    if path.is_file() {
        return Ok(path);
    }
    bail!(
        "{}: no model.safetensors (convert pytorch_model.bin to safetensors first)",
        dir.display()
    )
}

fn folder_name(dir: &Path) -> String {
    dir.canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| dir.display().to_string())
}

/// SHA-256 over the given files, in order (each prefixed with its length).
fn fingerprint(files: &[&Path]) -> Result<String> {
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    for path in files {
        let mut file =
            fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        let length = file.metadata()?.len();
        hasher.update(length.to_le_bytes());
        loop {
            let read = file
                .read(&mut buffer)
                .with_context(|| format!("cannot read {}", path.display()))?;
            if read == 0 {
                break;
            }
            hasher.update(&buffer[..read]);
        }
    }
    Ok(hex::encode(hasher.finalize()))
}

/// The BGE English models' query instruction.
const BGE_QUERY_INSTRUCTION: &str = "Represent this sentence for searching relevant passages: ";

/// Settings from the folder (sentence-transformers files and the model's name), then overrides.
fn detect_settings(
    dir: &Path,
    name: &str,
    config: &BertConfig,
    overrides: &SettingsOverrides,
) -> Result<EmbedderSettings> {
    let read_json = |relative: &str| -> Result<Option<serde_json::Value>> {
        let path = dir.join(relative);
        if !path.is_file() {
            return Ok(None);
        }
        let text =
            fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
        serde_json::from_str(&text)
            .map(Some)
            .with_context(|| format!("{}: not JSON", path.display()))
    };
    let lower = format!("{} {}", name, folder_name(dir)).to_lowercase();
    let is_e5 = lower.contains("e5-") || lower.contains("e5_") || lower.ends_with("e5");
    let is_bge_en = lower.contains("bge") && lower.contains("en");

    let pooling = match read_json("1_Pooling/config.json")? {
        Some(pooling) if pooling["pooling_mode_cls_token"] == true => Pooling::Cls,
        Some(_) => Pooling::Mean,
        None if is_bge_en => Pooling::Cls,
        None => Pooling::Mean,
    };
    let max_length = read_json("sentence_bert_config.json")?
        .and_then(|c| c["max_seq_length"].as_u64())
        .map(|n| n as usize)
        .unwrap_or(config.max_position_embeddings);
    let (query_prefix, passage_prefix) = if is_e5 {
        ("query: ", "passage: ")
    } else if is_bge_en {
        (BGE_QUERY_INSTRUCTION, "")
    } else {
        ("", "")
    };
    let settings = EmbedderSettings {
        pooling: overrides.pooling.unwrap_or(pooling),
        query_prefix: overrides
            .query_prefix
            .clone()
            .unwrap_or_else(|| query_prefix.to_string()),
        passage_prefix: overrides
            .passage_prefix
            .clone()
            .unwrap_or_else(|| passage_prefix.to_string()),
        max_length: overrides.max_length.unwrap_or(max_length),
    };
    if settings.max_length < 2 {
        bail!("max length must be at least 2 tokens");
    }
    Ok(settings)
}
