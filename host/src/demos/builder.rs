//! Demonstrations without a teacher: for each question, search with a query derived from it,
//! show the search plugin's results through the parser's own `format-results` (loss mask 0),
//! search once more for an entity of those results when they lack the answer, then answer in
//! the dialect's format. Only grounded examples are kept: a golden answer must appear in the
//! results the demonstration shows. Every kept one is read back by the parser (the search
//! queries and the answer) and scored by the reward plugin.

use super::template::{DemoTemplate, Fill, fill};
use super::{assemble_response, finish_of};
use crate::data::qa::QaExample;
use crate::model::ModelTokenizer;
use crate::plugins::{Action, Finish, Passage, PluginSet, RewardSample};
use crate::rollout::episodes::render_prompt;
use crate::rollout::runner::cap_observation;
use crate::rollout::{SegmentKind, Trajectory};
use anyhow::{Context, Result};
use std::collections::BTreeMap;

/// What the builder needs besides the questions.
pub struct DemoBuilder<'a> {
    pub plugins: &'a PluginSet,
    pub tokenizer: &'a ModelTokenizer,
    /// The model's context window (prompt + response must fit).
    pub context: usize,
    pub template: &'a DemoTemplate,
    /// Passages per search.
    pub top_k: u32,
    /// Tokens of one observation, as in rollouts.
    pub max_obs_tokens: usize,
    /// Response tokens (generated and observed), as in rollouts.
    pub max_response_tokens: usize,
    /// Entities of the first results tried as a second query.
    pub max_entities: usize,
}

/// Why a question gave no demonstration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum DropReason {
    /// The prompt plugin failed or the prompt does not fit the context.
    Prompt,
    /// The search plugin failed.
    Search,
    /// No golden answer in the results of the first search nor of any follow-up search.
    NotGrounded,
    /// The answer was in a passage but `max_obs_tokens` cut it from the observation.
    AnswerCut,
    /// Prompt and response exceed the response budget or the model's context.
    TooLong,
    /// The parser did not read the template's query or answer back (template and parser
    /// dialect disagree).
    ParserMismatch,
    /// The reward plugin failed on it.
    Reward,
}

impl DropReason {
    /// What the reason means, for the summary.
    pub fn describe(self) -> &'static str {
        match self {
            DropReason::Prompt => "the prompt could not be rendered or does not fit the context",
            DropReason::Search => "the search plugin failed",
            DropReason::NotGrounded => "no golden answer in the retrieved passages",
            DropReason::AnswerCut => "the answer was cut from the observation (max_obs_tokens)",
            DropReason::TooLong => "longer than rollout.max_response_tokens or the model's context",
            DropReason::ParserMismatch => {
                "the parser did not read the query or answer back (does --template match the parser's dialect?)"
            }
            DropReason::Reward => "the reward plugin failed",
        }
    }
}

/// The demonstrations of a question set and why the others were dropped.
#[derive(Debug, Default)]
pub struct DemoSet {
    pub kept: Vec<Trajectory>,
    pub dropped: BTreeMap<DropReason, Vec<String>>,
}

impl DemoSet {
    /// Questions dropped in all.
    pub fn dropped_count(&self) -> usize {
        self.dropped.values().map(Vec::len).sum()
    }
}

/// One search of a demonstration: the generated turn that asks it and what it found.
struct Hop {
    turn: String,
    query: String,
    passages: Vec<Passage>,
}

/// Where the answer was found.
struct Grounding {
    answer: String,
    title: String,
    evidence: String,
    /// The evidence up to and including the answer's words, so that the answer ends it.
    quote: String,
}

/// Questions searched in one call.
const SEARCH_BATCH: usize = 64;

impl DemoBuilder<'_> {
    /// Builds the demonstrations of `questions` (indices into their set are kept as
    /// `example`); `progress` is called after each question.
    pub fn build(&self, questions: &[QaExample], mut progress: impl FnMut()) -> Result<DemoSet> {
        let search = self.plugins.search.as_ref().context("no search plugin")?;
        let mut set = DemoSet::default();
        for (chunk_index, chunk) in questions.chunks(SEARCH_BATCH).enumerate() {
            let queries: Vec<String> = chunk
                .iter()
                .map(|qa| self.first_queries(&qa.question)[0].clone())
                .collect();
            let results = match search.search(&queries, self.top_k) {
                Ok(lists) if lists.len() == queries.len() => lists.into_iter().map(Ok).collect(),
                Ok(lists) => vec![
                    Err(format!(
                        "{} result lists for {} queries",
                        lists.len(),
                        queries.len()
                    ));
                    queries.len()
                ],
                Err(error) => vec![Err(error.to_string()); queries.len()],
            };
            for (offset, (qa, first)) in chunk.iter().zip(results).enumerate() {
                let example = chunk_index * SEARCH_BATCH + offset;
                match self.one(qa, example, first)? {
                    Ok(trajectory) => set.kept.push(trajectory),
                    Err(reason) => set.dropped.entry(reason).or_default().push(qa.id.clone()),
                }
                progress();
            }
        }
        Ok(set)
    }

    /// The demonstration of one question, or why there is none.
    fn one(
        &self,
        qa: &QaExample,
        example: usize,
        first: Result<Vec<Passage>, String>,
    ) -> Result<Result<Trajectory, DropReason>> {
        let Ok((prompt_text, prompt_ids)) =
            render_prompt(self.plugins, self.tokenizer, self.context, &qa.question)
        else {
            return Ok(Err(DropReason::Prompt));
        };
        let Ok(passages) = first else {
            return Ok(Err(DropReason::Search));
        };
        // The first form's results came in the batch; the other forms are searched only
        // when it does not lead to the answer.
        let mut first = Some(passages);
        for query in self.first_queries(&qa.question) {
            let passages = match first.take() {
                Some(passages) => passages,
                None => match self.search(&query)? {
                    Some(passages) => passages,
                    None => return Ok(Err(DropReason::Search)),
                },
            };
            let found = match self.hops_to_answer(qa, query, passages)? {
                Ok(found) => found,
                Err(reason) => return Ok(Err(reason)),
            };
            if let Some((hops, grounding)) = found {
                return self.assemble(qa, example, prompt_text, prompt_ids, &hops, &grounding);
            }
        }
        Ok(Err(DropReason::NotGrounded))
    }

    /// The forms of a question's first query, filled and without repeats.
    fn first_queries(&self, question: &str) -> Vec<String> {
        let names = names(question).join(" ");
        let entities = if names.is_empty() { question } else { &names };
        let mut queries: Vec<String> = Vec::new();
        for form in &self.template.first_queries {
            let query = fill(
                form,
                &Fill {
                    question,
                    entities,
                    ..Fill::default()
                },
            );
            if !queries.contains(&query) {
                queries.push(query);
            }
        }
        queries
    }

    /// One search; None when the search plugin fails.
    fn search(&self, query: &str) -> Result<Option<Vec<Passage>>> {
        let search = self.plugins.search.as_ref().context("no search plugin")?;
        Ok(search
            .search(&[query.to_string()], self.top_k)
            .ok()
            .map(|mut lists| lists.pop().unwrap_or_default()))
    }

    /// The searches from a first query's results to the answer: none more when they hold it,
    /// else one for the first entity of theirs whose results do. None when neither works.
    #[allow(clippy::type_complexity)]
    fn hops_to_answer(
        &self,
        qa: &QaExample,
        query: String,
        passages: Vec<Passage>,
    ) -> Result<Result<Option<(Vec<Hop>, Grounding)>, DropReason>> {
        let turn = fill(
            &self.template.first_turn,
            &Fill {
                question: &qa.question,
                query: &query,
                ..Fill::default()
            },
        );
        let mut hops = vec![Hop {
            turn,
            query,
            passages,
        }];
        // The question's names link the first results to it, and an entity of a linked
        // passage links the second results.
        let question_names = names(&qa.question);
        if let Some(found) = ground(&hops[0].passages, &qa.golden_answers, &question_names) {
            return Ok(Ok(Some((hops, found))));
        }
        let linked: Vec<Passage> = hops[0]
            .passages
            .iter()
            .filter(|p| {
                question_names.is_empty()
                    || question_names.iter().any(|name| {
                        contains_answer(&p.title, name) || contains_answer(&p.text, name)
                    })
            })
            .cloned()
            .collect();
        for entity in entities(&linked, &qa.question)
            .into_iter()
            .take(self.max_entities)
        {
            let values = Fill {
                question: &qa.question,
                entity: &entity,
                ..Fill::default()
            };
            let query = fill(&self.template.follow_query, &values);
            let Some(passages) = self.search(&query)? else {
                return Ok(Err(DropReason::Search));
            };
            if let Some(found) =
                ground(&passages, &qa.golden_answers, std::slice::from_ref(&entity))
            {
                let turn = fill(
                    &self.template.follow_turn,
                    &Fill {
                        query: &query,
                        ..values
                    },
                );
                hops.push(Hop {
                    turn,
                    query,
                    passages,
                });
                return Ok(Ok(Some((hops, found))));
            }
        }
        Ok(Ok(None))
    }

    /// Tokenises the turns and observations, checks them with the parser and scores them.
    fn assemble(
        &self,
        qa: &QaExample,
        example: usize,
        prompt_text: String,
        prompt_ids: Vec<u32>,
        hops: &[Hop],
        grounding: &Grounding,
    ) -> Result<Result<Trajectory, DropReason>> {
        let parser = self.plugins.parser.as_ref().context("no parser plugin")?;
        let mut pieces: Vec<(SegmentKind, Vec<u32>)> = Vec::new();
        for (i, hop) in hops.iter().enumerate() {
            if !matches!(parser.parse(&hop.turn), Ok(Action::Search(q)) if q.trim() == hop.query.trim())
            {
                return Ok(Err(DropReason::ParserMismatch));
            }
            pieces.push((SegmentKind::Generated, self.tokenizer.encode(&hop.turn)?));
            let Ok(text) = parser.format_results(&hop.query, &hop.passages) else {
                return Ok(Err(DropReason::ParserMismatch));
            };
            let ids = cap_observation(self.tokenizer, &text, self.max_obs_tokens)?;
            // The last observation must still show the answer after the cap.
            if i + 1 == hops.len()
                && !contains_answer(&self.tokenizer.decode(&ids)?, &grounding.answer)
            {
                return Ok(Err(DropReason::AnswerCut));
            }
            pieces.push((SegmentKind::Observation, ids));
        }
        let answer_turn = fill(
            &self.template.answer_turn,
            &Fill {
                question: &qa.question,
                title: &grounding.title,
                evidence: &grounding.evidence,
                quote: &grounding.quote,
                answer: &grounding.answer,
                ..Fill::default()
            },
        );
        let read_back = match parser.parse(&answer_turn) {
            Ok(Action::Answer(answer)) => answer,
            _ => return Ok(Err(DropReason::ParserMismatch)),
        };
        if qa_scoring::metrics::exact_match(&read_back, &qa.golden_answers) < 1.0 {
            return Ok(Err(DropReason::ParserMismatch));
        }
        pieces.push((SegmentKind::Generated, self.tokenizer.encode(&answer_turn)?));
        let eos = self.template.end_with_eos;
        let response = assemble_response(self.tokenizer, pieces, eos)?;
        if response.ids.len() > self.max_response_tokens
            || prompt_ids.len() + response.ids.len() > self.context
        {
            return Ok(Err(DropReason::TooLong));
        }
        let text_end = response.ids.len() - usize::from(eos);
        let response_text = self.tokenizer.decode(&response.ids[..text_end])?;
        let finish = finish_of(eos, parser, &answer_turn)?;
        let turns = hops.len() as u32 + u32::from(matches!(finish, Finish::Stop(_)));
        let sample = RewardSample {
            question: qa.question.clone(),
            golden_answers: qa.golden_answers.clone(),
            response: response_text.clone(),
            finish: finish.clone(),
            num_searches: hops.len() as u32,
            metadata: qa.metadata.clone(),
        };
        let Ok(score) = self.plugins.reward()?.score(&sample) else {
            return Ok(Err(DropReason::Reward));
        };
        Ok(Ok(Trajectory {
            group: example,
            example,
            id: qa.id.clone(),
            sample: 0,
            question: qa.question.clone(),
            golden_answers: qa.golden_answers.clone(),
            prompt_text,
            prompt_ids,
            response_ids: response.ids,
            loss_mask: response.loss_mask,
            segments: response.segments,
            response_text,
            queries: hops.iter().map(|h| h.query.clone()).collect(),
            answer: Some(read_back),
            finish: finish.to_string(),
            turns,
            error: None,
            reward: Some(score.total),
            components: score.components,
            advantage: 0.0,
        }))
    }
}

/// Whether the normalised `answer` appears as whole words in the normalised `text`.
pub fn contains_answer(text: &str, answer: &str) -> bool {
    let answer = qa_scoring::normalize::normalize_answer(answer);
    if answer.is_empty() {
        return false;
    }
    let text = qa_scoring::normalize::normalize_answer(text);
    format!(" {text} ").contains(&format!(" {answer} "))
}

/// The first golden answer found in a passage that names one of `linked` (any passage when
/// `linked` is empty), with the passage's title and the sentence that holds it. Requiring
/// the link keeps out answers that a passage about something else mentions by chance.
fn ground(passages: &[Passage], golden: &[String], linked: &[String]) -> Option<Grounding> {
    let links = |p: &Passage| {
        linked.is_empty()
            || linked
                .iter()
                .any(|name| contains_answer(&p.title, name) || contains_answer(&p.text, name))
    };
    for answer in golden {
        for passage in passages.iter().filter(|p| links(p)) {
            if contains_answer(&passage.text, answer) {
                let evidence = sentences(&passage.text)
                    .into_iter()
                    .find(|s| contains_answer(s, answer))
                    .unwrap_or(passage.text.as_str());
                let evidence = evidence.trim();
                return Some(Grounding {
                    answer: answer.clone(),
                    title: passage.title.clone(),
                    evidence: evidence.to_string(),
                    quote: quote_to_answer(evidence, answer).to_string(),
                });
            }
        }
    }
    None
}

/// `sentence` cut after the first place where its words end with the answer's (trailing
/// punctuation dropped); the whole sentence when they never do.
fn quote_to_answer<'a>(sentence: &'a str, answer: &str) -> &'a str {
    let answer = qa_scoring::normalize::normalize_answer(answer);
    if answer.is_empty() {
        return sentence;
    }
    let ends = sentence
        .char_indices()
        .filter(|&(_, c)| c.is_whitespace())
        .map(|(i, _)| i)
        .chain([sentence.len()]);
    for end in ends {
        let prefix = sentence[..end].trim_end_matches(|c: char| c.is_ascii_punctuation());
        let words = qa_scoring::normalize::normalize_answer(prefix);
        if format!(" {words}").ends_with(&format!(" {answer}")) {
            return prefix;
        }
    }
    sentence
}

/// The sentences of a text (split after `.`, `!` or `?` followed by a space).
fn sentences(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let bytes = text.as_bytes();
    for i in 0..bytes.len() {
        if matches!(bytes[i], b'.' | b'!' | b'?') && bytes.get(i + 1) == Some(&b' ') {
            out.push(&text[start..=i]);
            start = i + 2;
        }
    }
    if start < text.len() {
        out.push(&text[start..]);
    }
    out
}

/// Entities named by the passages that the question does not name: their titles first, then
/// their capitalised names, in order, once.
pub fn entities(passages: &[Passage], question: &str) -> Vec<String> {
    let in_question = |name: &str| contains_answer(question, name);
    let mut found: Vec<String> = Vec::new();
    let titles = passages.iter().map(|p| p.title.clone());
    let named = passages.iter().flat_map(|p| names(&p.text));
    for name in titles.chain(named) {
        if !name.is_empty() && !in_question(&name) && !found.contains(&name) {
            found.push(name);
        }
    }
    found
}

/// Runs of capitalised words of a text, in order (a sentence's first word alone does not
/// count; a word ending a clause ends the name).
pub fn names(text: &str) -> Vec<String> {
    let capitalised = |w: &str| w.chars().next().is_some_and(char::is_uppercase);
    let mut out = Vec::new();
    for sentence in sentences(text) {
        let words: Vec<&str> = sentence.split_whitespace().collect();
        let mut i = 0;
        while i < words.len() {
            if !capitalised(words[i]) {
                i += 1;
                continue;
            }
            let start = i;
            while i < words.len() && capitalised(words[i]) {
                i += 1;
                if words[i - 1].ends_with([',', '.', ';', ':', '?', '!']) {
                    break;
                }
            }
            if start == 0 && i - start == 1 {
                continue;
            }
            let name = words[start..i]
                .join(" ")
                .trim_matches(|c: char| !c.is_alphanumeric())
                .to_string();
            if !name.is_empty() {
                out.push(name);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn passage(title: &str, text: &str) -> Passage {
        Passage {
            id: title.into(),
            title: title.into(),
            text: text.into(),
            score: 1.0,
        }
    }

    #[test]
    fn answers_are_found_as_whole_words() {
        assert!(contains_answer("He was born in 1867.", "1867"));
        assert!(!contains_answer("He was born in 18670.", "1867"));
        assert!(contains_answer("The Briel River flows by.", "briel river"));
        assert!(!contains_answer("anything", ""));
    }

    #[test]
    fn the_evidence_is_the_sentence_with_the_answer() {
        let passages = [passage(
            "Savor Foundry",
            "Savor Foundry is a workshop. It was founded by Brimon Dungalmon in 1790.",
        )];
        let found = ground(&passages, &["nope".into(), "1790".into()], &[]).unwrap();
        assert_eq!(found.answer, "1790");
        assert_eq!(found.title, "Savor Foundry");
        assert_eq!(
            found.evidence,
            "It was founded by Brimon Dungalmon in 1790."
        );
        assert_eq!(found.quote, "It was founded by Brimon Dungalmon in 1790");
        assert!(ground(&passages, &["Zelzelmere".into()], &[]).is_none());
        // A passage that does not name the linked entity does not count.
        assert!(ground(&passages, &["1790".into()], &["Zelkavale".into()]).is_none());
        assert!(ground(&passages, &["1790".into()], &["Brimon Dungalmon".into()]).is_some());
    }

    #[test]
    fn the_quote_ends_with_the_answer() {
        let sentence = "Saka Samiul was born in Sapywick in 1871, they say.";
        assert_eq!(
            quote_to_answer(sentence, "Sapywick"),
            "Saka Samiul was born in Sapywick"
        );
        assert_eq!(
            quote_to_answer(sentence, "1871"),
            "Saka Samiul was born in Sapywick in 1871"
        );
        assert_eq!(quote_to_answer(sentence, "saka samiul"), "Saka Samiul");
        // Whole words only; an answer the sentence lacks keeps the whole sentence.
        assert_eq!(quote_to_answer(sentence, "187"), sentence);
        assert_eq!(
            quote_to_answer("The bell, by hand.", "the bell"),
            "The bell"
        );
    }

    #[test]
    fn entities_skip_the_question_and_sentence_starts() {
        let passages = [
            passage(
                "Savor Foundry",
                "Savor Foundry is a workshop in Zelkavale. It was founded by Brimon Dungalmon, a smith.",
            ),
            passage("Zelkavale", "Zelkavale lies on the Briel River."),
        ];
        let found = entities(
            &passages,
            "In which town was the founder of Savor Foundry born?",
        );
        assert_eq!(found, vec!["Zelkavale", "Brimon Dungalmon", "Briel River"]);
        assert_eq!(
            names("Which river flows through Zelkavale?"),
            vec!["Zelkavale"]
        );
        assert_eq!(
            names("In what year was Mondun Monrenzel born?"),
            vec!["Mondun Monrenzel"]
        );
        assert!(names("what is it?").is_empty());
    }
}
