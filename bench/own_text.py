"""How the language model's own text for statistics is written, against what it costs: obspa on
SmolLM2-135M-Instruct at -20% params with LENGTH-token sequences × SAMPLES (the same 8,192 tokens at
32×256, 64×128, 16×512), the stage times and perplexity on 8×512 tokens of gensim's Lee background text.

    .venv/bin/python bench/own_text.py --length 32 --samples 256     # needs `make bench-transformers`
    .venv/bin/python bench/own_text.py --no-kv-cache                  # the text written without a KV cache
    .venv/bin/python bench/own_text.py --no-watch                     # moments from a second run of the text

Each run writes build/speed/smol20_L<length>.onnx; run one configuration per process (one at a time:
the machine has two cores).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--length", type=int, default=32, help="tokens per generated sequence")
    ap.add_argument("--samples", type=int, default=256, help="generated sequences")
    ap.add_argument("--batch", type=int, default=128, help="sequences written together")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-kv-cache", action="store_true", help="write the text re-running the whole prefix")
    ap.add_argument("--no-watch", action="store_true",
                    help="measure the moments by running the written text again (not while writing it)")
    args = ap.parse_args()

    import spa
    from spa.flow.compensation import Compensation
    from spa.statistics import generation
    from transformer_fidelity import BUILD, gensim_data, perplexity
    from transformers import AutoTokenizer

    from spa.statistics import hessian

    plain = generation.generated_feeds
    if args.no_watch:
        hessian.Watcher.watching = staticmethod(lambda *_: False)
    if args.no_kv_cache:
        generation._cached_writer = lambda *_: None
    generation.generated_feeds = lambda model, n, seed=0, length=0, observer=None, **_: plain(
        model, n, seed, args.length, batch=args.batch, observer=observer)
    dense = BUILD / "SmolLM2-135M-Instruct"
    if not (dense / "model.onnx").exists():
        raise SystemExit(f"{dense} is missing: run `make bench-transformers` (it exports SmolLM2 from its GGUF)")
    start = time.perf_counter()
    result = spa.prune(dense, spa.Budget(ratio=0.2, target="params"), criterion="obspa",
                       compensation=Compensation(samples=args.samples, seed=args.seed))
    total = time.perf_counter() - start
    out = ROOT / "build" / "speed" / (f"smol20_L{args.length}{'_plain' if args.no_kv_cache else ''}"
                                      f"{'_second_run' if args.no_watch else ''}.onnx")
    out.parent.mkdir(parents=True, exist_ok=True)
    result.save(out)
    tokenizer = AutoTokenizer.from_pretrained(str(dense))
    ids = tokenizer((gensim_data() / "lee_background.cor").read_text(encoding="latin-1"),
                    add_special_tokens=False)["input_ids"]
    stages = ", ".join(f"{k} {v:.1f} s" for k, v in result.seconds.items() if v >= 0.05)
    cache = ("without" if args.no_kv_cache else "with") + " KV cache" + (
        ", moments from a second run" if args.no_watch else "")
    print(f"{args.length} tokens × {args.samples} sequences (seed {args.seed}, {cache}): prune {total:.1f} s ({stages}); "
          f"perplexity {perplexity(out, ids, 8):.1f} (dense {perplexity(dense / 'model.onnx', ids, 8):.2f})")


if __name__ == "__main__":
    main()
