"""Made-up HellaSwag-shaped examples (ctx-only schema) for tests that need rows, not the real data set."""

from __future__ import annotations

import json
import random
from pathlib import Path

WORDS = ("the man a woman dog ball water runs jumps slowly then picks up throws into park kitchen knife "
         "bread cuts paints wall guitar plays sings camera smiles walks away turns around and of with").split()


def make_examples(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)

    def text(k: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(k))

    return [{"activity_label": text(2).capitalize(), "ctx": text(rng.randint(4, 14)).capitalize(),
             "endings": [text(rng.randint(2, 9)) + "." for _ in range(4)], "label": rng.randrange(4)}
            for _ in range(n)]


def write_jsonl(path: Path, examples: list[dict]) -> Path:
    path.write_text("".join(json.dumps(ex) + "\n" for ex in examples))
    return path
