#!/usr/bin/env python3
"""Reference reward functions, as the ReSearch and Search-R1 Python code computes them, and the
conformance cases of our reward plugins.

    python3 tests/parity/reward_reference.py generate   # (re)write tests/data/*.cases.jsonl
    python3 tests/parity/reward_reference.py check      # recompute every expected_total

The Rust test `reward_conformance` scores the same files through the compiled plugins, so a
passing test means the plugins agree with these reference functions case by case.
"""
import json
import re
import string
import sys
from collections import Counter
from pathlib import Path

DATA = Path(__file__).resolve().parent.parent / "data"


# ---- shared: SQuAD normalisation --------------------------------------------------------------
def normalize_answer(s):
    def remove_articles(text):
        return re.sub(r"\b(a|an|the)\b", " ", text)

    def white_space_fix(text):
        return " ".join(text.split())

    def remove_punc(text):
        exclude = set(string.punctuation)
        return "".join(ch for ch in text if ch not in exclude)

    return white_space_fix(remove_articles(remove_punc(s.lower())))


# ---- ReSearch (Agent-RL/ReSearch) -------------------------------------------------------------
def get_f1_score(prediction, ground_truths):
    final = {"f1": 0, "precision": 0, "recall": 0}
    for ground_truth in ground_truths:
        p = normalize_answer(prediction)
        g = normalize_answer(ground_truth)
        if p in ["yes", "no", "noanswer"] and p != g:
            continue
        if g in ["yes", "no", "noanswer"] and p != g:
            continue
        pt, gt = p.split(), g.split()
        common = Counter(pt) & Counter(gt)
        same = sum(common.values())
        if same == 0:
            continue
        precision = same / len(pt)
        recall = same / len(gt)
        f1 = 2 * precision * recall / (precision + recall)
        final["f1"] = max(f1, final["f1"])
    return final["f1"]


def validate_format(text):
    if text.count("<think>") != text.count("</think>"):
        return False
    if text.count("<think>") == 0 or text.count("</think>") == 0:
        return False
    if text.count("<answer>") != 1 or text.count("</answer>") != 1:
        return False
    current_pos = 0
    while True:
        search_pos = text.find("<search>", current_pos)
        if search_pos == -1:
            break
        result_pos = text.find("<result>", search_pos)
        search_end_pos = text.find("</search>", search_pos)
        result_end_pos = text.find("</result>", result_pos)
        if -1 in (result_pos, search_end_pos, result_end_pos):
            return False
        if not (search_pos < search_end_pos < result_pos < result_end_pos):
            return False
        current_pos = result_end_pos
    answer_start = text.find("<answer>")
    answer_end = text.find("</answer>")
    if answer_start > answer_end:
        return False
    answer_content = text[answer_start:answer_end]
    if "\\boxed{" not in answer_content or "}" not in answer_content:
        return False
    return True


def extract_answer(text):
    match = re.search(r"<answer>(.*?)</answer>", text.strip(), re.DOTALL)
    return match.group(1) if match else None


def last_boxed_only_string(string):
    idx = string.rfind("\\boxed")
    if "\\boxed " in string:
        return "\\boxed " + string.split("\\boxed ")[-1].split("$")[0]
    if idx < 0:
        idx = string.rfind("\\fbox")
        if idx < 0:
            return None
    i = idx
    right_brace_idx = None
    num_left_braces_open = 0
    while i < len(string):
        if string[i] == "{":
            num_left_braces_open += 1
        if string[i] == "}":
            num_left_braces_open -= 1
            if num_left_braces_open == 0:
                right_brace_idx = i
                break
        i += 1
    return None if right_brace_idx is None else string[idx : right_brace_idx + 1]


def remove_boxed(s):
    if "\\boxed " in s:
        left = "\\boxed "
        assert s[: len(left)] == left
        return s[len(left) :]
    left = "\\boxed{"
    assert s[: len(left)] == left
    assert s[-1] == "}"
    return s[len(left) : -1]


EOS = "<|im_end|>"


def research_score(response, golden, finish):
    """`compute_score` on prompt + response (+ EOS text when finish is eos)."""
    solution = "<|im_start|>assistant\n" + response + (EOS if finish == "eos" else "")
    response = solution.split("<|im_start|>assistant\n")[1]
    if not validate_format(response):
        return 0.0
    if response.endswith(EOS):
        response = response[: -len(EOS)]
    else:
        return 0.0
    answer_part = extract_answer(response)
    if answer_part is None:
        return 0.0
    try:
        answer = remove_boxed(last_boxed_only_string(answer_part))
    except Exception:
        return 0.0
    f1 = get_f1_score(answer, golden)
    return f1 if f1 > 0 else 0.1


# ---- Search-R1 (PeterGriffinJin/Search-R1) ----------------------------------------------------
def em_check(prediction, golden_answers):
    p = normalize_answer(prediction)
    return 1 if any(normalize_answer(g) == p for g in golden_answers) else 0


def extract_solution(response):
    # The reference scores prompt + response and needs two matches because its prompt holds
    # two; we score the response only, so one match is enough (REFERENCE.md).
    matches = list(re.finditer(r"<answer>(.*?)</answer>", response, re.DOTALL))
    if not matches:
        return None
    return matches[-1].group(1).strip()


def is_valid_sequence(content):
    for tag in ["think", "search", "information", "answer"]:
        if len(re.findall(f"<{tag}>", content)) != len(re.findall(f"</{tag}>", content)):
            return False
    parts = re.split(r"(</?(?:think|search|information|answer)>)", content)
    state = "start"
    for part in parts:
        if not part.strip():
            continue
        if re.match(r"</?(?:think|search|information|answer)>", part):
            if part == "<think>" and state in ["start", "information"]:
                state = "in_think"
            elif part == "</think>" and state == "in_think":
                state = "after_think"
            elif part == "<search>" and state == "after_think":
                state = "in_search"
            elif part == "</search>" and state == "in_search":
                state = "after_search"
            elif part == "<information>" and state == "after_search":
                state = "in_information"
            elif part == "</information>" and state == "in_information":
                state = "information"
            elif part == "<answer>" and state == "after_think":
                state = "in_answer"
            elif part == "</answer>" and state == "in_answer":
                state = "end"
            else:
                return False
        else:
            if state in ["in_think", "in_search", "in_information", "in_answer"]:
                pass
            elif state in ["start", "after_think", "after_search", "information"]:
                if part.strip():
                    return False
            else:
                return False
    return state == "end"


def searchr1_score(response, golden, fmt):
    answer = extract_solution(response)
    if not fmt:
        return float(em_check(answer, golden)) if answer is not None else 0.0
    valid = is_valid_sequence(response)
    structure, final = 0.2, 0.1
    if answer is None:
        return structure if valid else 0.0
    if em_check(answer, golden):
        return 1.0 if valid else 1.0 - structure
    return structure if valid else final


# ---- cases -----------------------------------------------------------------------------------
def rs(answer, think="<think> reasoning </think>", extra=""):
    """A ReSearch-style response with `answer` inside the answer tags."""
    return f"{think} {extra}<answer> The final answer is \\[ {answer} \\] </answer>"


SEARCH = '<search> capital of France </search> <result>\n"Paris"\nParis is the capital.\n</result> '

RESEARCH_CASES = [
    ("exact", rs("\\boxed{Paris}"), ["Paris"], "eos"),
    ("case-insensitive", rs("\\boxed{PARIS}"), ["paris"], "eos"),
    ("punctuation", rs("\\boxed{Paris!?}"), ["Paris"], "eos"),
    ("articles", rs("\\boxed{The Beatles}"), ["Beatles"], "eos"),
    ("article-inside-word", rs("\\boxed{Theatre}"), ["Theatre"], "eos"),
    ("whitespace", rs("\\boxed{  New \t York  }"), ["New York"], "eos"),
    ("unicode-accent", rs("\\boxed{École Normale}"), ["école normale"], "eos"),
    ("unicode-greek-final-sigma", rs("\\boxed{ΟΔΟΣ}"), ["οδος"], "eos"),
    ("unicode-cjk", rs("\\boxed{東京 都}"), ["東京"], "eos"),
    ("unicode-nbsp", rs("\\boxed{New\u00a0York}"), ["New York"], "eos"),
    ("python-space-x1c", rs("\\boxed{New\u001cYork}"), ["New York"], "eos"),
    ("partial-f1", rs("\\boxed{Paris France}"), ["Paris"], "eos"),
    ("partial-f1-recall", rs("\\boxed{Barack Obama}"), ["Barack Hussein Obama"], "eos"),
    ("repeated-tokens", rs("\\boxed{cat cat}"), ["cat"], "eos"),
    ("multiple-golden-best", rs("\\boxed{City of Light}"), ["Paris", "City of Light"], "eos"),
    ("multiple-golden-partial", rs("\\boxed{light city}"), ["Paris", "City of Light"], "eos"),
    ("wrong-answer-floor", rs("\\boxed{Lyon}"), ["Paris"], "eos"),
    ("yes-yes", rs("\\boxed{Yes}"), ["yes"], "eos"),
    ("yes-no-mismatch", rs("\\boxed{yes}"), ["no"], "eos"),
    ("no-vs-phrase", rs("\\boxed{no}"), ["no way"], "eos"),
    ("noanswer", rs("\\boxed{noanswer}"), ["no answer"], "eos"),
    ("empty-boxed", rs("\\boxed{}"), ["Paris"], "eos"),
    ("nested-braces", rs("\\boxed{\\text{Paris}}"), ["textParis"], "eos"),
    ("nested-braces-frac", rs("\\boxed{\\frac{1}{2}}"), ["frac12"], "eos"),
    ("boxed-space", "<think> t </think> <answer> \\boxed Paris$ is it </answer>", ["Paris"], "eos"),
    ("boxed-space-wins", "<think> t </think> <answer> \\boxed{Lyon} then \\boxed Paris </answer>", ["Paris"], "eos"),
    ("several-boxed-last", rs("\\boxed{Lyon} no, \\boxed{Paris}"), ["Paris"], "eos"),
    ("unclosed-brace", rs("\\boxed{Paris} and \\boxed{Lyon"), ["Paris"], "eos"),
    ("fbox-only", "<think> t </think> <answer> \\boxed{ \\fbox{Paris} } </answer>", ["Paris"], "eos"),
    ("missing-answer", "<think> I know it: \\boxed{Paris} </think>", ["Paris"], "eos"),
    ("two-answers", rs("\\boxed{Paris}") + " <answer> \\boxed{Paris} </answer>", ["Paris"], "eos"),
    ("answer-close-before-open", "<think> t </think> </answer> \\boxed{Paris} <answer>", ["Paris"], "eos"),
    ("no-boxed-in-answer", "<think> t </think> <answer> Paris </answer>", ["Paris"], "eos"),
    ("unbalanced-think", "<think> a <think> b </think> " + rs("\\boxed{Paris}", think=""), ["Paris"], "eos"),
    ("no-think", rs("\\boxed{Paris}", think=""), ["Paris"], "eos"),
    ("with-search", rs("\\boxed{Paris}", extra=SEARCH + "<think> found </think> "), ["Paris"], "eos"),
    ("two-searches-one-result", rs("\\boxed{Paris}", extra="<search> a </search> <search> b </search> <result>\nx\n</result> "), ["Paris"], "eos"),
    ("search-without-result", rs("\\boxed{Paris}", extra="<search> capital </search> "), ["Paris"], "eos"),
    ("result-before-search-end", rs("\\boxed{Paris}", extra="<search> q <result> r </search> </result> "), ["Paris"], "eos"),
    ("missing-eos-length", rs("\\boxed{Paris}"), ["Paris"], "length"),
    ("missing-eos-max-turns", rs("\\boxed{Paris}"), ["Paris"], "max-turns"),
    ("missing-eos-stop", rs("\\boxed{Paris}"), ["Paris"], "stop:</search>"),
    ("empty-response", "", ["Paris"], "eos"),
    ("multiline-answer", "<think>\nline\n</think>\n<answer>\nThe answer is\n\\boxed{Paris}\n</answer>", ["Paris"], "eos"),
    ("dollar-in-brace-boxed", rs("$\\boxed{Paris}$"), ["Paris"], "eos"),
]

SR1_VALID = "<think> reasoning </think>\n<answer> {a} </answer>"
SR1_SEARCH = "<think> need it </think><search> capital of France </search>\n\n<information>Doc 1(Title: \"Paris\") Paris is the capital.</information>\n\n<think> found </think>\n<answer> {a} </answer>"

# Responses holding the chat template's assistant marker (a model that starts a new turn). The
# reference finds the response inside prompt + response by that marker, so it reads only what
# precedes the response's own marker; `research-reward` does the same when the host gives it
# the marker (`host.assistant-marker`, from the model's chat template).
MARKER = "<|im_start|>assistant\n"
RESEARCH_MARKER_CASES = [
    ("marker-new-turn-after-answer", rs("\\boxed{Paris}") + "\n" + MARKER + rs("\\boxed{Paris}"), ["Paris"], "eos"),
    ("marker-new-turn-before-answer", "<think> reasoning </think>\n" + MARKER + rs("\\boxed{Paris}"), ["Paris"], "eos"),
    ("marker-inside-think", "<think> I will answer " + MARKER + " now </think> <answer> \\boxed{Paris} </answer>", ["Paris"], "eos"),
    ("marker-after-wrong-answer", rs("\\boxed{Lyon}") + MARKER, ["Paris"], "eos"),
    ("marker-at-start", MARKER + rs("\\boxed{Paris}"), ["Paris"], "eos"),
    ("marker-cut-by-length", rs("\\boxed{Paris}") + MARKER + "<think>", ["Paris"], "length"),
    ("other-role-is-not-the-marker", rs("\\boxed{Paris}", extra=" <|im_start|>user\n"), ["Paris"], "eos"),
    ("no-marker-control", rs("\\boxed{Paris}"), ["Paris"], "eos"),
]

SEARCHR1_CASES = [
    ("exact", SR1_VALID.format(a="Paris"), ["Paris"], "stop:</answer>"),
    ("case", SR1_VALID.format(a="pARIS"), ["Paris"], "stop:</answer>"),
    ("punctuation", SR1_VALID.format(a="Paris."), ["Paris"], "stop:</answer>"),
    ("articles", SR1_VALID.format(a="the Eiffel Tower"), ["Eiffel Tower"], "stop:</answer>"),
    ("whitespace", SR1_VALID.format(a="  New\n York "), ["new york"], "stop:</answer>"),
    ("unicode", SR1_VALID.format(a="Zürich"), ["zürich"], "stop:</answer>"),
    ("unicode-greek", SR1_VALID.format(a="ΟΔΟΣ"), ["οδος"], "stop:</answer>"),
    ("partial-is-zero", SR1_VALID.format(a="Paris France"), ["Paris"], "stop:</answer>"),
    ("multiple-golden", SR1_VALID.format(a="City of Light"), ["Paris", "City of Light"], "stop:</answer>"),
    ("wrong", SR1_VALID.format(a="Lyon"), ["Paris"], "stop:</answer>"),
    ("yes-no", SR1_VALID.format(a="yes"), ["no"], "stop:</answer>"),
    ("yes-yes", SR1_VALID.format(a="Yes"), ["yes"], "stop:</answer>"),
    ("last-answer-wins", "<answer> Lyon </answer> then <answer> Paris </answer>", ["Paris"], "stop:</answer>"),
    ("last-answer-wrong", "<answer> Paris </answer> then <answer> Lyon </answer>", ["Paris"], "stop:</answer>"),
    ("no-answer", "<think> hmm </think>", ["Paris"], "eos"),
    ("unclosed-answer", "<think> hmm </think> <answer> Paris", ["Paris"], "length"),
    ("empty-response", "", ["Paris"], "eos"),
    ("empty-answer", SR1_VALID.format(a=""), ["Paris"], "stop:</answer>"),
    ("boxed-not-stripped", SR1_VALID.format(a="\\boxed{Paris}"), ["Paris"], "stop:</answer>"),
    ("multiline-answer", "<answer>\nParis\n</answer>", ["Paris"], "stop:</answer>"),
    ("with-search", SR1_SEARCH.format(a="Paris"), ["Paris"], "stop:</answer>"),
    ("nested-answer", "<answer> <answer> Paris </answer>", ["Paris"], "stop:</answer>"),
    ("answer-with-tags-inside", "<answer> Paris </think> </answer>", ["Paris </think>"], "stop:</answer>"),
    ("eos-finish", SR1_VALID.format(a="Paris"), ["Paris"], "eos"),
    ("length-finish", SR1_VALID.format(a="Paris"), ["Paris"], "length"),
    ("only-answer", "<answer>Paris</answer>", ["Paris"], "stop:</answer>"),
    ("x1c-space", SR1_VALID.format(a="New\u001cYork"), ["New York"], "stop:</answer>"),
    ("numbers", SR1_VALID.format(a="1,234"), ["1234"], "stop:</answer>"),
    ("cjk", SR1_VALID.format(a="東京"), ["東京"], "stop:</answer>"),
    ("nbsp", SR1_VALID.format(a="New\u00a0York"), ["New York"], "stop:</answer>"),
    ("noanswer-word", SR1_VALID.format(a="noanswer"), ["noanswer"], "stop:</answer>"),
    ("prompt-example-not-copied", "<think> no idea </think>", ["Beijing"], "eos"),
    ("a-an-the-only", SR1_VALID.format(a="the"), [""], "stop:</answer>"),
    ("hyphen", SR1_VALID.format(a="Jean-Paul"), ["JeanPaul"], "stop:</answer>"),
    ("underscore", SR1_VALID.format(a="snake_case"), ["snakecase"], "stop:</answer>"),
    ("apostrophe", SR1_VALID.format(a="O'Neill"), ["ONeill"], "stop:</answer>"),
    ("tab-inside", SR1_VALID.format(a="New\tYork"), ["New York"], "stop:</answer>"),
    ("two-golden-one-empty", SR1_VALID.format(a="Paris"), ["", "Paris"], "stop:</answer>"),
    ("capital-article", SR1_VALID.format(a="A Tale"), ["tale"], "stop:</answer>"),
    ("unicode-dash-kept", SR1_VALID.format(a="Jean–Paul"), ["Jean Paul"], "stop:</answer>"),
]

# The v0.3 format table: (answer?, EM?, valid?) combinations.
SEARCHR1_FORMAT_CASES = [
    ("em-valid", SR1_VALID.format(a="Paris"), ["Paris"], "stop:</answer>"),
    ("em-valid-search", SR1_SEARCH.format(a="Paris"), ["Paris"], "stop:</answer>"),
    ("em-invalid-junk-between", "<think> t </think> junk <answer> Paris </answer>", ["Paris"], "stop:</answer>"),
    ("em-invalid-no-think", "<answer> Paris </answer>", ["Paris"], "stop:</answer>"),
    ("em-invalid-trailing", SR1_VALID.format(a="Paris") + " more", ["Paris"], "eos"),
    ("wrong-valid", SR1_VALID.format(a="Lyon"), ["Paris"], "stop:</answer>"),
    ("wrong-valid-search", SR1_SEARCH.format(a="Lyon"), ["Paris"], "stop:</answer>"),
    ("wrong-invalid", "<answer> Lyon </answer>", ["Paris"], "stop:</answer>"),
    ("no-answer-valid-impossible", "<think> t </think>", ["Paris"], "eos"),
    ("no-answer-invalid", "nothing here", ["Paris"], "eos"),
    ("no-answer-empty", "", ["Paris"], "eos"),
    ("invalid-answer-after-information", "<think> t </think><search> q </search><information> d </information><answer> Paris </answer>", ["Paris"], "stop:</answer>"),
    ("invalid-unbalanced", "<think> t </think><think><answer> Paris </answer>", ["Paris"], "stop:</answer>"),
    ("valid-two-rounds", "<think> a </think><search> q1 </search><information> d1 </information><think> b </think><search> q2 </search><information> d2 </information><think> c </think><answer> Paris </answer>", ["Paris"], "stop:</answer>"),
]


def cases_file(name, cases, score):
    path = DATA / f"{name}.cases.jsonl"
    return path, [
        {
            "id": case_id,
            "question": "What is the capital of France?",
            "golden_answers": golden,
            "response": response,
            "finish": finish,
            "expected_total": score(response, golden, finish),
        }
        for case_id, response, golden, finish in cases
    ]


FILES = [
    ("research-reward", RESEARCH_CASES, research_score),
    ("research-reward-marker", RESEARCH_MARKER_CASES, research_score),
    ("searchr1-reward", SEARCHR1_CASES, lambda r, g, f: searchr1_score(r, g, False)),
    ("searchr1-reward-format", SEARCHR1_FORMAT_CASES, lambda r, g, f: searchr1_score(r, g, True)),
]


def main():
    mode = sys.argv[1] if len(sys.argv) > 1 else "check"
    bad = 0
    for name, cases, score in FILES:
        path, rows = cases_file(name, cases, score)
        if mode == "generate":
            DATA.mkdir(parents=True, exist_ok=True)
            with open(path, "w", encoding="utf-8") as f:
                for row in rows:
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")
            print(f"wrote {len(rows)} cases to {path}")
        else:
            stored = [json.loads(line) for line in open(path, encoding="utf-8")]
            for row in stored:
                expected = score(row["response"], row["golden_answers"], row["finish"])
                if abs(expected - row["expected_total"]) > 1e-12:
                    bad += 1
                    print(f"{path.name} {row['id']}: stored {row['expected_total']}, reference {expected}")
            print(f"{path.name}: {len(stored)} cases checked")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
