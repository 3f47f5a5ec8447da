//! The multi-turn rollout engine: G samples per prompt decoded together; a turn ends at one of
//! the parser's stop sequences; the parser reads the turn; searches of every sequence that
//! stopped at the same decode step go to the search plugin as one batch; the formatted results
//! are tokenised and appended with loss mask 0; until EOS, the turn limit or the response
//! budget. Sampled ids are kept as sampled (never decoded and re-encoded).
//!
//! A plugin failure ends only the rollout it happened in: that trajectory records the error and
//! is left out of the loss; the batch goes on.

use super::episodes::RolloutModel;
use super::generator::{Generation, Generator};
use super::trajectory::{Segment, Trajectory, segment_ranges};
use crate::model::{ModelTokenizer, SamplingParams, SeqState, Stop, StopRules};
use crate::plugins::{Action, Finish, ParserPlugin, SearchPlugin};
use anyhow::Result;
use std::time::Instant;

/// Rollout knobs.
#[derive(Debug, Clone)]
pub struct RolloutSettings {
    /// Samples per prompt (G).
    pub group_size: usize,
    pub sampling: SamplingParams,
    /// Response tokens, sampled and appended together.
    pub max_response_tokens: usize,
    /// Turns (a stop sequence followed by an observation) per rollout.
    pub max_turns: u32,
    /// Tokens of one observation; longer ones are cut.
    pub max_obs_tokens: usize,
    /// Passages per search.
    pub top_k: u32,
}

/// The plugins a rollout talks to.
pub struct RolloutPlugins<'a> {
    pub parser: &'a ParserPlugin,
    pub search: &'a SearchPlugin,
    /// The parser's stop sequences (asked once per run).
    pub stop_sequences: Vec<String>,
}

/// A prompt, rendered and tokenised, with the seed of its group.
#[derive(Debug, Clone)]
pub struct PromptInput {
    /// The prompt's group: its position in the step's batch (a question drawn twice in one
    /// batch makes two groups).
    pub group: usize,
    pub example: usize,
    pub id: String,
    pub question: String,
    pub golden_answers: Vec<String>,
    pub text: String,
    pub ids: Vec<u32>,
    pub seed: u64,
}

/// Seconds spent per kind of work.
#[derive(Debug, Clone, Copy, Default)]
pub struct RolloutTimes {
    pub generation: f64,
    pub retrieval: f64,
    pub plugins: f64,
}

/// Per-sequence bookkeeping beside the model engine.
struct Track {
    prompt: usize,
    sample: usize,
    /// Response offset where the current turn starts.
    turn_start: usize,
    turns: u32,
    queries: Vec<String>,
    answer: Option<String>,
    finish: Option<Finish>,
    error: Option<String>,
}

/// What to do with a sequence that stopped at a stop sequence.
enum Next {
    Search(String),
    Observe(String),
    Resume,
    End(Finish),
}

/// Runs `settings.group_size` rollouts of every prompt, sampled where `generation` says;
/// trajectories come back in prompt order, samples in order within a prompt. Rewards are not
/// filled in.
pub fn run_rollouts(
    generation: &Generation,
    model: &RolloutModel,
    plugins: &RolloutPlugins,
    prompts: &[PromptInput],
    settings: &RolloutSettings,
    times: &mut RolloutTimes,
) -> Result<Vec<Trajectory>> {
    let tokenizer = model.tokenizer;
    let rules = StopRules {
        stop_sequences: plugins.stop_sequences.clone(),
        eos_ids: tokenizer.eos_ids().to_vec(),
        max_new_tokens: settings.max_response_tokens,
    };
    let mut engine = generation.batch(
        model,
        settings.sampling,
        rules,
        settings.max_response_tokens,
    )?;
    let mut tracks = Vec::new();
    let started = Instant::now();
    for (p, prompt) in prompts.iter().enumerate() {
        engine.add_prompt(&prompt.ids, settings.group_size, prompt.seed)?;
        for sample in 0..settings.group_size {
            tracks.push(Track {
                prompt: p,
                sample,
                turn_start: 0,
                turns: 0,
                queries: Vec::new(),
                answer: None,
                finish: None,
                error: None,
            });
        }
    }
    times.generation += started.elapsed().as_secs_f64();

    loop {
        let started = Instant::now();
        engine.advance()?;
        times.generation += started.elapsed().as_secs_f64();
        let stopped: Vec<usize> = (0..engine.count())
            .filter(|&i| matches!(engine.sequence(i).state, SeqState::Stopped(_)))
            .collect();
        if !stopped.is_empty() {
            handle_stops(
                engine.as_mut(),
                model.config.max_position_embeddings,
                tokenizer,
                plugins,
                settings,
                &mut tracks,
                &stopped,
                times,
            )?;
        }
        if !engine.has_running() {
            break;
        }
    }

    let mut trajectories = Vec::with_capacity(tracks.len());
    for (index, track) in tracks.into_iter().enumerate() {
        let sequence = engine.sequence(index);
        let finish = match (&track.finish, sequence.state) {
            (Some(finish), _) => finish.clone(),
            (None, SeqState::Finished(stop) | SeqState::Stopped(stop)) => finish_of(stop),
            (None, SeqState::Running) => Finish::Length,
        };
        let prompt = &prompts[track.prompt];
        let response = sequence.response().to_vec();
        let mut track = track;
        // The EOS token is not part of the text the reward sees.
        let text_end = if finish == Finish::Eos {
            response.len().saturating_sub(1)
        } else {
            response.len()
        };
        let response_text = tokenizer.decode(&response[..text_end])?;
        if track.error.is_none() && track.answer.is_none() && track.finish.is_none() {
            // The last turn ended at EOS or the budget: it may hold the answer.
            let turn = tokenizer.decode(&response[track.turn_start.min(text_end)..text_end])?;
            let started = Instant::now();
            match plugins.parser.parse(&turn) {
                Ok(Action::Answer(answer)) => track.answer = Some(answer),
                Ok(_) => {}
                Err(error) => track.error = Some(error.to_string()),
            }
            times.plugins += started.elapsed().as_secs_f64();
        }
        let mut segments = Vec::new();
        for (kind, start, end) in segment_ranges(sequence.sampled) {
            segments.push(Segment {
                kind,
                start,
                end,
                text: tokenizer.decode(&response[start..end])?,
            });
        }
        trajectories.push(Trajectory {
            group: prompt.group,
            example: prompt.example,
            id: prompt.id.clone(),
            sample: track.sample,
            question: prompt.question.clone(),
            golden_answers: prompt.golden_answers.clone(),
            prompt_text: prompt.text.clone(),
            prompt_ids: prompt.ids.clone(),
            loss_mask: sequence.sampled.iter().map(|&s| u8::from(s)).collect(),
            response_ids: response,
            segments,
            response_text,
            queries: track.queries,
            answer: track.answer,
            finish: if track.error.is_some() {
                "error".to_string()
            } else {
                finish.to_string()
            },
            turns: track.turns,
            error: track.error,
            reward: None,
            components: Vec::new(),
            advantage: 0.0,
        });
    }
    Ok(trajectories)
}

fn finish_of(stop: &Stop) -> Finish {
    match stop {
        Stop::Eos => Finish::Eos,
        Stop::Length => Finish::Length,
        Stop::Sequence(sequence) => Finish::Stop(sequence.clone()),
    }
}

/// Parses the turns of the sequences that stopped, runs their searches as one batch and
/// appends the observations (or ends the sequences).
#[allow(clippy::too_many_arguments)]
fn handle_stops(
    engine: &mut dyn Generator,
    max_positions: usize,
    tokenizer: &ModelTokenizer,
    plugins: &RolloutPlugins,
    settings: &RolloutSettings,
    tracks: &mut [Track],
    stopped: &[usize],
    times: &mut RolloutTimes,
) -> Result<()> {
    let mut next: Vec<(usize, Next)> = Vec::with_capacity(stopped.len());
    for &index in stopped {
        let track = &mut tracks[index];
        let sequence = engine.sequence(index);
        let stop = match sequence.state {
            SeqState::Stopped(stop) => stop.clone(),
            _ => continue,
        };
        let turn = tokenizer.decode(&sequence.response()[track.turn_start..])?;
        let started = Instant::now();
        let action = plugins.parser.parse(&turn);
        times.plugins += started.elapsed().as_secs_f64();
        track.turns += 1;
        let wants_more = track.turns <= settings.max_turns;
        let decision = match action {
            Err(error) => {
                track.error = Some(error.to_string());
                Next::End(Finish::Stop(String::new()))
            }
            Ok(Action::Answer(answer)) => {
                track.answer = Some(answer);
                Next::End(finish_of(&stop))
            }
            Ok(_) if !wants_more => Next::End(Finish::MaxTurns),
            Ok(Action::Search(query)) => {
                track.queries.push(query.clone());
                Next::Search(query)
            }
            Ok(Action::Invalid(feedback)) => Next::Observe(feedback),
            Ok(Action::Continue) => Next::Resume,
        };
        next.push((index, decision));
    }

    // One batch for every search asked at this step. An empty query is not sent: its
    // observation is the parser's rendering of no passages.
    let queries: Vec<String> = next
        .iter()
        .filter_map(|(_, n)| match n {
            Next::Search(q) if !q.trim().is_empty() => Some(q.clone()),
            _ => None,
        })
        .collect();
    let mut results = if queries.is_empty() {
        Vec::new()
    } else {
        search_batch(plugins.search, &queries, settings.top_k, times)
    };
    results.reverse();

    for (index, decision) in next {
        let observation = match decision {
            Next::End(finish) => {
                tracks[index].finish = Some(finish);
                engine.finish(index)?;
                continue;
            }
            Next::Resume => {
                tracks[index].turn_start = engine.sequence(index).response().len();
                engine.append(index, &[])?;
                continue;
            }
            Next::Observe(text) => Ok(text),
            Next::Search(query) => {
                let result = if query.trim().is_empty() {
                    Some(Ok(Vec::new()))
                } else {
                    results.pop()
                };
                match result {
                    Some(Ok(passages)) => {
                        let started = Instant::now();
                        let formatted = plugins.parser.format_results(&query, &passages);
                        times.plugins += started.elapsed().as_secs_f64();
                        formatted.map_err(|e| e.to_string())
                    }
                    Some(Err(error)) => Err(error),
                    None => {
                        Err("the search plugin returned fewer result lists than queries".into())
                    }
                }
            }
        };
        match observation {
            Ok(text) => {
                let sequence = engine.sequence(index);
                let room = settings
                    .max_obs_tokens
                    .min(
                        settings
                            .max_response_tokens
                            .saturating_sub(sequence.response().len()),
                    )
                    // One position stays free for the next sampled token.
                    .min(max_positions.saturating_sub(sequence.tokens.len() + 2));
                let ids = cap_observation(tokenizer, &text, room)?;
                engine.append(index, &ids)?;
                tracks[index].turn_start = engine.sequence(index).response().len();
            }
            Err(error) => {
                tracks[index].error = Some(error);
                tracks[index].finish = Some(Finish::Stop(String::new()));
                engine.finish(index)?;
            }
        }
    }
    Ok(())
}

/// Characters kept from the end of an observation that is cut: its closing tag
/// (`\n</result>`, `</information>\n\n`) survives, so the format rules still hold.
const KEPT_TAIL_CHARS: usize = 24;

/// The tokens of an observation, at most `max_tokens`: a longer one keeps its head and its
/// last [`KEPT_TAIL_CHARS`] characters (the reference cuts the tail off, closing tag included,
/// which fails every format rule).
pub fn cap_observation(
    tokenizer: &ModelTokenizer,
    text: &str,
    max_tokens: usize,
) -> Result<Vec<u32>> {
    let ids = tokenizer.encode(text)?;
    if ids.len() <= max_tokens {
        return Ok(ids);
    }
    let split = text
        .char_indices()
        .rev()
        .nth(KEPT_TAIL_CHARS - 1)
        .map_or(0, |(i, _)| i);
    let tail = tokenizer.encode(&text[split..])?;
    if tail.len() >= max_tokens {
        let mut ids = ids;
        ids.truncate(max_tokens);
        return Ok(ids);
    }
    let mut head = tokenizer.encode(&text[..split])?;
    head.truncate(max_tokens - tail.len());
    head.extend_from_slice(&tail);
    Ok(head)
}

/// Searches `queries` in one call; when that call fails, each query alone, so that one bad
/// query fails only its own rollout.
fn search_batch(
    search: &SearchPlugin,
    queries: &[String],
    top_k: u32,
    times: &mut RolloutTimes,
) -> Vec<Result<Vec<crate::plugins::Passage>, String>> {
    let started = Instant::now();
    let batch = search.search(queries, top_k);
    let results = match batch {
        Ok(lists) if lists.len() == queries.len() => lists.into_iter().map(Ok).collect(),
        _ => queries
            .iter()
            .map(|query| {
                search
                    .search(std::slice::from_ref(query), top_k)
                    .map_err(|e| e.to_string())
                    .and_then(|mut lists| {
                        lists
                            .pop()
                            .ok_or_else(|| "the search plugin returned no result list".into())
                    })
            })
            .collect(),
    };
    times.retrieval += started.elapsed().as_secs_f64();
    results
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::config::Architecture;
    use crate::model::tiny::{TINY, init_tiny};

    #[test]
    fn a_long_observation_keeps_its_closing_tag() {
        let dir = tempfile::tempdir().unwrap();
        init_tiny(Architecture::Qwen2, TINY, 1, None, dir.path()).unwrap();
        let tokenizer = ModelTokenizer::load(dir.path(), None).unwrap();
        let short = " <result>\nA short passage.\n</result>";
        let ids = cap_observation(&tokenizer, short, 1000).unwrap();
        assert_eq!(ids, tokenizer.encode(short).unwrap());
        let long = format!(
            " <result>\n{}\n</result>",
            "The river runs past the mill and the old bridge. ".repeat(40)
        );
        let ids = cap_observation(&tokenizer, &long, 40).unwrap();
        assert!(ids.len() <= 40, "{}", ids.len());
        let text = tokenizer.decode(&ids).unwrap();
        assert!(text.starts_with(" <result>\nThe river"), "{text}");
        assert!(text.ends_with("\n</result>"), "{text}");
        // No room at all: nothing is appended.
        assert!(cap_observation(&tokenizer, &long, 0).unwrap().is_empty());
    }
}
