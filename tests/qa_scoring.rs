//! Unit tests of qa-scoring (the scoring rules the reward and parser plugins compile to Wasm),
//! run natively.

mod text {
    use qa_scoring::text::*;

    #[test]
    fn split_matches_python() {
        let parts: Vec<_> = py_split(" a\u{1c}b\u{a0}c\u{3000}d\t\n").collect();
        assert_eq!(parts, ["a", "b", "c", "d"]);
        assert_eq!(py_strip("\u{1f} x \u{2028}"), "x");
    }

    #[test]
    fn word_chars_match_python() {
        for c in ['a', 'Z', '0', '_', 'é', 'ß', '中', '²', 'Ⅳ'] {
            assert!(is_py_word_char(c), "{c:?}");
        }
        for c in [' ', '-', '\u{301}', '\u{24b6}', '.', '€'] {
            assert!(!is_py_word_char(c), "{c:?}");
        }
    }
}

mod normalize {
    use qa_scoring::normalize::normalize_answer;

    #[test]
    fn squad_rules() {
        assert_eq!(normalize_answer("The  Eiffel-Tower!"), "eiffeltower");
        assert_eq!(normalize_answer("a an the"), "");
        assert_eq!(normalize_answer("Theatre and a cat"), "theatre and cat");
        assert_eq!(normalize_answer("  ÉCOLE   Normale\u{a0}"), "école normale");
        assert_eq!(normalize_answer("the_end"), "theend");
        assert_eq!(normalize_answer("the–end"), "–end");
    }
}

mod metrics {
    use qa_scoring::metrics::*;

    fn golden(answers: &[&str]) -> Vec<String> {
        answers.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn f1_is_max_over_golden_answers() {
        let scores = token_scores("Paris France", &golden(&["London", "Paris"]));
        assert!((scores.f1 - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(scores.precision, 0.5);
        assert_eq!(scores.recall, 1.0);
    }

    #[test]
    fn yes_no_mismatch_scores_zero() {
        assert_eq!(f1("yes", &golden(&["no"])), 0.0);
        assert_eq!(f1("no", &golden(&["no way"])), 0.0);
        assert_eq!(f1("Yes.", &golden(&["yes"])), 1.0);
    }

    #[test]
    fn repeated_tokens_count_once_each() {
        let scores = token_scores("the cat cat", &golden(&["cat"]));
        assert_eq!(scores.precision, 0.5);
        assert_eq!(scores.recall, 1.0);
    }

    #[test]
    fn em_and_substring() {
        assert_eq!(exact_match("The Beatles", &golden(&["beatles"])), 1.0);
        assert_eq!(exact_match("Beatles band", &golden(&["beatles"])), 0.0);
        assert_eq!(substring_match("Beatles band", &golden(&["beatles"])), 1.0);
    }
}

mod research {
    use qa_scoring::research::*;

    #[test]
    fn boxed_extraction() {
        assert_eq!(boxed_answer("\\boxed{a{b}c}").as_deref(), Some("a{b}c"));
        assert_eq!(
            boxed_answer("\\boxed{x} then \\boxed{y}").as_deref(),
            Some("y")
        );
        assert_eq!(
            boxed_answer("\\boxed Paris$ tail").as_deref(),
            Some("Paris")
        );
        assert_eq!(boxed_answer("\\boxed{open"), None);
        assert_eq!(boxed_answer("\\fbox{x}"), None);
        assert_eq!(boxed_answer("nothing"), None);
    }

    #[test]
    fn the_reference_reads_a_response_up_to_the_assistant_marker() {
        let marker = Some("<|im_start|>assistant\n");
        assert_eq!(
            as_reference_reads("a <|im_start|>assistant\nb", true, marker),
            ("a ", false)
        );
        // The first marker cuts; without one, or with an empty one, the whole response and
        // its EOS stand.
        assert_eq!(
            as_reference_reads(
                "<|im_start|>assistant\nx<|im_start|>assistant\n",
                true,
                marker
            ),
            ("", false)
        );
        assert_eq!(as_reference_reads("a b", true, marker), ("a b", true));
        assert_eq!(
            as_reference_reads("a <|im_start|>assistant\nb", true, None),
            ("a <|im_start|>assistant\nb", true)
        );
        assert_eq!(as_reference_reads("a", false, Some("")), ("a", false));
    }

    #[test]
    fn query_rule() {
        assert_eq!(extract_query("<search> a </search>").as_deref(), Some("a"));
        assert_eq!(extract_query("x </search>").as_deref(), Some(""));
        assert_eq!(extract_query("no end"), None);
    }
}

mod searchr1 {
    use qa_scoring::searchr1::*;

    #[test]
    fn valid_sequences() {
        assert!(is_valid_sequence("<think>x</think> <answer>y</answer>"));
        assert!(is_valid_sequence(
            "<think>a</think><search>q</search>\n<information>d</information><think>b</think><answer>c</answer>\n"
        ));
        assert!(!is_valid_sequence("<think>a</think>junk<answer>c</answer>"));
        assert!(!is_valid_sequence("<answer>c</answer>"));
        assert!(!is_valid_sequence(
            "<think>a</think><answer>c</answer> trailing"
        ));
        assert!(!is_valid_sequence(
            "<think>a</think><search>q</search><information>d</information><answer>c</answer>"
        ));
    }

    #[test]
    fn first_action_wins() {
        assert_eq!(
            parse_turn("<answer> x </answer><search>q</search>"),
            TurnAction::Answer("x".into())
        );
        assert_eq!(
            parse_turn("<search>open <answer>a</answer>"),
            TurnAction::Answer("a".into())
        );
        assert_eq!(parse_turn("nothing"), TurnAction::Invalid);
    }

    #[test]
    fn last_answer_wins() {
        assert_eq!(
            last_answer("<answer>a</answer> <answer> b </answer>").as_deref(),
            Some("b")
        );
        assert_eq!(last_answer("<answer>a"), None);
    }
}
