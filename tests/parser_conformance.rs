//! Tag parser (both dialects) and prompt templates, byte for byte as REFERENCE.md says.

use crate::common;

use research_host::plugins::{Action, Message, Passage, Rendered};

fn passages() -> Vec<Passage> {
    vec![
        Passage::from_contents("7", "\"Paris\"\nParis is the capital of France.", 0.9),
        Passage::from_contents("8", "\"Lyon\"\nLyon is a city.\nIt has two rivers.", 0.5),
        Passage::from_contents("9", "Untitled text only.", 0.1),
    ]
}

#[test]
fn research_dialect() {
    let parser = common::parser("tag-parser", &[("dialect", "research")]);
    assert_eq!(parser.stop_sequences().unwrap(), ["</search>"]);
    // Query: between the last <search> and </search>, stripped.
    let cases = [
        (
            "<think> t </think> <search>  capital of France \n</search>",
            Action::Search("capital of France".into()),
        ),
        (
            "<search> a </search> <result> r </result> <search> b </search>",
            Action::Search("b".into()),
        ),
        (
            "<search> one <search> two </search>",
            Action::Search("two".into()),
        ),
        ("no opening tag </search>", Action::Search(String::new())),
        ("<search></search>", Action::Search(String::new())),
        // A turn that ended at EOS: the boxed answer, or the span when there is no box.
        (
            "<think> t </think> <answer> The final answer is \\[ \\boxed{Paris} \\] </answer>",
            Action::Answer("Paris".into()),
        ),
        (
            "<answer> \\boxed{a{b}} </answer>",
            Action::Answer("a{b}".into()),
        ),
        (
            "<answer> plain words </answer>",
            Action::Answer("plain words".into()),
        ),
        ("<think> still thinking", Action::Continue),
        ("", Action::Continue),
    ];
    for (turn, expected) in cases {
        assert_eq!(parser.parse(turn).unwrap(), expected, "turn {turn:?}");
    }
    let formatted = parser.format_results("q", &passages()).unwrap();
    assert_eq!(
        formatted,
        " <result>\n\"Paris\"\nParis is the capital of France.\n\n\"Lyon\"\nLyon is a city.\nIt has two rivers.\n\nUntitled text only.\n</result>"
    );
    assert_eq!(
        parser.format_results("q", &[]).unwrap(),
        " <result>\n\n</result>"
    );
}

const INVALID: &str = "\nMy previous action is invalid. If I want to search, I should put the query between <search> and </search>. If I want to give the final answer, I should put the answer between <answer> and </answer>. Let me try again.\n";

#[test]
fn searchr1_dialect() {
    let parser = common::parser("tag-parser", &[("dialect", "searchr1")]);
    assert_eq!(parser.stop_sequences().unwrap(), ["</search>", "</answer>"]);
    let cases = [
        (
            "<think> t </think>\n<search> capital of France </search>",
            Action::Search("capital of France".into()),
        ),
        ("<answer> Paris </answer>", Action::Answer("Paris".into())),
        (
            "<answer>\nmulti\nline\n</answer>",
            Action::Answer("multi\nline".into()),
        ),
        (
            "<search> q </search> <answer> a </answer>",
            Action::Search("q".into()),
        ),
        (
            "<answer> a </answer> <search> q </search>",
            Action::Answer("a".into()),
        ),
        (
            "<search> never closed <answer> a </answer>",
            Action::Answer("a".into()),
        ),
        (
            "<search> mismatched </answer>",
            Action::Invalid(INVALID.into()),
        ),
        ("just text", Action::Invalid(INVALID.into())),
        ("", Action::Invalid(INVALID.into())),
    ];
    for (turn, expected) in cases {
        assert_eq!(parser.parse(turn).unwrap(), expected, "turn {turn:?}");
    }
    let formatted = parser.format_results("q", &passages()).unwrap();
    assert_eq!(
        formatted,
        "\n\n<information>Doc 1(Title: \"Paris\") Paris is the capital of France.\nDoc 2(Title: \"Lyon\") Lyon is a city.\nIt has two rivers.\nDoc 3(Title: Untitled text only.)</information>\n\n"
    );
    assert_eq!(
        parser.format_results("q", &[]).unwrap(),
        "\n\n<information></information>\n\n"
    );
}

#[test]
fn an_unknown_dialect_fails_at_load_with_the_plugin_and_setting_named() {
    let shipped = research_host::plugins::discover(&common::plugins_dir()).unwrap();
    let tag_parser = shipped
        .iter()
        .find(|p| p.manifest.name == "tag-parser")
        .unwrap();
    let overrides = std::collections::BTreeMap::from([("dialect".into(), "klingon".into())]);
    let error = match common::host().load(tag_parser, &overrides) {
        Ok(_) => panic!("tag-parser loaded with dialect = klingon"),
        Err(error) => format!("{error:#}"),
    };
    assert!(error.contains("tag-parser"), "{error}");
    assert!(error.contains("`init`"), "{error}");
    assert!(
        error.contains("config `dialect` must be one of research, searchr1, not `klingon`"),
        "{error}"
    );
    // The plugin is still usable with a good setting in the same process.
    let good = common::parser("tag-parser", &[]);
    assert_eq!(good.stop_sequences().unwrap(), ["</search>"]);
}

const RESEARCH_SYSTEM: &str = "You are a helpful assistant that can solve the given question step by step with the help of the wikipedia search tool. Given a question, you need to first think about the reasoning process in the mind and then provide the answer. During thinking, you can invoke the wikipedia search tool to search for fact information about specific topics if needed. The reasoning process and answer are enclosed within <think> </think> and <answer> </answer> tags respectively, and the search query and result are enclosed within <search> </search> and <result> </result> tags respectively. For example, <think> This is the reasoning process. </think> <search> search query here </search> <result> search result here </result> <think> This is the reasoning process. </think> <answer> The final answer is \\[ \\boxed{answer here} \\] </answer>. In the last part of the answer, the final exact answer is enclosed within \\boxed{} with latex format.";

#[test]
fn research_prompts() {
    let instruct = common::prompt("research-prompt", &[]);
    assert_eq!(
        instruct.render("Who wrote Hamlet?").unwrap(),
        Rendered::Chat(vec![
            Message {
                role: "system".into(),
                content: RESEARCH_SYSTEM.into()
            },
            Message {
                role: "user".into(),
                content: "Who wrote Hamlet?".into()
            },
        ])
    );
    let base = common::prompt("research-prompt", &[("mode", "base")]);
    let expected = "A conversation between User and Assistant. The user asks a question, and the assistant solves it. The assistant first thinks about the reasoning process in the mind and then provides the user with the answer. During thinking, the assistant can invoke the wikipedia search tool to search for fact information about specific topics if needed. The reasoning process and answer are enclosed within <think> </think> and <answer> </answer> tags respectively, and the search query and result are enclosed within <search> </search> and <result> </result> tags respectively. For example, <think> This is the reasoning process. </think> <search> search query here </search> <result> search result here </result> <think> This is the reasoning process. </think> <answer> The final answer is \\[ \\boxed{answer here} \\] </answer>. In the last part of the answer, the final exact answer is enclosed within \\boxed{} with latex format. User: Who wrote Hamlet?. Assistant:";
    assert_eq!(
        base.render("Who wrote Hamlet?").unwrap(),
        Rendered::Text(expected.into())
    );
}

#[test]
fn searchr1_prompt() {
    let prompt = common::prompt("searchr1-prompt", &[]);
    let expected = "Answer the given question. You must conduct reasoning inside <think> and </think> first every time you get new information. After reasoning, if you find you lack some knowledge, you can call a search engine by <search> query </search> and it will return the top searched results between <information> and </information>. You can search as many times as your want. If you find no further external knowledge needed, you can directly provide the answer inside <answer> and </answer>, without detailed illustrations. For example, <answer> Beijing </answer>. Question: who wrote hamlet?";
    for question in ["  who wrote hamlet ", "who wrote hamlet?"] {
        assert_eq!(
            prompt.render(question).unwrap(),
            Rendered::Chat(vec![Message {
                role: "user".into(),
                content: expected.into()
            }])
        );
    }
}

#[test]
fn local_search_goes_through_the_hosts_retriever() {
    // Without an index, local-search reports that clearly instead of trapping.
    let plugin = common::search("local-search", &[]);
    let error = plugin
        .search(&["anything".into()], 3)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("local-search") && error.contains("no index"),
        "{error}"
    );
}
