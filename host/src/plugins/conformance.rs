//! The built-in conformance suite of `host plugins check`: what every plugin of a kind must do,
//! whatever reference system it imitates.

use super::instance::Instance;
use super::judge::JudgePlugin;
use super::loader::LoadedPlugin;
use super::parser::ParserPlugin;
use super::prompt::PromptPlugin;
use super::reward::RewardPlugin;
use super::search::SearchPlugin;
use super::types::{Finish, Message, Passage, Rendered, RewardSample};

/// The outcome of one check.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Pass,
    /// Allowed, but probably not what the author wants.
    Warn(String),
    Fail(String),
}

/// One named check and its outcome.
#[derive(Debug, Clone)]
pub struct Check {
    pub name: &'static str,
    pub outcome: Outcome,
}

/// Runs the suite of the plugin's kind. `network` says whether the plugin reaches a server (a
/// search plugin's failing call then only warns: the server may simply not be running).
pub fn check(plugin: &LoadedPlugin, network: bool) -> Vec<Check> {
    match plugin {
        LoadedPlugin::Reward(p) => reward_checks(p),
        LoadedPlugin::Prompt(p) => prompt_checks(p),
        LoadedPlugin::Parser(p) => parser_checks(p),
        LoadedPlugin::Search(p) => search_checks(p, network),
        LoadedPlugin::Judge(p) => judge_checks(p, network),
    }
}

/// The name of the check that a plugin keeps no state between calls (see [`differ`]).
pub const STATELESS: &str =
    "answers the same call the same way twice, and on a fresh instance as on a used one";

/// Instances are pooled and serve calls in any order: an answer that changes between two calls,
/// or between a used instance and a fresh one, means the plugin keeps state between calls,
/// and a run would depend on which instance served which call (a resumed run would not
/// continue exactly).
fn differ<T: PartialEq + std::fmt::Debug>(
    used: &T,
    again: &T,
    fresh: &T,
    what: &str,
) -> Result<(), String> {
    if used != again {
        return Err(format!(
            "{used:?} then {again:?} for {what}: the plugin keeps state between calls (instances are pooled; see the instance-state rule in docs/plugins.md)"
        ));
    }
    if used != fresh {
        return Err(format!(
            "{used:?} on a used instance but {fresh:?} on a fresh one for {what}: the plugin keeps state between calls (instances are pooled; see the instance-state rule in docs/plugins.md)"
        ));
    }
    Ok(())
}

fn outcome(result: Result<(), String>) -> Outcome {
    match result {
        Ok(()) => Outcome::Pass,
        Err(message) => Outcome::Fail(message),
    }
}

fn sample(response: &str, golden: &[&str], finish: Finish) -> RewardSample {
    RewardSample {
        question: "What is the capital of France?".to_string(),
        golden_answers: golden.iter().map(|g| g.to_string()).collect(),
        response: response.to_string(),
        finish,
        num_searches: response.matches("</search>").count() as u32,
        metadata: None,
    }
}

const RESEARCH_CORRECT: &str = "<think> I should look it up. </think> <search> capital of France </search> <result>\n\"Paris\"\nParis is the capital of France.\n</result> <think> It is Paris. </think> <answer> The final answer is \\[ \\boxed{Paris} \\] </answer>";
const RESEARCH_WRONG: &str = "<think> I think it is Lyon. </think> <answer> The final answer is \\[ \\boxed{Lyon} \\] </answer>";
const SEARCHR1_CORRECT: &str = "<think> I know this. </think>\n<answer> Paris </answer>";
const SEARCHR1_WRONG: &str = "<think> I know this. </think>\n<answer> Lyon </answer>";

fn reward_checks(plugin: &RewardPlugin) -> Vec<Check> {
    let long = "<think> ".to_string() + &"étude 数学 ".repeat(10_000) + "</think>";
    let well_formed = [
        sample(RESEARCH_CORRECT, &["Paris"], Finish::Eos),
        sample(
            SEARCHR1_CORRECT,
            &["Paris"],
            Finish::Stop("</answer>".into()),
        ),
        sample(RESEARCH_WRONG, &["Paris", "City of Light"], Finish::Eos),
        sample("", &["Paris"], Finish::Eos),
        sample(&long, &["Paris"], Finish::Length),
        sample(
            "Ünïcödé ✓ \u{1f600} <answer>\u{0}</answer>",
            &["yes"],
            Finish::MaxTurns,
        ),
    ];
    let mut checks = vec![Check {
        name: "scores well-formed samples with finite rewards",
        outcome: outcome(
            well_formed
                .iter()
                .try_for_each(|s| plugin.score(s).map(|_| ()).map_err(|e| format!("{e:#}"))),
        ),
    }];
    checks.push(Check {
        name: STATELESS,
        outcome: outcome((|| {
            for s in &well_formed[..3] {
                let used = plugin.score(s).map_err(|e| e.to_string())?;
                let again = plugin.score(s).map_err(|e| e.to_string())?;
                let fresh = plugin
                    .score_in(Instance::Fresh, s)
                    .map_err(|e| e.to_string())?;
                differ(&used, &again, &fresh, "the same sample")?;
            }
            Ok(())
        })()),
    });
    checks.push(Check {
        name: "survives samples without golden answers",
        outcome: match plugin.score(&sample(RESEARCH_CORRECT, &[], Finish::Eos)) {
            Ok(_) => Outcome::Pass,
            // Refusing such a sample is fine; trapping on it is not.
            Err(e) if matches!(e.cause, super::error::Failure::Guest(_)) => Outcome::Pass,
            Err(e) => Outcome::Fail(e.to_string()),
        },
    });
    let best = |responses: [&RewardSample; 2]| -> Result<f64, String> {
        let mut best = f64::NEG_INFINITY;
        for s in responses {
            best = best.max(plugin.score(s).map_err(|e| e.to_string())?.total);
        }
        Ok(best)
    };
    let correct = [
        &sample(RESEARCH_CORRECT, &["Paris"], Finish::Eos),
        &sample(
            SEARCHR1_CORRECT,
            &["Paris"],
            Finish::Stop("</answer>".into()),
        ),
    ];
    let wrong = [
        &sample(RESEARCH_WRONG, &["Paris"], Finish::Eos),
        &sample(SEARCHR1_WRONG, &["Paris"], Finish::Stop("</answer>".into())),
    ];
    checks.push(Check {
        name: "rewards a correct answer above a wrong one",
        outcome: match (best(correct), best(wrong)) {
            (Ok(good), Ok(bad)) if good > bad => Outcome::Pass,
            (Ok(good), Ok(bad)) => Outcome::Warn(format!(
                "a correct answer scored {good}, a wrong one {bad} (in the ReSearch and Search-R1 formats)"
            )),
            (Err(e), _) | (_, Err(e)) => Outcome::Fail(e),
        },
    });
    checks
}

fn prompt_checks(plugin: &PromptPlugin) -> Vec<Check> {
    let question = "Who wrote the novel Les Misérables?";
    let contains_question = |rendered: &Rendered| match rendered {
        Rendered::Text(text) => text.contains(question),
        Rendered::Chat(messages) => messages.iter().any(|m| m.content.contains(question)),
    };
    let mut checks = vec![Check {
        name: "renders a prompt that contains the question",
        outcome: outcome(match plugin.render(question) {
            Ok(rendered) if contains_question(&rendered) => Ok(()),
            Ok(rendered) => Err(format!("the question is not in the prompt: {rendered:?}")),
            Err(e) => Err(format!("{e:#}")),
        }),
    }];
    checks.push(Check {
        name: STATELESS,
        outcome: outcome((|| {
            let used = plugin.render(question).map_err(|e| e.to_string())?;
            let again = plugin.render(question).map_err(|e| e.to_string())?;
            let fresh = plugin
                .render_in(Instance::Fresh, question)
                .map_err(|e| e.to_string())?;
            differ(&used, &again, &fresh, "the same question")
        })()),
    });
    let odd = [
        "",
        "   ",
        "¿Qué es 東京? \u{1f5fc}",
        &"very long question ".repeat(2_000),
    ];
    checks.push(Check {
        name: "survives empty, unicode and long questions",
        outcome: outcome(odd.iter().try_for_each(|q| match plugin.render(q) {
            Ok(_) => Ok(()),
            Err(e) if matches!(e.cause, super::error::Failure::Guest(_)) => Ok(()),
            Err(e) => Err(e.to_string()),
        })),
    });
    checks
}

fn passages() -> Vec<Passage> {
    vec![
        Passage::from_contents(
            "1",
            "\"Paris\"\nParis is the capital and largest city of France.",
            0.9,
        ),
        Passage::from_contents(
            "2",
            "\"Lyon\"\nLyon is the third-largest city of France.",
            0.5,
        ),
        Passage::from_contents("3", "A passage without a title line.", 0.1),
    ]
}

fn parser_checks(plugin: &ParserPlugin) -> Vec<Check> {
    let stops = plugin.stop_sequences();
    let mut checks = vec![Check {
        name: "declares its stop sequences",
        outcome: outcome(match &stops {
            Ok(list) if list.is_empty() => {
                Err("no stop sequences: turns would only end at EOS".into())
            }
            Ok(_) => Ok(()),
            Err(e) => Err(e.to_string()),
        }),
    }];
    let stops = stops.unwrap_or_default();
    let mut turns: Vec<String> = vec![
        String::new(),
        "plain text with no tags".into(),
        "<search> capital of France </search>".into(),
        "<answer> Paris </answer>".into(),
        "<think> \\boxed{ </think> <answer>".into(),
        "Ünïcödé \u{1f600} </search>".into(),
        "x ".repeat(50_000),
    ];
    for stop in &stops {
        turns.push(stop.clone());
        turns.push(format!("<think> thinking </think> {stop}"));
    }
    checks.push(Check {
        name: "parses any turn without failing",
        outcome: outcome(
            turns
                .iter()
                .try_for_each(|t| plugin.parse(t).map(|_| ()).map_err(|e| e.to_string())),
        ),
    });
    checks.push(Check {
        name: STATELESS,
        outcome: outcome(turns[..6].iter().try_for_each(|t| {
            let used = plugin.parse(t).map_err(|e| e.to_string())?;
            let again = plugin.parse(t).map_err(|e| e.to_string())?;
            let fresh = plugin
                .parse_in(Instance::Fresh, t)
                .map_err(|e| e.to_string())?;
            differ(&used, &again, &fresh, &format!("the turn {t:?}"))?;
            let passages = passages();
            let used = plugin
                .format_results(t, &passages)
                .map_err(|e| e.to_string())?;
            let again = plugin
                .format_results(t, &passages)
                .map_err(|e| e.to_string())?;
            let fresh = plugin
                .format_results_in(Instance::Fresh, t, &passages)
                .map_err(|e| e.to_string())?;
            differ(&used, &again, &fresh, &format!("the results of {t:?}"))
        })),
    });
    let passages = passages();
    checks.push(Check {
        name: "shows every passage's text in the formatted results",
        outcome: outcome(
            match plugin.format_results("capital of France", &passages) {
                Ok(text) => match passages.iter().find(|p| !text.contains(&p.text)) {
                    None => Ok(()),
                    Some(missing) => {
                        Err(format!("passage {} is missing from {text:?}", missing.id))
                    }
                },
                Err(e) => Err(e.to_string()),
            },
        ),
    });
    checks.push(Check {
        name: "formats an empty result list",
        outcome: outcome(
            plugin
                .format_results("nothing", &[])
                .map(|_| ())
                .map_err(|e| e.to_string()),
        ),
    });
    checks
}

fn search_checks(plugin: &SearchPlugin, network: bool) -> Vec<Check> {
    let queries = vec!["capital of France".to_string(), "largest city".to_string()];
    let live = plugin.search(&queries, 2);
    if let (true, Err(error)) = (network, &live) {
        return vec![Check {
            name: "answers a batch of queries",
            outcome: Outcome::Warn(format!(
                "its server did not answer (is it running?): {error}"
            )),
        }];
    }
    vec![
        Check {
            name: "answers a batch of queries, one list each, at most top-k",
            outcome: outcome(live.map(|_| ()).map_err(|e| e.to_string())),
        },
        Check {
            name: "answers an empty batch with no lists",
            outcome: outcome(match plugin.search(&[], 3) {
                Ok(lists) if lists.is_empty() => Ok(()),
                Ok(lists) => Err(format!("{} lists for no queries", lists.len())),
                Err(e) => Err(e.to_string()),
            }),
        },
        Check {
            name: "respects top-k = 1",
            outcome: outcome(
                plugin
                    .search(&queries[..1], 1)
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
            ),
        },
    ]
}

fn judge_checks(plugin: &JudgePlugin, network: bool) -> Vec<Check> {
    let prompt = |text: &str| {
        vec![Message {
            role: "user".into(),
            content: text.into(),
        }]
    };
    let prompts = vec![prompt("Say yes."), prompt("Say no.")];
    let live = plugin.complete(&prompts, 8);
    if let (true, Err(error)) = (network, &live) {
        return vec![Check {
            name: "completes a batch of prompts",
            outcome: Outcome::Warn(format!(
                "its endpoint did not answer (is it running?): {error}"
            )),
        }];
    }
    vec![
        Check {
            name: "completes a batch of prompts, one text each",
            outcome: outcome(live.map(|_| ()).map_err(|e| e.to_string())),
        },
        Check {
            name: "answers an empty batch with no texts",
            outcome: outcome(match plugin.complete(&[], 8) {
                Ok(texts) if texts.is_empty() => Ok(()),
                Ok(texts) => Err(format!("{} texts for no prompts", texts.len())),
                Err(e) => Err(e.to_string()),
            }),
        },
    ]
}

/// The passages of the small index that `host plugins check` gives search plugins.
pub fn fixture_passages() -> Vec<Passage> {
    passages()
}
