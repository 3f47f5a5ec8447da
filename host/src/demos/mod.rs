//! Training trajectories for a supervised warm start, in the JSONL form of a run's
//! `trajectories/`: built without a teacher from QA pairs and the real index
//! ([`builder`]), collected from the rewarded rollouts of a run, or re-tokenised from a
//! teacher's transcripts ([`collect`]). The wording of a dialect is a [`template`].

pub mod builder;
pub mod collect;
pub mod template;

pub use builder::{DemoBuilder, DemoSet, DropReason};
pub use template::DemoTemplate;

use crate::model::ModelTokenizer;
use crate::plugins::{Finish, ParserPlugin};
use crate::rollout::{Segment, SegmentKind};
use anyhow::{Context, Result};

/// A response assembled from generated and observed pieces of token ids.
pub struct Response {
    pub ids: Vec<u32>,
    /// 1 for generated tokens, 0 for observed ones.
    pub loss_mask: Vec<u8>,
    pub segments: Vec<Segment>,
}

/// Joins the pieces (the end-of-sequence token appended to the last one when `eos`), with
/// the loss mask and the segments (their text decoded from their ids, as rollouts record it).
pub fn assemble_response(
    tokenizer: &ModelTokenizer,
    mut pieces: Vec<(SegmentKind, Vec<u32>)>,
    eos: bool,
) -> Result<Response> {
    if eos {
        let id = tokenizer
            .eos_ids()
            .first()
            .copied()
            .context("the tokenizer has no end-of-sequence token")?;
        match pieces.last_mut() {
            Some((SegmentKind::Generated, ids)) => ids.push(id),
            _ => pieces.push((SegmentKind::Generated, vec![id])),
        }
    }
    let mut response = Response {
        ids: Vec::new(),
        loss_mask: Vec::new(),
        segments: Vec::new(),
    };
    for (kind, ids) in pieces.into_iter().filter(|(_, ids)| !ids.is_empty()) {
        let start = response.ids.len();
        response.loss_mask.extend(std::iter::repeat_n(
            u8::from(kind == SegmentKind::Generated),
            ids.len(),
        ));
        response.segments.push(Segment {
            kind,
            start,
            end: start + ids.len(),
            text: tokenizer.decode(&ids)?,
        });
        response.ids.extend(ids);
    }
    Ok(response)
}

/// How a demonstration ends: at EOS when the template appends it, else at the parser's stop
/// sequence that ends `text`, else at the budget.
pub fn finish_of(eos: bool, parser: &ParserPlugin, text: &str) -> Result<Finish> {
    if eos {
        return Ok(Finish::Eos);
    }
    let stops = parser.stop_sequences()?;
    Ok(
        match stops
            .into_iter()
            .find(|s| text.trim_end().ends_with(s.as_str()))
        {
            Some(stop) => Finish::Stop(stop),
            None => Finish::Length,
        },
    )
}
