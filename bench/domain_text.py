"""A small synthetic domain text: call-centre transcripts in spoken form (lowercase, no
punctuation, numbers spoken digit by digit), one utterance a line.

    python bench/domain_text.py --out runs/domain --lines 600        # train.txt, test.txt

It stands in for the text a speech team brings (a few thousand words of its own calls), for
measuring what the trainer's defaults do on a corpus that small (bench/train_defaults.py). The
grammar is fixed and the draws are seeded, so the same command writes the same files.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

NAMES = [
    "anna",
    "ben",
    "carla",
    "david",
    "elena",
    "farid",
    "grace",
    "hugo",
    "irene",
    "james",
    "kofi",
    "laura",
    "miguel",
    "nadia",
    "oscar",
    "priya",
    "quentin",
    "rosa",
    "samir",
    "tara",
]
SURNAMES = ["smith", "garcia", "okafor", "nguyen", "muller", "rossi", "kowalski", "tanaka",
            "silva", "haddad", "novak", "olsen"]  # fmt: skip
CITIES = ["leeds", "bristol", "glasgow", "cardiff", "belfast", "york", "norwich", "dundee"]
ITEMS = ["parcel", "package", "order", "delivery", "return", "refund", "replacement"]
PRODUCTS = ["kettle", "laptop", "phone case", "desk lamp", "coffee machine", "printer",
            "winter coat", "pair of boots", "blender", "monitor"]  # fmt: skip
DAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday"]
DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
TIMES = ["nine", "ten", "eleven", "twelve", "one", "two", "three", "four", "five"]
PROBLEMS = ["arrived damaged", "never arrived", "was the wrong size", "stopped working",
            "was left outside", "is missing a part", "came without the charger"]  # fmt: skip
TEMPLATES = [
    "thank you for calling {city} deliveries my name is {name} how can i help you today",
    "hi my name is {name} {surname} and i am calling about my {item}",
    "i ordered a {product} last {day} and it {problem}",
    "my {item} number is {number}",
    "could you spell your surname for me please",
    "can i take the {item} number please",
    "let me just check that for you",
    "i can see your {item} here it was sent from our {city} depot on {day}",
    "i am sorry to hear that the {product} {problem}",
    "we can send a replacement {product} or give you a full refund",
    "i would like a refund please",
    "a replacement would be great thank you",
    "the driver will come on {day} between {time} and {time2}",
    "is {day} morning all right for you",
    "yes {day} is fine",
    "no i am at work on {day} could it be {day2} instead",
    "can i confirm your address is still in {city}",
    "yes that is right",
    "no i moved to {city} last month",
    "you will get a text message with a tracking number",
    "is there anything else i can help you with today",
    "no that is everything thank you {name}",
    "thank you for calling have a lovely day",
    "i have been waiting for my {item} since {day}",
    "the tracking page says it was delivered but i never got it",
    "could you check with the driver please",
    "i will open a case for you the reference is {number}",
    "you should hear back from us within two working days",
    "can i speak to a manager please",
    "of course please hold the line",
]


def utterance(rng: random.Random) -> str:
    """One line of the transcript, its slots filled at random."""
    day, day2 = rng.sample(DAYS, 2)
    time, time2 = sorted(rng.sample(range(len(TIMES)), 2))
    slots = {
        "name": rng.choice(NAMES),
        "surname": rng.choice(SURNAMES),
        "city": rng.choice(CITIES),
        "item": rng.choice(ITEMS),
        "product": rng.choice(PRODUCTS),
        "day": day,
        "day2": day2,
        "time": TIMES[time],
        "time2": TIMES[time2],
        "problem": rng.choice(PROBLEMS),
        "number": " ".join(rng.choice(DIGITS) for _ in range(rng.randint(4, 7))),
    }
    return rng.choice(TEMPLATES).format(**slots)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="directory for train.txt and test.txt")
    parser.add_argument("--lines", type=int, default=600, help="training utterances")
    parser.add_argument("--test-lines", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, lines, seed in (("train", args.lines, args.seed), ("test", args.test_lines, -1)):
        rng = random.Random(f"{seed}-{name}")
        text = "".join(utterance(rng) + "\n" for _ in range(lines))
        (out / f"{name}.txt").write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
