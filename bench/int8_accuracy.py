"""int8 inference against fp32 on the same weights: random base-size weights, and a small masked LM trained here.

    python -m bench.int8_accuracy                       # trains 1,200 steps (~6 minutes on 2 idle cores), then reports
    python -m bench.int8_accuracy --checkpoint mlm.pt   # trains once, later runs load the trained model

Random weights have no activation outliers, so a small XLM-R-shaped model (4 layers, hidden 256, 4 heads,
FFN 1024, post-LN, GELU) is trained on the multilingual CLDR text the tests use (`tests/support/corpus.py`),
tokenized with the real XLM-R vocabulary: a masked LM (15 % of tokens, 80/10/10) and, jointly, a sentence
head on `<s>` that names the line's script (LATIN, CYRILLIC, CJK, ...). The embedding keeps only the pieces
the corpus uses (renumbered, the specials first), which makes training fit in minutes on two cores; the
tokenization is XLM-R's. Held-back lines (10 %, seeded) are then run through fp32 and int8 (the packed fast
path both times, same batches) and compared: per-token cosine of the last hidden state, top-1 agreement of
masked-token predictions, argmax agreement of the sentence head. Every projection kind and every layer is
also excluded from int8 in turn (`quantize_for_inference(exclude=...)`), to show which ones cost accuracy.
"""

from __future__ import annotations

import argparse
import copy
import os
import random
import time

import torch
import torch.nn.functional as F

from bench.bench_speed import machine_description
from modeling_xlmr import XLMRConfig, XLMRForMaskedLM
from modeling_xlmr.modeling_xlmr import XLMRClassificationHead
from modeling_xlmr.quantization import PROJECTIONS, activation_levels
from tests.support.corpus import multilingual_corpus, real_tokenizer_json_path, script_of
from tests.support.models import fast_stock_tokenizer

SPECIALS = (0, 1, 2, 3)  # <s> <pad> </s> <unk>, XLM-R's ids, kept as the first four rows
MAX_TOKENS = 40


def random_base_report(seed: int = 0) -> dict:
    """int8 vs fp32 on xlmr.base-sized layers with random weights (a small vocabulary: the embedding is not quantised)."""
    from bench.workload import make_workload, pad_batch
    from modeling_xlmr import XLMRModel

    torch.manual_seed(seed)
    model = XLMRModel(XLMRConfig(vocab_size=1000), add_pooling_layer=False).eval()
    sentences = [s.clamp(max=999) for s in make_workload(num_sentences=64, vocab_size=1000, seed=seed).sentences]
    input_ids, mask = pad_batch(sentences)
    int8 = copy.deepcopy(model).quantize_for_inference()
    with torch.inference_mode():
        reference = model(input_ids, attention_mask=mask).last_hidden_state[mask.bool()]
        quantized = int8(input_ids, attention_mask=mask).last_hidden_state[mask.bool()]
    cosine = token_cosine(quantized, reference)
    return {"tokens": int(mask.sum()), "cos_mean": float(cosine.mean()), "cos_min": float(cosine.min())}


def token_cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
        raise ValueError("NaN or infinity in the compared states")
    return F.cosine_similarity(a.double(), b.double(), dim=-1)


# ------------------------------------------------------------------------------------------ data


def corpus_splits(seed: int) -> tuple[list, list, list[str], torch.Tensor]:
    """(train, held-back) as (compact ids, script label) pairs, the label names, and compact -> real id."""
    tokenizer = fast_stock_tokenizer(real_tokenizer_json_path())
    lines = [line for line in multilingual_corpus() if line.strip() and script_of(line)]
    scripts = sorted({script_of(line) for line in lines})
    encoded = tokenizer(lines, truncation=True, max_length=MAX_TOKENS)["input_ids"]
    used = sorted({piece for ids in encoded for piece in ids} - set(SPECIALS))
    real_ids = torch.tensor([*SPECIALS, *used])
    compact = {real: index for index, real in enumerate(real_ids.tolist())}
    examples = [
        ([compact[piece] for piece in ids], scripts.index(script_of(line))) for ids, line in zip(encoded, lines)
    ]
    random.Random(seed).shuffle(examples)
    held_back = len(examples) // 10
    return examples[held_back:], examples[:held_back], scripts, real_ids


def collate(batch: list) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    longest = max(len(ids) for ids, _ in batch)
    input_ids = torch.full((len(batch), longest), 1, dtype=torch.long)
    for row, (ids, _) in enumerate(batch):
        input_ids[row, : len(ids)] = torch.tensor(ids)
    return input_ids, input_ids.ne(1).long(), torch.tensor([label for _, label in batch])


def mask_tokens(
    input_ids: torch.Tensor, vocab_size: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's masking of 15 % of the ordinary tokens (80 % <mask>, 10 % random, 10 % kept); labels -100 elsewhere."""
    ordinary = input_ids > 3
    chosen = ordinary & (torch.rand(input_ids.shape, generator=generator) < 0.15)
    labels = torch.where(chosen, input_ids, -100)
    draw = torch.rand(input_ids.shape, generator=generator)
    masked = input_ids.clone()
    masked[chosen & (draw < 0.8)] = vocab_size - 1  # the compact vocabulary's last row is <mask>
    random_rows = chosen & (draw >= 0.8) & (draw < 0.9)
    masked[random_rows] = torch.randint(4, vocab_size - 1, (int(random_rows.sum()),), generator=generator)
    return masked, labels


# ------------------------------------------------------------------------------------------ training


def build_model(vocab_size: int, num_labels: int) -> tuple[XLMRForMaskedLM, XLMRClassificationHead]:
    config = XLMRConfig(
        vocab_size=vocab_size, hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024,
        max_position_embeddings=MAX_TOKENS + 2, hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1,
    )  # fmt: skip
    return XLMRForMaskedLM(config), XLMRClassificationHead(config, num_labels=num_labels, dropout=0.1)


def train(train_set: list, vocab_size: int, num_labels: int, steps: int, seed: int, lr: float):
    torch.manual_seed(seed)
    model, head = build_model(vocab_size, num_labels)
    parameters = [*model.parameters(), *head.parameters()]
    optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=0.01)
    generator, order = torch.Generator().manual_seed(seed), random.Random(seed)
    model.train(), head.train()
    start = time.perf_counter()
    for step in range(steps):
        batch = order.sample(train_set, 32)
        input_ids, attention_mask, labels = collate(batch)
        masked, mlm_labels = mask_tokens(input_ids, vocab_size, generator)
        hidden = model.roberta(masked, attention_mask=attention_mask, unpad_inputs=True).last_hidden_state
        chosen = mlm_labels != -100  # the LM head only on masked tokens: the vocabulary projection dominates otherwise
        loss = F.cross_entropy(model.lm_head(hidden[chosen]), mlm_labels[chosen]) + F.cross_entropy(
            head(hidden), labels
        )
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        for group in optimizer.param_groups:  # warm up, then linear decay
            group["lr"] = lr * min(1.0, (step + 1) / 30) * max(0.05, 1.0 - step / steps)
        optimizer.step()
        if (step + 1) % 100 == 0:
            print(f"  step {step + 1}, {time.perf_counter() - start:.0f}s: loss {loss.item():.3f}", flush=True)
    return model.eval(), head.eval()


# ------------------------------------------------------------------------------------------ evaluation


def run_held_back(model, head, held_back: list, vocab_size: int, seed: int) -> dict:
    """Last hidden states of real tokens, masked-token predictions and sentence-head predictions."""
    generator = torch.Generator().manual_seed(seed + 1)
    states, predictions, truths, sentence, labels = [], [], [], [], []
    with torch.inference_mode():
        for start in range(0, len(held_back), 64):
            input_ids, attention_mask, batch_labels = collate(held_back[start : start + 64])
            masked, mlm_labels = mask_tokens(input_ids, vocab_size, generator)
            hidden = model.roberta(masked, attention_mask=attention_mask).last_hidden_state
            states.append(hidden[attention_mask.bool()])
            chosen = mlm_labels != -100
            predictions.append(model.lm_head(hidden[chosen]).argmax(-1))
            truths.append(mlm_labels[chosen])
            sentence.append(head(hidden).argmax(-1))
            labels.append(batch_labels)
    collected = {"states": states, "mlm": predictions, "mlm_truth": truths, "sentence": sentence, "labels": labels}
    return {name: torch.cat(values) for name, values in collected.items()}


def compare(reference: dict, candidate: dict) -> dict:
    cosine = token_cosine(candidate["states"], reference["states"])
    return {
        "cos_mean": float(cosine.mean()),
        "cos_min": float(cosine.min()),
        "mlm_agree": float((candidate["mlm"] == reference["mlm"]).float().mean()),
        "head_agree": float((candidate["sentence"] == reference["sentence"]).float().mean()),
        "mlm_acc": float((candidate["mlm"] == candidate["mlm_truth"]).float().mean()),
        "head_acc": float((candidate["sentence"] == candidate["labels"]).float().mean()),
    }


def outlier_ratios(model, held_back: list) -> list[str]:
    """Per layer: max |input| / median per-token max |input| of the FFN down projection (outliers show as large)."""
    inputs: dict[int, list[torch.Tensor]] = {}
    hooks = [
        layer.output.dense.register_forward_pre_hook(
            lambda module, args, index=index: inputs.setdefault(index, []).append(args[0].detach().abs())
        )
        for index, layer in enumerate(model.roberta.encoder.layer)
    ]  # hooks make the fast path step aside: the float modules run, which is what is measured here
    with torch.inference_mode():
        for start in range(0, min(len(held_back), 512), 64):
            input_ids, attention_mask, _ = collate(held_back[start : start + 64])
            model.roberta(input_ids, attention_mask=attention_mask)
    for hook in hooks:
        hook.remove()
    ratios = []
    for index in sorted(inputs):
        per_token = torch.cat([values.reshape(-1, values.shape[-1]) for values in inputs[index]]).amax(-1)
        ratios.append(f"layer {index}: {float(per_token.max() / per_token.median()):.1f}")
    return ratios


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=1200, help="training steps of 32 lines")
    parser.add_argument("--lr", type=float, default=5e-4, help="peak learning rate (AdamW, warm-up then linear decay)")
    parser.add_argument("--checkpoint", help="load the trained model from here if it exists, else save it here")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(f"machine: {machine_description()}; load average {os.getloadavg()[0]:.1f}")
    print(f"activations quantised to ±{activation_levels()} (7 bits without VNNI, 8 with), weights to ±127")

    base = random_base_report(args.seed)
    print(
        f"random xlmr.base weights, {base['tokens']} tokens: cosine int8 vs fp32 mean {base['cos_mean']:.6f}, "
        f"min {base['cos_min']:.6f}"
    )

    train_set, held_back, scripts, real_ids = corpus_splits(args.seed)
    vocab_size = len(real_ids) + 1  # + <mask>
    print(
        f"corpus: {len(train_set)} training lines, {len(held_back)} held back, {len(scripts)} scripts, "
        f"{vocab_size} pieces of the real vocabulary in use"
    )
    if args.checkpoint and os.path.exists(args.checkpoint):
        model, head = build_model(vocab_size, len(scripts))
        state = torch.load(args.checkpoint)
        model.load_state_dict(state["model"]), head.load_state_dict(state["head"])
        model.eval(), head.eval()
        print(f"loaded the trained model from {args.checkpoint} ({state['steps']} steps)")
    else:
        start = time.perf_counter()
        model, head = train(train_set, vocab_size, len(scripts), args.steps, args.seed, args.lr)
        print(f"trained {args.steps} steps in {time.perf_counter() - start:.0f}s")
        if args.checkpoint:
            torch.save({"model": model.state_dict(), "head": head.state_dict(), "steps": args.steps}, args.checkpoint)

    reference = run_held_back(model, head, held_back, vocab_size, args.seed)
    print(
        "FFN down projection input, max over median of per-token max |x|: "
        + ", ".join(outlier_ratios(model, held_back))
    )
    variants = [("int8, every projection", ())]
    variants += [(f"int8, {name} in fp32", (name,)) for name in PROJECTIONS]
    variants += [(f"int8, layer {i} in fp32", (f"layer.{i}",)) for i in range(model.config.num_hidden_layers)]
    fp32 = compare(reference, reference)
    print(
        f"fp32: masked-token top-1 accuracy {fp32['mlm_acc']:.3f} ({len(reference['mlm'])} masked tokens), "
        f"script head accuracy {fp32['head_acc']:.3f} ({len(reference['labels'])} lines)"
    )
    print(
        f"{'variant':32s} {'cos mean':>9s} {'cos min':>9s} {'MLM top-1 agree':>16s} {'head agree':>11s} "
        f"{'MLM acc':>8s} {'head acc':>9s}"
    )
    for name, exclude in variants:
        quantized = copy.deepcopy(model).quantize_for_inference(exclude=exclude)
        result = compare(reference, run_held_back(quantized, head, held_back, vocab_size, args.seed))
        print(
            f"{name:32s} {result['cos_mean']:9.6f} {result['cos_min']:9.6f} {result['mlm_agree']:16.2%} "
            f"{result['head_agree']:11.2%} {result['mlm_acc']:8.3f} {result['head_acc']:9.3f}",
            flush=True,
        )
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
