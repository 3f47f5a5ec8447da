//! Demonstrations from elsewhere: the rollouts of a `host train` or `host eval` folder that
//! earned at least a reward (rejection-sampling fine-tuning), and a teacher's transcripts
//! (`{question, golden_answers, response}` per line) re-tokenised with their observation
//! spans masked.

use super::template::DemoTemplate;
use super::{assemble_response, finish_of};
use crate::model::ModelTokenizer;
use crate::plugins::{Action, Finish, PluginSet, RewardSample};
use crate::rollout::episodes::render_prompt;
use crate::rollout::{SegmentKind, Trajectory};
use anyhow::{Context, Result, bail};
use serde::Deserialize;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// The rollout files of a run or evaluation folder: a training run's `trajectories/step-*`
/// (never its validation rollouts, which are held-out questions), or an evaluation's
/// `<dataset>.jsonl` records.
pub fn rollout_files(folder: &Path) -> Result<Vec<PathBuf>> {
    let trajectories = folder.join("trajectories");
    let (dir, keep): (PathBuf, fn(&str) -> bool) = if trajectories.is_dir() {
        (trajectories, |name| {
            name.starts_with("step-") && name.ends_with(".jsonl")
        })
    } else if folder.join("settings.json").is_file() {
        (folder.to_path_buf(), |name| name.ends_with(".jsonl"))
    } else {
        bail!(
            "{} is neither a `host train` run folder (trajectories/) nor a `host eval` folder \
             (settings.json)",
            folder.display()
        );
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(&keep))
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("{} holds no rollout files", dir.display());
    }
    Ok(files)
}

/// What collecting from a folder found.
#[derive(Debug, Default)]
pub struct Collected {
    pub kept: Vec<Trajectory>,
    /// Rollouts read.
    pub read: usize,
    pub below_reward: usize,
    pub failed: usize,
    pub duplicates: usize,
}

/// The rollouts of `folder` whose reward is at least `min_reward`, each response once per
/// prompt. A line cut by a kill at the end of a file is skipped; any other bad line is an
/// error naming the file and line.
pub fn from_run(folder: &Path, min_reward: f64) -> Result<Collected> {
    let mut out = Collected::default();
    let mut seen: HashSet<(Vec<u32>, Vec<u32>)> = HashSet::new();
    for file in rollout_files(folder)? {
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        let lines: Vec<&str> = text.lines().collect();
        for (index, line) in lines.iter().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let trajectory: Trajectory = match serde_json::from_str(line) {
                Ok(t) => t,
                Err(_) if index + 1 == lines.len() && !text.ends_with('\n') => continue,
                Err(e) => bail!(
                    "{}:{}: not a rollout record: {e}",
                    file.display(),
                    index + 1
                ),
            };
            out.read += 1;
            if trajectory.error.is_some() || trajectory.generated_tokens() == 0 {
                out.failed += 1;
                continue;
            }
            if trajectory.reward.is_none_or(|r| r < min_reward) {
                out.below_reward += 1;
                continue;
            }
            let key = (
                trajectory.prompt_ids.clone(),
                trajectory.response_ids.clone(),
            );
            if !seen.insert(key) {
                out.duplicates += 1;
                continue;
            }
            out.kept.push(trajectory);
        }
    }
    Ok(out)
}

/// One line of a transcripts file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Transcript {
    #[serde(default)]
    id: Option<String>,
    question: String,
    golden_answers: Vec<String>,
    response: String,
}

/// Re-tokenises a teacher's transcripts: the prompt through the prompt plugin, the response
/// split at the template's observation delimiters (those spans get loss mask 0), EOS appended
/// when the template says so, scored by the reward plugin. A line that is not a transcript,
/// has unclosed observation tags or no answer the parser reads is an error naming the line.
pub fn from_transcripts(
    path: &Path,
    plugins: &PluginSet,
    tokenizer: &ModelTokenizer,
    context: usize,
    template: &DemoTemplate,
) -> Result<Vec<Trajectory>> {
    let text = crate::data::text_file::read_text(path, "the transcripts")?;
    let mut out = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let place = format!("{}:{}", path.display(), index + 1);
        let transcript: Transcript = serde_json::from_str(line).with_context(|| {
            format!("{place}: expected {{\"question\", \"golden_answers\", \"response\"}}")
        })?;
        let id = transcript
            .id
            .clone()
            .unwrap_or_else(|| format!("line-{}", index + 1));
        let trajectory = retokenise(transcript, plugins, tokenizer, context, template)
            .with_context(|| place.clone())?;
        out.push(Trajectory {
            group: out.len(),
            example: index,
            id,
            ..trajectory
        });
    }
    if out.is_empty() {
        bail!("{} holds no transcripts", path.display());
    }
    Ok(out)
}

/// One transcript as a trajectory (the caller sets its place in the file).
fn retokenise(
    transcript: Transcript,
    plugins: &PluginSet,
    tokenizer: &ModelTokenizer,
    context: usize,
    template: &DemoTemplate,
) -> Result<Trajectory> {
    let parser = plugins.parser.as_ref().context("no parser plugin")?;
    let spans = split_observations(&transcript.response, template).map_err(anyhow::Error::msg)?;
    let last_turn = spans
        .iter()
        .rev()
        .find(|(kind, _)| *kind == SegmentKind::Generated)
        .map_or("", |(_, text)| text.as_str());
    let answer = match parser.parse(last_turn) {
        Ok(Action::Answer(answer)) => answer,
        _ => bail!(
            "the response has no answer that the parser `{}` reads (its last turn needs the \
             dialect's answer tags)",
            parser.name()
        ),
    };
    let (prompt_text, prompt_ids) =
        render_prompt(plugins, tokenizer, context, &transcript.question)
            .map_err(|e| anyhow::anyhow!("prompt: {e}"))?;
    let mut pieces = Vec::with_capacity(spans.len());
    let mut queries = Vec::new();
    for (kind, text) in &spans {
        if *kind == SegmentKind::Generated
            && let Ok(Action::Search(query)) = parser.parse(text)
        {
            queries.push(query);
        }
        pieces.push((*kind, tokenizer.encode(text)?));
    }
    let response = assemble_response(tokenizer, pieces, template.end_with_eos)?;
    if prompt_ids.len() + response.ids.len() > context {
        bail!(
            "prompt and response take {} tokens; the model's context is {context}",
            prompt_ids.len() + response.ids.len()
        );
    }
    let finish = finish_of(template.end_with_eos, parser, &transcript.response)?;
    let score = plugins
        .reward()?
        .score(&RewardSample {
            question: transcript.question.clone(),
            golden_answers: transcript.golden_answers.clone(),
            response: transcript.response.clone(),
            finish: finish.clone(),
            num_searches: queries.len() as u32,
            metadata: None,
        })
        .map_err(|e| anyhow::anyhow!("the reward plugin failed: {e}"))?;
    Ok(Trajectory {
        group: 0,
        example: 0,
        id: String::new(),
        sample: 0,
        question: transcript.question,
        golden_answers: transcript.golden_answers,
        prompt_text,
        prompt_ids,
        response_ids: response.ids,
        loss_mask: response.loss_mask,
        segments: response.segments,
        response_text: transcript.response,
        turns: queries.len() as u32 + u32::from(matches!(finish, Finish::Stop(_))),
        queries,
        answer: Some(answer),
        finish: finish.to_string(),
        error: None,
        reward: Some(score.total),
        components: score.components,
        advantage: 0.0,
    })
}

/// A response cut into generated text and observation spans (delimiters included in the
/// observation).
fn split_observations(
    response: &str,
    template: &DemoTemplate,
) -> Result<Vec<(SegmentKind, String)>, String> {
    let (open, close) = (&template.observation_open, &template.observation_close);
    let mut spans = Vec::new();
    let mut rest = response;
    while let Some(start) = rest.find(open.as_str()) {
        let after_open = start + open.len();
        let Some(length) = rest[after_open..].find(close.as_str()) else {
            return Err(format!("`{open}` without a closing `{close}`"));
        };
        let end = after_open + length + close.len();
        if start > 0 {
            spans.push((SegmentKind::Generated, rest[..start].to_string()));
        }
        spans.push((SegmentKind::Observation, rest[start..end].to_string()));
        rest = &rest[end..];
    }
    if rest.contains(close.as_str()) {
        return Err(format!("`{close}` without an opening `{open}`"));
    }
    if !rest.is_empty() {
        spans.push((SegmentKind::Generated, rest.to_string()));
    }
    Ok(spans)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_are_split_out_with_their_tags() {
        let template = DemoTemplate::load("research").unwrap();
        let spans = split_observations(
            "<search> a </search> <result>\nP\n</result> <answer> x </answer>",
            &template,
        )
        .unwrap();
        let kinds: Vec<SegmentKind> = spans.iter().map(|(k, _)| *k).collect();
        assert_eq!(
            kinds,
            vec![
                SegmentKind::Generated,
                SegmentKind::Observation,
                SegmentKind::Generated
            ]
        );
        assert_eq!(spans[1].1, "<result>\nP\n</result>");
        assert!(split_observations("<result> never closed", &template).is_err());
        assert!(split_observations("stray </result>", &template).is_err());
    }
}
