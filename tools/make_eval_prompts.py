#!/usr/bin/env python3
"""The held-out prompts of the embedded model's OCR evaluation (issue 8, item 4).

100 prompts, each naming 1 or 2 keywords of at most 10 letters, drawn from
`models/eval/heldout_words.txt`: words that are not in the synthetic corpus's word list
(`ocr/src/dataset/poster_words.txt`), so no evaluated word was seen in training. The captions
follow the corpus's template ("a teal striped poster with the words 'Harbor' and 'MINT'"),
with its colour and style names and its three casings. Standard library only; the same seed
gives the same file.

    python3 tools/make_eval_prompts.py --seed 8 > models/eval/prompts.txt
"""

import argparse
import pathlib
import random

ROOT = pathlib.Path(__file__).resolve().parent.parent
COLOURS = ["red", "orange", "yellow", "green", "teal", "blue", "navy", "purple", "pink",
           "brown", "black", "white", "grey", "beige"]
STYLES = ["minimal", "gradient", "geometric", "striped", "textured"]


def casing(word, rng):
    return rng.choice([word.upper(), word.capitalize(), word.lower()])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--seed", type=int, default=8)
    args = parser.parse_args()
    heldout = (ROOT / "models/eval/heldout_words.txt").read_text().split()
    seen = {w.lower() for w in (ROOT / "ocr/src/dataset/poster_words.txt").read_text().split()}
    words = [w for w in heldout if w.lower() not in seen and len(w) <= 10]
    rng = random.Random(args.seed)
    for _ in range(args.n):
        keywords = [casing(w, rng) for w in rng.sample(words, rng.choice([1, 2]))]
        quoted = [f"'{k}'" for k in keywords]
        said = (f"the word {quoted[0]}" if len(quoted) == 1
                else f"the words {quoted[0]} and {quoted[1]}")
        colour = rng.choice(COLOURS)
        article = "an" if colour[0] in "aeiou" else "a"
        print(f"{article} {colour} {rng.choice(STYLES)} poster with {said}")


if __name__ == "__main__":
    main()
