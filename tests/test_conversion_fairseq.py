"""The converted repo against real fairseq (`XLMRModel.from_pretrained`) on the same fairseq files.

Needs real fairseq, which the test command installs (`bash tests/install_fairseq_reference.sh`: `fairseq-fixed`
on Python 3.11); without it these tests fail rather than skip. The other conversion tests compare with
`reference_forward`; this one also checks that reference itself against fairseq.
"""

from __future__ import annotations

import pytest
import torch
from transformers import (
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
)

from conversion import convert_fairseq_checkpoint
from conversion.reference import reference_forward
from modeling_xlmr import XLMRHubInterface

try:
    import fairseq.models.roberta as fairseq_roberta
except ModuleNotFoundError as error:  # pragma: no cover - the test command installs it
    raise ImportError("real fairseq is the reference here: run `bash tests/install_fairseq_reference.sh`") from error

TOLERANCE = 1e-5
SENTENCES = ["the quick brown fox jumps over a lazy dog", "мы читаем новые книги", "我们 今天 在 公园 里 散步"]
HEADS = {"mnli": 3, "sentiment": 2}


def load_fairseq(directory, monkeypatch):
    # fairseq calls torch.load without weights_only; torch >= 2.6 then refuses its Namespace. The file
    # is our own fixture, so fairseq's unsafe load is fine here.
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    model = fairseq_roberta.XLMRModel.from_pretrained(str(directory), checkpoint_file="model.pt", bpe="sentencepiece")
    return model.eval()


def max_difference(actual, expected) -> float:
    return float((actual.float() - expected.float()).abs().max())


@pytest.mark.parametrize(
    "options",
    [dict(layout="args"), dict(layout="cfg", legacy_names=True), dict(layout="cfg-dict")],
    ids=["args", "cfg-legacy-names", "cfg-dict"],
)
def test_converted_repo_matches_fairseq(tmp_path, fairseq_checkpoint, monkeypatch, options):
    source = fairseq_checkpoint(classification_heads=HEADS, **options)
    output = convert_fairseq_checkpoint(source, tmp_path / "out", head="mnli", log=lambda message: None).output
    fairseq_model = load_fairseq(source, monkeypatch)

    tokenizer = AutoTokenizer.from_pretrained(str(output), trust_remote_code=True)
    masked_lm = AutoModelForMaskedLM.from_pretrained(str(output), trust_remote_code=True).eval()
    classifier = AutoModelForSequenceClassification.from_pretrained(str(output), trust_remote_code=True).eval()
    state = {key: value.float() for key, value in fairseq_model.model.state_dict().items()}

    for sentence in SENTENCES:
        tokens = fairseq_model.encode(sentence)
        assert tokenizer(sentence)["input_ids"] == tokens.tolist()
        with torch.no_grad():
            fairseq_layers = fairseq_model.extract_features(tokens, return_all_hiddens=True)
            fairseq_last = fairseq_model.extract_features(tokens)
            outputs = masked_lm(input_ids=tokens[None], output_hidden_states=True)
            reference = reference_forward(state, tokens[None], num_heads=4, heads=tuple(HEADS))

        assert len(fairseq_layers) == len(outputs.hidden_states) == 3
        for ours, theirs, yardstick in zip(outputs.hidden_states, fairseq_layers, reference.hidden_states, strict=True):
            assert max_difference(ours, theirs) < TOLERANCE
            assert max_difference(yardstick, theirs) < TOLERANCE
        assert max_difference(outputs.hidden_states[-1], fairseq_last) < TOLERANCE
        with torch.no_grad():
            fairseq_logits = fairseq_model.model(tokens[None])[0]
            predicted = fairseq_model.predict("mnli", tokens)
            classifier_logits = classifier(input_ids=tokens[None]).logits
        assert max_difference(outputs.logits, fairseq_logits) < TOLERANCE
        assert max_difference(classifier_logits.log_softmax(-1), predicted) < TOLERANCE
        for name in HEADS:
            with torch.no_grad():
                assert (
                    max_difference(reference.head_logits[name], fairseq_model.predict(name, tokens, return_logits=True))
                    < TOLERANCE
                )


def test_hub_interface_matches_fairseq_hub_interface(tmp_path, fairseq_checkpoint, monkeypatch):
    source = fairseq_checkpoint(classification_heads=HEADS)
    output = convert_fairseq_checkpoint(source, tmp_path / "out", head="sentiment", log=lambda message: None).output
    fairseq_model = load_fairseq(source, monkeypatch)
    ours = XLMRHubInterface.from_pretrained(str(output))
    ours.eval()
    for sentence in SENTENCES:
        tokens = fairseq_model.encode(sentence)
        assert ours.encode(sentence).tolist() == tokens.tolist()
        with torch.no_grad():
            for ours_layer, fairseq_layer in zip(
                ours.extract_features(tokens, return_all_hiddens=True),
                fairseq_model.extract_features(tokens, return_all_hiddens=True),
                strict=True,
            ):
                assert max_difference(ours_layer, fairseq_layer) < TOLERANCE
            for name in HEADS:
                assert max_difference(ours.predict(name, tokens), fairseq_model.predict(name, tokens)) < TOLERANCE
