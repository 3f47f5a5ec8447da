#!/usr/bin/env python3
"""Single-hop questions whose answers are in the Wikipedia vital-article summaries.

Reads a FlashRAG passage file ({"id","contents"}, contents = '"Title"\\nText') and writes QA
lines in FlashRAG form ({"id","question","golden_answers"}) made from the first sentence of an
article with three patterns: who made a work ("X is a 1605 novel by Miguel de Cervantes" ->
"Who created X?"), where a place is ("X is a city in northern Italy" -> "In which country is X?"),
and a person's nationality ("X was an English physicist" -> "What nationality was X?"). The
question names the article's title, so a search for it finds the passage; the answer must be
read from it. Deterministic: the same corpus gives the same files.

    python3 make_questions.py PASSAGES.jsonl OUT_DIR [--validation 100] [--seed 0]
"""
import argparse
import json
import random
import re
from pathlib import Path

NATIONALITIES = """American English British French German Italian Spanish Russian Chinese Japanese
Indian Greek Roman Dutch Polish Austrian Swiss Swedish Norwegian Danish Irish Scottish Welsh
Canadian Australian Mexican Brazilian Argentine Egyptian Persian Portuguese Belgian Hungarian Czech
Turkish Korean Israeli Nigerian Ukrainian Finnish Romanian Cuban Chilean Colombian Peruvian
Iranian Pakistani Vietnamese Thai Indonesian Filipino Mongolian Ethiopian Ghanaian Kenyan
Jamaican Icelandic Serbian Croatian Bulgarian Venezuelan Afghan Arab Prussian Flemish Venetian
Florentine Athenian Macedonian Carthaginian Babylonian Assyrian Mughal Ottoman Byzantine""".split()
WORKS = (r"novel|play|poem|painting|film|opera|symphony|book|song|album|sculpture|essay|treatise|"
         r"ballet|musical|comic|series|trilogy|epic|tragedy|comedy|oratorio|suite|concerto|fresco|"
         r"mural|statue|novella|memoir|manga|story")
MAKER = r"(?:written |painted |composed |directed |sculpted |created |produced |designed |by [^.]{0,0})?"
NAME = r"(?P<ans>[A-Z][\w.'’-]+(?: (?:de |da |van |von |del |di |y )?[A-Z][\w.'’-]+){0,3})"
WORK_RE = re.compile(
    r"^(?P<subj>.{2,80}?),?(?: \([^)]*\))?,? (?:is|was) (?:an?|the) [^.]{0,80}?\b(?:" + WORKS
    + r")s?\b[^.]{0,40}? " + MAKER + r"by (?:[a-z][\w-]+ ){0,4}" + NAME + r"\b")
PLACE_RE = re.compile(
    r"^(?P<subj>.{2,60}?),?(?: \([^)]*\))?,? (?:is|was) (?:an?|the) [^.]{0,60}?\b(?:city|town|"
    r"capital|port|river|mountain|lake|island|region|province|state|village|municipality)\b"
    r"[^.]{0,40}? (?:in|of) (?:the )?(?:[a-z]+ ){0,3}(?P<ans>[A-Z][a-z]+(?: [A-Z][a-z]+){0,2})\b")
PERSON_RE = re.compile(
    r"^(?P<subj>[A-Z][^.,()]{2,60}?),?(?: \([^)]*\))?,? (?:is|was) an? (?:[a-z-]+ )?(?P<ans>"
    + "|".join(NATIONALITIES) + r")\b(?:[-–][A-Z][a-z]+)? [a-z]")


def questions_of(title, text):
    """The questions one article's first sentence gives: (kind, question, answer)."""
    first = text.split(". ")[0]
    out = []
    m = WORK_RE.match(first)
    if m and m.group("ans") not in title:
        out.append(("maker", f"Who created {title}?", m.group("ans")))
    m = PLACE_RE.match(first)
    if m and m.group("ans") not in title and not m.group("ans").startswith(("The ", "It ")):
        out.append(("place", f"In which country or region is {title}?", m.group("ans")))
    m = PERSON_RE.match(first)
    if m:
        out.append(("nationality", f"What nationality was {title}?", m.group("ans")))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("passages")
    ap.add_argument("out_dir")
    ap.add_argument("--validation", type=int, default=100, help="held-out questions")
    ap.add_argument("--train", type=int, default=600, help="training questions (at most)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    seen, qa = set(), []
    for line in open(args.passages, encoding="utf-8"):
        contents = json.loads(line)["contents"]
        title, _, text = contents.partition("\n")
        title = title.strip().strip('"')
        if title in seen or "(" in title:
            continue
        seen.add(title)
        for kind, question, answer in questions_of(title, text):
            qa.append({"kind": kind, "question": question, "golden_answers": [answer]})
    random.Random(args.seed).shuffle(qa)
    held, train = qa[: args.validation], qa[args.validation : args.validation + args.train]
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name, rows in (("validation", held), ("train", train)):
        with open(out / f"{name}.jsonl", "w", encoding="utf-8") as f:
            for i, row in enumerate(rows):
                f.write(json.dumps({"id": f"wiki-{name}-{i}", "question": row["question"],
                                    "golden_answers": row["golden_answers"]}, ensure_ascii=False) + "\n")
    kinds = {k: sum(r["kind"] == k for r in qa) for k in ("maker", "place", "nationality")}
    print(f"{len(qa)} questions from {len(seen)} articles {kinds}: {len(train)} train, {len(held)} validation")


if __name__ == "__main__":
    main()
