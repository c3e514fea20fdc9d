"""The packed path is the default for inference (padded batches and unpadded ones alike), and steps aside wherever it could not be
exact: wrapped or hooked linears (PEFT, custom layers), Accelerate offloading, training, tracing, export and
compile. Every case is compared with the padded path (or stock transformers) on the same weights."""

from __future__ import annotations

import copy

import pytest
import torch
import transformers
from torch import nn

from modeling_xlmr import XLMRConfig, XLMRForSequenceClassification, XLMRModel, fast_path, packing
from tests.support.models import random_padded_batch, tiny_config_kwargs

LENGTHS = [5, 9, 3, 7]


class Spy:
    """Counts the packed batches built and the layers run on prepared kernels."""

    def __init__(self, monkeypatch):
        self.packed = self.prepared = 0
        from_mask, fast_forward = packing.PackedBatch.from_mask, fast_path.fast_layer_forward

        def counting_from_mask(mask):
            self.packed += 1
            return from_mask(mask)

        def counting_fast_forward(*args, **kwargs):
            self.prepared += 1
            return fast_forward(*args, **kwargs)

        monkeypatch.setattr(packing.PackedBatch, "from_mask", staticmethod(counting_from_mask))
        import modeling_xlmr.modeling_xlmr as modeling

        monkeypatch.setattr(modeling, "fast_layer_forward", counting_fast_forward)


@pytest.fixture
def spy(monkeypatch) -> Spy:
    return Spy(monkeypatch)


@pytest.fixture(scope="module")
def model() -> XLMRModel:
    torch.manual_seed(0)
    return XLMRModel(XLMRConfig(**tiny_config_kwargs()), add_pooling_layer=False).eval()


def padded_and_default(model, input_ids, mask, **kwargs):
    with torch.no_grad():
        padded = model(input_ids, attention_mask=mask, unpad_inputs=False, **kwargs).last_hidden_state
        default = model(input_ids, attention_mask=mask, **kwargs).last_hidden_state
    return padded, default


def real(states, mask):
    return states[mask.bool()]


def test_inference_on_a_padded_batch_packs_by_default_and_matches_the_padded_path(model, spy):
    input_ids, mask = random_padded_batch(LENGTHS, 120)
    padded, default = padded_and_default(model, input_ids, mask)
    assert spy.packed == 1 and spy.prepared == model.config.num_hidden_layers
    torch.testing.assert_close(real(default, mask), real(padded, mask), atol=1e-5, rtol=0)


@pytest.mark.parametrize("case", ["batch_of_one_without_mask", "equal_lengths_with_mask"])
def test_inference_on_unpadded_inputs_runs_the_prepared_kernels_too(model, spy, case):
    """A single text (a search query) gets the fused, prepacked kernels, not only padded batches."""
    input_ids, mask = random_padded_batch([6] if case.startswith("batch_of_one") else [6, 6], 120)
    with torch.no_grad():
        padded = model(input_ids, attention_mask=mask, unpad_inputs=False).last_hidden_state
        default = model(input_ids, attention_mask=None if case.endswith("without_mask") else mask).last_hidden_state
    assert spy.packed == 1 and spy.prepared == model.config.num_hidden_layers
    torch.testing.assert_close(default, padded, atol=1e-5, rtol=0)


@pytest.mark.parametrize("case", ["training", "autograd", "attentions", "turned_off_in_config"])
def test_the_default_keeps_the_padded_path_where_packing_is_not_wanted(model, spy, case):
    input_ids, mask = random_padded_batch(LENGTHS, 120)
    subject = copy.deepcopy(model)
    if case == "turned_off_in_config":
        subject.config.unpad_inputs = False
    with torch.set_grad_enabled(case in ("training", "autograd")):
        subject.train(case == "training")
        subject(input_ids, attention_mask=mask, output_attentions=case == "attentions")
    assert spy.packed == 0


def test_explicit_unpad_inputs_that_cannot_be_honoured_raises(model):
    input_ids, mask = random_padded_batch(LENGTHS, 120)
    with torch.no_grad(), pytest.raises(ValueError, match="cannot return attention maps"):
        model(input_ids, attention_mask=mask, unpad_inputs=True, output_attentions=True)

    class Traced(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = model

        def forward(self, input_ids, attention_mask):
            return self.inner(input_ids, attention_mask=attention_mask, unpad_inputs=True).last_hidden_state

    with pytest.raises(ValueError, match="cannot be traced, exported or compiled"):
        torch.jit.trace(Traced(), (input_ids, mask), check_trace=False)


def test_unmerged_lora_adapters_are_never_skipped(model, spy):
    from peft import LoraConfig, get_peft_model

    lora = get_peft_model(
        copy.deepcopy(model), LoraConfig(r=4, target_modules=["query", "value", "dense"], init_lora_weights=False)
    ).eval()
    input_ids, mask = random_padded_batch(LENGTHS, 120)
    padded, default = padded_and_default(lora, input_ids, mask)
    with torch.no_grad():
        without_adapters = model(input_ids, attention_mask=mask, unpad_inputs=False).last_hidden_state
    assert spy.packed >= 1 and spy.prepared == 0  # packed, on the adapters' own modules
    torch.testing.assert_close(real(default, mask), real(padded, mask), atol=1e-5, rtol=0)
    assert (real(padded, mask) - real(without_adapters, mask)).abs().max() > 1e-2  # the adapters do act


class ScaledLinear(nn.Linear):
    """A custom linear: its forward is not `weight @ x + bias`."""

    def forward(self, inputs):
        return 2 * super().forward(inputs)


@pytest.mark.parametrize("change", ["custom_linear", "forward_hook", "parametrization"])
def test_replaced_hooked_or_parametrized_linears_step_aside(model, spy, change):
    subject = copy.deepcopy(model)
    layer = subject.encoder.layer[0]
    if change == "custom_linear":
        replacement = ScaledLinear(32, 64)
        replacement.load_state_dict(layer.intermediate.dense.state_dict())
        layer.intermediate.dense = replacement
    elif change == "forward_hook":
        layer.output.dense.register_forward_hook(lambda module, inputs, output: output * 0.5)
    else:
        torch.nn.utils.parametrize.register_parametrization(layer.intermediate.dense, "weight", _Halved())
    input_ids, mask = random_padded_batch(LENGTHS, 120)
    padded, default = padded_and_default(subject, input_ids, mask)
    assert spy.packed >= 1 and spy.prepared == subject.config.num_hidden_layers - 1  # only layer 0 steps aside
    torch.testing.assert_close(real(default, mask), real(padded, mask), atol=1e-5, rtol=0)
    with torch.no_grad():
        unchanged = model(input_ids, attention_mask=mask, unpad_inputs=False).last_hidden_state
    assert (real(padded, mask) - real(unchanged, mask)).abs().max() > 1e-3


class ShiftedLayerNorm(nn.LayerNorm):
    """A custom LayerNorm: its forward is not the plain normalization."""

    def forward(self, inputs):
        return super().forward(inputs) + 0.25


@pytest.mark.parametrize("change", ["custom_layer_norm", "forward_hook"])
def test_prepared_layers_run_replaced_or_hooked_layer_norms_as_modules(model, spy, change):
    """The prepared kernels call a plain LayerNorm's function directly; any other runs as its module would."""
    subject = copy.deepcopy(model)
    layer = subject.encoder.layer[-1]  # the last: no LayerNorm after it to normalize the change away
    if change == "custom_layer_norm":
        replacement = ShiftedLayerNorm(32, eps=layer.attention.output.LayerNorm.eps)
        replacement.load_state_dict(layer.attention.output.LayerNorm.state_dict())
        layer.attention.output.LayerNorm = replacement
    else:
        layer.output.LayerNorm.register_forward_hook(lambda module, inputs, output: output * 0.5)
    input_ids, mask = random_padded_batch(LENGTHS, 120)
    padded, default = padded_and_default(subject, input_ids, mask)
    assert spy.packed == 1 and spy.prepared == subject.config.num_hidden_layers  # the projections are plain
    torch.testing.assert_close(real(default, mask), real(padded, mask), atol=1e-5, rtol=0)
    with torch.no_grad():
        unchanged = model(input_ids, attention_mask=mask, unpad_inputs=False).last_hidden_state
    assert (real(padded, mask) - real(unchanged, mask)).abs().max() > 1e-3


def test_autocast_packs_but_runs_the_modules_and_matches_the_padded_path(model, spy):
    """Trainer's `bf16=True` evaluation runs under CPU autocast, where each module picks its own dtype."""
    input_ids, mask = random_padded_batch(LENGTHS, 120)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        padded, default = padded_and_default(model, input_ids, mask)
    assert spy.packed == 1 and spy.prepared == 0
    torch.testing.assert_close(real(default, mask), real(padded, mask), atol=1e-6, rtol=0)


class _Halved(nn.Module):
    def forward(self, weight):
        return weight * 0.5


@pytest.mark.parametrize(
    "device_map",
    [
        {"embeddings": "disk", "encoder.layer.0": "cpu", "encoder.layer.1": "disk"},
        {"embeddings": "cpu", "encoder.layer.0": "disk", "encoder.layer.1": "cpu"},
    ],
    ids=["embeddings-offloaded", "layer-offloaded"],
)
def test_accelerate_disk_offload_runs_and_matches(model, spy, device_map, tmp_path):
    model.save_pretrained(tmp_path / "repo")
    offloaded = XLMRModel.from_pretrained(
        tmp_path / "repo", add_pooling_layer=False, device_map=device_map, offload_folder=str(tmp_path / "offload")
    ).eval()
    input_ids, mask = random_padded_batch(LENGTHS, 120)
    with torch.no_grad():
        expected = model(input_ids, attention_mask=mask, unpad_inputs=False).last_hidden_state
        for unpad_inputs in (None, False, True):
            states = offloaded(input_ids, attention_mask=mask, unpad_inputs=unpad_inputs).last_hidden_state
            torch.testing.assert_close(real(states, mask), real(expected, mask), atol=1e-6, rtol=0)
    assert spy.packed == 2 and spy.prepared == 0  # packed twice (default and True), never on prepared weights


def test_evaluation_after_trainer_training_sees_the_trained_weights(tmp_path):
    """Trainer's default optimizer (fused AdamW) updates weights without moving their version counters:
    prepared weights built before training must not survive it."""
    from datasets import Dataset

    torch.manual_seed(0)
    classifier = XLMRForSequenceClassification(XLMRConfig(**tiny_config_kwargs(num_labels=2)))
    input_ids, mask = random_padded_batch(LENGTHS * 4, 120, seed=1)
    labels = (input_ids[:, 1] % 2).tolist()
    rows = [{"input_ids": ids[m.bool()].tolist(), "labels": label} for ids, m, label in zip(input_ids, mask, labels)]
    classifier.eval()
    with torch.no_grad():
        classifier(input_ids, attention_mask=mask)  # builds the prepared weights
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=8, num_train_epochs=3, learning_rate=1e-2,
        report_to="none", save_strategy="no", use_cpu=True, seed=0,
    )  # fmt: skip
    collator = transformers.DataCollatorWithPadding(_PaddingOnly())
    transformers.Trainer(
        model=classifier, args=args, train_dataset=Dataset.from_list(rows), data_collator=collator
    ).train()
    classifier.eval()
    with torch.no_grad():
        default = classifier(input_ids, attention_mask=mask).logits
        padded = classifier(input_ids, attention_mask=mask, unpad_inputs=False).logits
    torch.testing.assert_close(default, padded, atol=1e-5, rtol=0)


class _PaddingOnly:
    """The least a collator needs of a tokenizer: how to pad."""

    pad_token_id = 1
    padding_side = "right"
    model_input_names = ["input_ids", "attention_mask"]

    def pad(self, features, padding=True, max_length=None, pad_to_multiple_of=None, return_tensors="pt"):
        width = max(len(feature["input_ids"]) for feature in features)
        batch = {
            "input_ids": torch.tensor([f["input_ids"] + [1] * (width - len(f["input_ids"])) for f in features]),
            "attention_mask": torch.tensor(
                [[1] * len(f["input_ids"]) + [0] * (width - len(f["input_ids"])) for f in features]
            ),
            "labels": torch.tensor([f["labels"] for f in features]),
        }
        return batch


# ------------------------------------------------------------------------------------- export and compile


def test_torch_export_with_dynamic_batch_and_sequence(model):
    input_ids, mask = random_padded_batch(LENGTHS, 120)
    batch, sequence = torch.export.Dim("batch", min=1, max=64), torch.export.Dim("sequence", min=2, max=512)
    shapes = {"input_ids": {0: batch, 1: sequence}, "attention_mask": {0: batch, 1: sequence}}
    program = torch.export.export(model, (input_ids,), {"attention_mask": mask}, dynamic_shapes=shapes)
    other_ids, other_mask = random_padded_batch([12, 3, 6], 120, seed=7)
    exported = program.module()(other_ids, attention_mask=other_mask).last_hidden_state
    with torch.no_grad():
        eager = model(other_ids, attention_mask=other_mask, unpad_inputs=False).last_hidden_state
    torch.testing.assert_close(exported, eager, atol=1e-5, rtol=0)


@pytest.mark.parametrize("dynamo", [True, False], ids=["dynamo", "legacy"])
def test_onnx_export_runs_in_onnxruntime_with_dynamic_axes(model, dynamo, tmp_path):
    import onnxruntime

    input_ids, mask = random_padded_batch(LENGTHS, 120)
    axes = {0: "batch", 1: "sequence"}
    path = str(tmp_path / "model.onnx")
    options = (
        {"dynamic_shapes": (axes, axes)} if dynamo else {"dynamic_axes": {"input_ids": axes, "attention_mask": axes}}
    )
    torch.onnx.export(model, (input_ids, mask), path, dynamo=dynamo, input_names=["input_ids", "attention_mask"],
                      output_names=["last_hidden_state"], **options)  # fmt: skip
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    other_ids, other_mask = random_padded_batch([12, 3, 6], 120, seed=7)
    (onnx_states,) = session.run(None, {"input_ids": other_ids.numpy(), "attention_mask": other_mask.numpy()})[:1]
    with torch.no_grad():
        eager = model(other_ids, attention_mask=other_mask, unpad_inputs=False).last_hidden_state
    torch.testing.assert_close(torch.from_numpy(onnx_states), eager, atol=1e-5, rtol=0)


def test_torch_compile_with_default_settings(model):
    input_ids, mask = random_padded_batch(LENGTHS, 120)
    compiled = torch.compile(copy.deepcopy(model))
    with torch.no_grad():
        states = compiled(input_ids, attention_mask=mask).last_hidden_state
        eager = model(input_ids, attention_mask=mask, unpad_inputs=False).last_hidden_state
    torch.testing.assert_close(real(states, mask), real(eager, mask), atol=1e-5, rtol=0)
