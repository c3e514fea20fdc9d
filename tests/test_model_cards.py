"""Model cards for xlmr.base.v0 / xlmr.large.v0 (config only, no weights): valid Hub metadata and the seed's facts."""

from __future__ import annotations

import pytest
from huggingface_hub import ModelCard

from model_cards import languages, render_model_card
from modeling_xlmr.configuration_xlmr import XLMRConfig

# fairseq's XLM-R README (the seed), xlmr.large.v0, TRANSLATE-TRAIN-ALL.
SEED_XNLI_LARGE = {
    "en": 88.7,
    "fr": 85.2,
    "es": 85.6,
    "de": 84.6,
    "el": 83.6,
    "bg": 85.5,
    "ru": 82.4,
    "tr": 81.6,
    "ar": 80.9,
    "vi": 83.4,
    "th": 80.9,
    "zh": 83.3,
    "hi": 79.8,
    "sw": 75.9,
    "ur": 74.3,
}
SHA256 = "0123456789abcdef" * 4


def parameter_count(config: XLMRConfig) -> int:
    """Parameters of encoder + LM head as stored (tied decoder counted once), from the sizes alone."""
    hidden, ffn, vocab = config.hidden_size, config.intermediate_size, config.vocab_size
    embeddings = (vocab + config.max_position_embeddings + config.type_vocab_size) * hidden + 2 * hidden
    layer = 4 * (hidden * hidden + hidden) + (hidden * ffn + ffn) + (ffn * hidden + hidden) + 4 * hidden
    lm_head = hidden * hidden + hidden + 2 * hidden + vocab
    return embeddings + config.num_hidden_layers * layer + lm_head


def render(config: XLMRConfig, tmp_path, **config_fields) -> ModelCard:
    values = {**config.to_dict(), **config_fields}
    text = render_model_card(
        config=values,
        parameter_count=parameter_count(config),
        source_name="model.pt",
        source_sha256=SHA256,
        max_abs_difference=2.5e-6,
    )
    path = tmp_path / "README.md"
    path.write_text(text, encoding="utf-8")
    return ModelCard.load(path)


@pytest.mark.parametrize("size", ["base", "large"])
def test_cards_carry_valid_hub_metadata(tmp_path, size):
    config = XLMRConfig() if size == "base" else XLMRConfig.large()
    card = render(config, tmp_path)
    data = card.data
    assert len(data.language) == 100 and len(set(data.language)) == 100
    assert {"en", "fr", "sw", "ur", "zh-Hans", "zh-Hant", "hi-Latn", "my-Qaag"} <= set(data.language)
    assert data.license == "mit"
    assert data.datasets == ["cc100"]
    assert data.library_name == "transformers"
    assert data.pipeline_tag == "fill-mask"
    assert "xlm-roberta" in data.tags
    assert f"xlmr.{size}.v0" in card.text
    assert SHA256 in card.text
    assert f"{parameter_count(config):,}" in card.text
    assert "512 tokens" in card.text
    assert "Unsupervised Cross-lingual Representation Learning at Scale" in card.text
    assert "trust_remote_code=True" in card.text and "XLMRHubInterface" in card.text
    assert f"https://dl.fbaipublicfiles.com/fairseq/models/xlmr.{size}.v0.tar.gz" in card.text


def test_large_card_has_the_seed_xnli_results_as_model_index(tmp_path):
    card = render(XLMRConfig.large(), tmp_path)
    results = card.data.eval_results
    # model-index values are fractions, the unit `xlmr evaluate --update-model-card` adds to the same list
    assert {result.dataset_config: result.metric_value for result in results} == {
        language: round(value / 100, 4) for language, value in SEED_XNLI_LARGE.items()
    }
    assert {result.dataset_type for result in results} == {"xnli"}
    assert {result.metric_type for result in results} == {"accuracy"}
    assert "model-index" in card.content
    assert "| 88.7 | 85.2 | 85.6 |" in card.text


def test_base_card_claims_no_results(tmp_path):
    card = render(XLMRConfig(), tmp_path)
    assert card.data.eval_results is None
    assert "model-index" not in card.content
    assert "did not publish evaluation results for `xlmr.base.v0`" in " ".join(card.text.split())
    assert "88.7" not in card.text


def test_card_names_the_classification_head_and_labels(tmp_path):
    heads = {
        "mnli": {"num_classes": 3, "labels": ["contradiction", "neutral", "entailment"]},
        "sst": {"num_classes": 2, "labels": None},
    }
    card = render(
        XLMRConfig.large(), tmp_path, fairseq_head_name="mnli", fairseq_classification_heads=heads, dtype="bfloat16"
    )
    assert card.data.pipeline_tag == "text-classification"
    assert "classification head `mnli` (3 classes: contradiction, neutral, entailment)" in card.text
    assert "classification head `sst` (2 classes)" in card.text
    assert 'xlmr.predict("sst", tokens)' in card.text
    assert "| Weights dtype | bfloat16 |" in card.text


def test_other_sizes_get_the_generic_card(tmp_path):
    config = XLMRConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, vocab_size=300
    )
    card = render(config, tmp_path)
    assert "xlmr.base.v0" not in card.text and "xlmr.large.v0" not in card.text
    assert card.data.eval_results is None and len(card.data.language) == 100


def test_language_list_is_fairseqs_100_languages():
    entries = languages()
    assert len(entries) == 100
    names = [entry["name"] for entry in entries]
    assert names[0] == "Afrikaans" and names[-1] == "Yiddish"
    assert {"Bengali (romanized)", "Burmese (Zawgyi font)", "Chinese (Traditional)", "Western Frisian"} <= set(names)


@pytest.mark.parametrize("config", [XLMRConfig(), XLMRConfig.large()], ids=["base", "large"])
def test_card_yaml_lists_every_language_as_a_code_of_the_100(config, tmp_path):
    import yaml

    card = render(config, tmp_path)
    front_matter = card.content.split("---")[1]
    listed = yaml.safe_load(front_matter)["language"]  # what the Hub reads: `no` unquoted would be False
    assert listed == [entry["code"] for entry in languages()]
    assert all(isinstance(code, str) for code in listed) and "no" in listed


def test_adding_results_rewrites_the_evaluation_section_in_one_unit(tmp_path):
    from modeling_xlmr.nli.evaluation import AccuracyTable, update_model_card

    for config in (XLMRConfig(), XLMRConfig.large()):
        card = render(config, tmp_path)
        path = tmp_path / "README.md"
        path.write_text(str(card), encoding="utf-8")
        table = AccuracyTable(model="mine", accuracy={"en": 0.5, "fr": 0.25}, examples={"en": 4, "fr": 4})
        updated = update_model_card(str(path), table, dataset_split="validation")
        assert "did not publish evaluation results" not in updated.text and "| 88.7 |" not in updated.text
        assert "`mine` | 50.0 | 25.0 | 37.5" in updated.text and updated.text.count("## Evaluation") == 1
        values = [result.metric_value for result in updated.data.eval_results]
        assert all(0 <= value <= 1 for value in values)  # fractions only, seed results and new ones alike
