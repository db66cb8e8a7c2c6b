"""process_docs for the local HellaSwag task: lm-eval's own hellaswag preprocessing, for both file layouts.

The official hellaswag_val.jsonl has ctx_a / ctx_b (joined as lm-eval does: ctx_a + " " + ctx_b.capitalize());
preprocessed copies (e.g. klosax/hellaswag_text_data) have only `ctx`. Text cleaning is lm-eval's
`preprocess`, imported, not copied.
"""

from lm_eval.tasks.hellaswag.utils import preprocess


def _process_doc(doc: dict) -> dict:
    ctx = doc["ctx_a"] + " " + doc["ctx_b"].capitalize() if doc.get("ctx_a") is not None else doc["ctx"]
    return {
        "query": preprocess(doc["activity_label"] + ": " + ctx),
        "choices": [preprocess(ending) for ending in doc["endings"]],
        "gold": int(doc["label"]),
    }


def process_docs(dataset):
    return dataset.map(_process_doc)
