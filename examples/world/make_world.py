#!/usr/bin/env python3
"""Writes the embedded default's fictional world: a passage corpus and question sets whose
answers exist only in the corpus, so a model must search to answer.

    python3 examples/world/make_world.py     # rewrites corpus, warmstart, train and validation
    python3 examples/world/make_world.py --scale 24 --out /tmp/big-world   # a larger one

Deterministic (seeded); the host embeds the three files, so rerun it only to change the world.
Each passage names its subject in the words its questions use ("The X River flows through T",
"C is best known for making the T"), so a plain embedder finds it from the question.
"""
import argparse
import json
import random
from pathlib import Path

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--scale", type=int, default=6, help="entities per kind, in units of the smallest world")
parser.add_argument("--validation", type=int, default=100, help="held-out questions")
parser.add_argument("--warm-start", type=int, default=750,
                    help="questions for the warm start's demonstrations (the rest train GRPO)")
parser.add_argument("--out", type=Path, default=Path(__file__).parent, help="output folder")
args = parser.parse_args()
rng = random.Random(20261121)
here = args.out
here.mkdir(parents=True, exist_ok=True)

syllables = ["ka", "lo", "mi", "ren", "tas", "vor", "el", "dun", "sa", "bri", "qu", "zel",
             "no", "ath", "ri", "mon", "fe", "gal", "ish", "tor", "ul", "wen", "py", "dra"]


def name(parts):
    return "".join(rng.choice(syllables) for _ in range(parts)).capitalize()


def unique(make, count):
    seen = set()
    while len(seen) < count:
        seen.add(make())
    return sorted(seen)


k = args.scale
towns = unique(lambda: name(2) + rng.choice(["ford", "holm", "vale", "mere", "wick"]), 24 * k)
rivers = unique(lambda: "the " + name(2) + " River", 12 * k)
people = unique(lambda: name(2) + " " + name(3), 48 * k)
companies = unique(lambda: name(2) + " " + rng.choice(["Works", "Guild", "Foundry", "Press"]), 16 * k)
things = ["lantern", "loom", "compass", "kite", "clock", "bell", "telescope", "harp",
          "bridge", "ferry", "mill", "printing press", "glider", "violin", "lens", "barometer"]
colours = ["amber", "cobalt", "crimson", "ivory", "jade", "saffron", "slate", "violet"]
years = list(range(1710, 1900))

corpus, questions = [], []
town_river = {t: rng.choice(rivers) for t in towns}
town_colour = {t: rng.choice(colours) for t in towns}
for t in towns:
    text = (f"{t} is a market town. The {town_river[t].removeprefix('the ')} flows through {t}. "
            f"The houses of {t} are painted {town_colour[t]}, and its fair is held every spring.")
    corpus.append((t, text))
    questions.append((f"Which river flows through {t}?", [town_river[t].removeprefix("the ")]))
    questions.append((f"What colour are the houses of {t}?", [town_colour[t]]))

company_founder, company_thing, company_town = {}, {}, {}
for i, c in enumerate(companies):
    company_founder[c] = people[i]
    company_thing[c] = things[i % len(things)]
    company_town[c] = rng.choice(towns)
    year = rng.choice(years)
    text = (f"{c} is a workshop in {company_town[c]}, founded in {year} by {people[i]}. "
            f"{c} is best known for making the {company_thing[c]}, still by hand.")
    corpus.append((c, text))
    questions.append((f"Who founded {c}?", [people[i]]))
    questions.append((f"What is {c} best known for making?", [company_thing[c]]))

for i, p in enumerate(people):
    born = rng.choice(towns)
    year = rng.choice(years)
    mentor = people[(i * 7 + 3) % len(people)]
    text = (f"{p} was born in {born} in {year}. {p} studied under {mentor} "
            f"and later wrote a short book about the fairs of {rng.choice(towns)}.")
    corpus.append((p, text))
    questions.append((f"In which town was {p} born?", [born]))
    questions.append((f"In what year was {p} born?", [str(year)]))
    if i < len(companies):
        c = companies[i]
        questions.append((f"In which town was the founder of {c} born?", [born]))
    if i % 3 == 0:
        questions.append((f"Which river flows through the town where {p} was born?",
                          [town_river[born].removeprefix("the ")]))

rng.shuffle(questions)
split = len(questions) - args.validation
warm = min(args.warm_start, split)


def write(path, rows):
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


write(here / "corpus.jsonl",
      [{"id": str(i), "contents": f'"{title}"\n{text}'} for i, (title, text) in enumerate(corpus)])
write(here / "warmstart.jsonl",
      [{"id": f"w{i}", "question": q, "golden_answers": a} for i, (q, a) in enumerate(questions[:warm])])
write(here / "train.jsonl",
      [{"id": f"w{i}", "question": q, "golden_answers": a}
       for i, (q, a) in enumerate(questions[warm:split], start=warm)])
write(here / "validation.jsonl",
      [{"id": f"w{i}", "question": q, "golden_answers": a}
       for i, (q, a) in enumerate(questions[split:], start=split)])
print(f"{len(corpus)} passages; questions: {warm} warm-start, {split - warm} training (GRPO), "
      f"{len(questions) - split} validation")
