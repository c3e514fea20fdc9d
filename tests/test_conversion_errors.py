"""Bad checkpoints: each gives one clear error line from `xlmr convert` and leaves no output behind."""

from __future__ import annotations

import os
import subprocess
import sys
import types

import pytest
import torch

from conversion import convert_fairseq_checkpoint
from conversion.convert import ConversionError
from tests.support.cli import assert_nothing_written, assert_one_line_error, run_xlmr
from tests.support.processes import REPO_ROOT


def run_cli(capsys, *arguments) -> tuple[int, str]:
    return run_xlmr(capsys, "convert", *arguments)


class CreatesAFile:
    """A pickle payload: unpickling it calls os.system('touch MARKER')."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_that_would_run_code_is_refused_and_never_runs(tmp_path, fairseq_checkpoint):
    source = fairseq_checkpoint()
    marker = tmp_path / "payload-ran"
    payload = torch.load(source / "model.pt", weights_only=False)
    payload["extra_state"]["evil"] = CreatesAFile(marker)
    torch.save(payload, source / "model.pt")
    # Sanity check of the test itself: a plain unsafe load does run the payload.
    torch.load(source / "model.pt", weights_only=False)
    assert marker.exists()
    marker.unlink()

    output = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "modeling_xlmr.cli", "convert", str(source), str(output)],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=300,
    )
    error = assert_one_line_error(result.returncode, result.stderr, "refusing", "system", "could run code")
    assert str(source / "model.pt") in error
    assert not marker.exists()
    assert_nothing_written(tmp_path, "fairseq")


def truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def corrupt(path):
    data = bytearray(path.read_bytes())
    data[100:4000] = os.urandom(3900)
    path.write_bytes(bytes(data))


def drop_last_dictionary_entry(path):
    lines = path.read_text(encoding="utf-8").split("\n")  # fairseq's line breaks only
    path.write_text("\n".join(lines[:-2]) + "\n", encoding="utf-8")


@pytest.mark.parametrize(
    "damage,fragments",
    [
        pytest.param(
            lambda d: truncate(d / "model.pt"),
            ["model.pt", "corrupt or truncated", "download it again"],
            id="truncated-model.pt",
        ),
        pytest.param(lambda d: corrupt(d / "model.pt"), ["model.pt", "corrupt or truncated"], id="corrupt-model.pt"),
        pytest.param(
            lambda d: (d / "model.pt").write_bytes(b"not a checkpoint"), ["corrupt or truncated"], id="not-a-checkpoint"
        ),
        pytest.param(lambda d: (d / "dict.txt").unlink(), ["dict.txt is missing"], id="missing-dict.txt"),
        pytest.param(
            lambda d: (d / "sentencepiece.bpe.model").unlink(), ["sentencepiece.bpe.model is missing"], id="missing-spm"
        ),
        pytest.param(
            lambda d: drop_last_dictionary_entry(d / "dict.txt"),
            ["gives", "rows", "dict.txt that was released"],
            id="vocab-mismatch",
        ),
        pytest.param(
            lambda d: (d / "dict.txt").write_text("word\n"),
            ["dict.txt line 1 is not '<symbol> <count>'"],
            id="malformed-dict.txt",
        ),
    ],
)
def test_damaged_inputs_give_one_line_and_no_output(tmp_path, fairseq_checkpoint, capsys, damage, fragments):
    source = fairseq_checkpoint()
    damage(source)
    status, stderr = run_cli(capsys, source, tmp_path / "out")
    assert_one_line_error(status, stderr, *fragments)
    assert_nothing_written(tmp_path, "fairseq")


def test_damaged_archive_gives_one_line_and_no_output(tmp_path, fairseq_checkpoint, capsys):
    from conversion.synthetic import pack_fairseq_archive

    archive = pack_fairseq_archive(fairseq_checkpoint(), tmp_path / "xlmr.tiny.v0.tar.gz")
    truncate(archive)
    status, stderr = run_cli(capsys, archive, tmp_path / "out")
    assert_one_line_error(status, stderr, "xlmr.tiny.v0.tar.gz", "download it again")
    assert_nothing_written(tmp_path, "fairseq", "xlmr.tiny.v0.tar.gz")

    incomplete = pack_fairseq_archive(
        tmp_path / "fairseq", tmp_path / "incomplete.tar.gz", files=["model.pt", "dict.txt"]
    )
    status, stderr = run_cli(capsys, incomplete, tmp_path / "out")
    assert_one_line_error(status, stderr, "has no sentencepiece.bpe.model")


@pytest.mark.parametrize(
    "overrides,fragment",
    [
        (dict(encoder_normalize_before=True), "pre-LayerNorm"),
        (dict(no_scale_embedding=False), "scales token embeddings"),
        (dict(activation_fn="relu"), "activation is 'relu'"),
        (dict(untie_weights_roberta=True), "not tied"),
    ],
)
def test_checkpoints_that_are_not_post_layernorm_xlmr_are_refused(
    tmp_path, fairseq_checkpoint, capsys, overrides, fragment
):
    source = fairseq_checkpoint(layout="cfg", argument_overrides=overrides)
    status, stderr = run_cli(capsys, source, tmp_path / "out")
    assert_one_line_error(status, stderr, "not a post-LayerNorm XLM-R", fragment)
    assert_nothing_written(tmp_path, "fairseq")


def add_final_layer_norm(state):
    return {
        **state,
        "encoder.sentence_encoder.layer_norm.weight": torch.ones(32),
        "encoder.sentence_encoder.layer_norm.bias": torch.zeros(32),
    }


def untie_lm_head(state):
    return {**state, "encoder.lm_head.weight": state["encoder.lm_head.weight"] + 1}


@pytest.mark.parametrize(
    "transform,fragments",
    [
        (add_final_layer_norm, ["pre-LayerNorm"]),
        (untie_lm_head, ["LM head weight differs"]),
        (lambda s: {**s, "encoder.sentence_encoder.mystery.weight": torch.ones(3)}, ["does not use", "mystery"]),
        (lambda s: {k: v for k, v in s.items() if not k.endswith("layers.1.fc2.bias")}, ["lacks", "fc2.bias"]),
    ],
    ids=["pre-ln-weights", "untied-lm-head", "unknown-tensor", "missing-tensor"],
)
def test_state_dicts_that_do_not_fit_xlmr_are_refused(tmp_path, fairseq_checkpoint, capsys, transform, fragments):
    source = fairseq_checkpoint(state_transform=transform)
    status, stderr = run_cli(capsys, source, tmp_path / "out")
    assert_one_line_error(status, stderr, *fragments)
    assert_nothing_written(tmp_path, "fairseq")


@pytest.mark.parametrize(
    "arguments,fragment",
    [
        ([], "choose the one AutoModelForSequenceClassification loads with --head"),
        (["--head", "nli"], "--head 'nli' is not in the checkpoint (its classification heads: mnli, sentiment)"),
        (["--head", "mnli", "--labels", "a,b"], "--labels gives 2 names but head 'mnli' has 3 classes"),
    ],
)
def test_head_and_label_mistakes_are_named(tmp_path, fairseq_checkpoint, capsys, arguments, fragment):
    source = fairseq_checkpoint(classification_heads={"mnli": 3, "sentiment": 2})
    status, stderr = run_cli(capsys, source, tmp_path / "out", *arguments)
    assert_one_line_error(status, stderr, fragment)
    assert_nothing_written(tmp_path, "fairseq")


def test_missing_source_is_named(tmp_path, capsys):
    status, stderr = run_cli(capsys, tmp_path / "nowhere", tmp_path / "out")
    assert_one_line_error(status, stderr, "nowhere does not exist")
    assert_nothing_written(tmp_path)


def test_verification_catches_a_wrong_weight_mapping(tmp_path, fairseq_checkpoint, monkeypatch):
    from conversion import mapping

    swapped = [
        (pattern, replacement.replace(".query.", ".KEY.").replace(".key.", ".query.").replace(".KEY.", ".key."))
        for pattern, replacement in mapping._ENCODER_RULES
    ]
    monkeypatch.setattr(mapping, "_ENCODER_RULES", swapped)
    with pytest.raises(ConversionError, match=r"verification failed: max abs difference .* exceeds 0.0001"):
        convert_fairseq_checkpoint(fairseq_checkpoint(), tmp_path / "out", log=lambda message: None)
    assert_nothing_written(tmp_path, "fairseq")


def test_an_interrupted_run_leaves_no_output_and_keeps_the_old_one(tmp_path, fairseq_checkpoint, monkeypatch):
    from conversion import convert

    source = fairseq_checkpoint()
    output = tmp_path / "out"
    output.mkdir()
    (output / "config.json").write_text("previous conversion")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(convert, "verify_conversion", interrupted)
    with pytest.raises(KeyboardInterrupt):
        convert_fairseq_checkpoint(source, output, overwrite=True, log=lambda message: None)
    assert [path.name for path in output.iterdir()] == ["config.json"]
    assert (output / "config.json").read_text() == "previous conversion"
    assert_nothing_written(tmp_path, "fairseq", "out")


def test_sigterm_during_conversion_leaves_no_output(tmp_path, fairseq_checkpoint):
    source = fairseq_checkpoint()
    output = tmp_path / "out"
    process = subprocess.Popen(
        [sys.executable, "-m", "modeling_xlmr.cli", "convert", str(source), str(output)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO_ROOT,
    )
    # Wait until the converter is writing into its temporary directory, then stop it.
    for line in process.stderr:
        if line.startswith("writing"):
            process.terminate()
            break
    process.communicate(timeout=120)
    assert process.returncode == 130
    assert_nothing_written(tmp_path, "fairseq")


def test_2019_training_meters_in_extra_state_load_without_running_their_code(tmp_path, fairseq_checkpoint, monkeypatch):
    """2019 fairseq pickled its meter objects into extra_state; they are rebuilt as inert stand-ins."""
    package, meters = types.ModuleType("fairseq"), types.ModuleType("fairseq.meters")
    package.meters = meters

    class AverageMeter:
        def __setstate__(self, state):  # would run on a plain unpickle; the safe loader never calls it
            raise AssertionError("meter code ran")

    AverageMeter.__module__, AverageMeter.__qualname__ = "fairseq.meters", "AverageMeter"
    meters.AverageMeter = AverageMeter
    monkeypatch.setitem(sys.modules, "fairseq", package)  # a stand-in: this test must not need fairseq
    monkeypatch.setitem(sys.modules, "fairseq.meters", meters)
    source = fairseq_checkpoint()
    payload = torch.load(source / "model.pt", weights_only=False)
    meter = AverageMeter()
    meter.__dict__.update(val=0.5, avg=0.25, sum=1.0, count=4)
    payload["extra_state"]["train_meters"] = {"train_loss": meter}
    torch.save(payload, source / "model.pt")
    monkeypatch.delitem(sys.modules, "fairseq.meters")  # the converter must not need the class

    result = convert_fairseq_checkpoint(source, tmp_path / "out", log=lambda message: None)
    assert result.verification.max_abs_difference < 1e-4
