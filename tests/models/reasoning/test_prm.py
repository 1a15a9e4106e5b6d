"""Process reward models: each head layout against transformers (small random checkpoints
written by transformers itself), the step positions against the model cards' own recipes,
batching, and the errors for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tokenizers
from safetensors.numpy import load_file, save_file
from tokenizers import decoders, models, pre_tokenizers

from ppl.models.lm import LanguageModel, ModelLoadError
from ppl.models.lm.architectures.qwen2 import QWEN2_PATTERN
from ppl.models.lm.cache import init_cache
from ppl.models.lm.tiny import byte_level_vocabulary, tiny_config, tiny_language_model
from ppl.models.lm.transformer import forward
from ppl.models.reasoning.prm import (
    MathShepherdFormat,
    QwenMathFormat,
    ValueHeadFormat,
    bucket_width,
    load_prm,
)
from tests.models.lm.test_safetensors_loader import write_hf_directory, write_tokenizer_files

SPECIALS = ("<|im_start|>", "<|im_end|>", "<extra_0>")
QWEN_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
PROMPTS = ["What is 2 + 3 * 4?", "Tom has 3 apples and eats one. How many are left?"]
STEPS = [
    ["3 * 4 = 12.", "2 + 12 = 14.", "The answer is 14."],
    ["He had 3.", "3 - 1 = 2, so 2 are left."],
]
CONTEXT = 256


def write_tokenizer(directory: Path) -> int:
    """A byte-level BPE tokenizer with Qwen2's pre-tokenizer, its chat tokens, `<extra_0>` and
    "ки"; returns its size."""
    tokens, merges = byte_level_vocabulary()
    backend = tokenizers.Tokenizer(
        models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges)
    )
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(tokenizers.Regex(QWEN2_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens(
        [tokenizers.AddedToken(t, special=True, normalized=False) for t in SPECIALS]
    )
    backend.add_tokens([tokenizers.AddedToken("ки", special=False, normalized=False)])
    directory.mkdir(parents=True, exist_ok=True)
    backend.save(str(directory / "tokenizer.json"))
    config = {"chat_template": QWEN_TEMPLATE, "eos_token": "<|im_end|>"}
    (directory / "tokenizer_config.json").write_text(json.dumps(config))
    return int(backend.get_vocab_size())


def small_config(transformers, kind: str, vocab: int, **extra):
    config_cls = {"qwen2": transformers.Qwen2Config, "mistral": transformers.MistralConfig}
    return config_cls.get(kind, transformers.LlamaConfig)(
        vocab_size=vocab,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=CONTEXT,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        **extra,
    )


def randomize(torch, model):
    """Weights larger than the default init, so the comparison tests something."""
    torch.manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.2)
    return model.eval()


def relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    return float(np.abs(actual - expected).max() / np.abs(expected).max())


def softmax(z: np.ndarray) -> np.ndarray:
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


@pytest.fixture(scope="module")
def torch_modules():
    return pytest.importorskip("torch"), pytest.importorskip("transformers")


def reference_tokenizer(transformers, directory: Path):
    """transformers' tokenizer of tokenizer.json as written (AutoTokenizer would rebuild the
    pre-tokenizer of the class the config names)."""
    return transformers.PreTrainedTokenizerFast.from_pretrained(str(directory))


# --- each layout against transformers ----------------------------------------------------


@pytest.mark.reference
def test_qwen2_math_prm_matches_transformers(torch_modules, tmp_path):
    torch, transformers = torch_modules

    class Qwen2ForProcessRewardModel(transformers.Qwen2PreTrainedModel):
        """The layout of Qwen2.5-Math-PRM's remote code: backbone, Linear, ReLU, Linear."""

        def __init__(self, config):
            super().__init__(config)
            self.model = transformers.Qwen2Model(config)
            hidden = config.hidden_size
            self.score = torch.nn.Sequential(
                torch.nn.Linear(hidden, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 2)
            )
            self.post_init()

        def forward(self, input_ids):
            return self.score(self.model(input_ids=input_ids).last_hidden_state)

    vocab = write_tokenizer(tmp_path)
    model = randomize(torch, Qwen2ForProcessRewardModel(small_config(transformers, "qwen2", vocab)))
    model.save_pretrained(tmp_path)
    prm = load_prm(tmp_path)
    assert prm.layout == "qwen2_math_prm"
    assert json.loads((tmp_path / "config.json").read_text())["architectures"] == [
        "Qwen2ForProcessRewardModel"
    ]
    reference = reference_tokenizer(transformers, tmp_path)
    separator = reference.convert_tokens_to_ids("<extra_0>")
    actual = prm.head_logits(PROMPTS, STEPS)
    for prompt, steps, logits in zip(PROMPTS, STEPS, actual, strict=True):
        messages = [  # the model card's recipe
            {"role": "system", "content": QwenMathFormat().system_prompt},
            {"role": "user", "content": prompt},
            {"role": "assistant", "content": "<extra_0>".join(steps) + "<extra_0>"},
        ]
        text = reference.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
        ids = reference.encode(text)
        assert prm.encode(prompt, steps) == (ids, [i for i, t in enumerate(ids) if t == separator])
        with torch.no_grad():
            expected = model(torch.tensor([ids]))[0].numpy()[np.asarray(ids) == separator]
        assert relative_error(logits, expected) < 1e-4
        np.testing.assert_allclose(
            prm.rewards_from_logits(logits), softmax(expected)[:, 1], rtol=1e-4
        )


@pytest.mark.reference
def test_math_shepherd_matches_transformers(torch_modules, tmp_path):
    torch, transformers = torch_modules
    vocab = write_tokenizer(tmp_path)
    config = small_config(transformers, "mistral", vocab, sliding_window=None)
    model = randomize(torch, transformers.MistralForCausalLM(config))
    model.save_pretrained(tmp_path)
    prm = load_prm(tmp_path)
    assert prm.layout == "math_shepherd"
    reference = reference_tokenizer(transformers, tmp_path)
    good, bad = reference.encode("+ -", add_special_tokens=False)[::2]  # the model card's ids
    tag = reference.encode("ки", add_special_tokens=False)[-1]
    actual = prm.head_logits(PROMPTS, STEPS)
    for prompt, steps, logits in zip(PROMPTS, STEPS, actual, strict=True):
        ids = reference.encode(prompt + " " + "\n".join(f"{step} ки" for step in steps))
        assert prm.encode(prompt, steps) == (ids, [i for i, t in enumerate(ids) if t == tag])
        with torch.no_grad():
            full = model(torch.tensor([ids])).logits[0].numpy()
        expected = full[np.asarray(ids) == tag][:, [good, bad]]
        assert relative_error(logits, expected) < 1e-4
        np.testing.assert_allclose(
            prm.rewards_from_logits(logits), softmax(expected)[:, 0], rtol=1e-4
        )


@pytest.mark.reference
@pytest.mark.parametrize(("kind", "labels"), [("qwen2", 1), ("llama", 2)])
def test_value_head_matches_transformers(torch_modules, tmp_path, kind, labels):
    torch, transformers = torch_modules
    vocab = write_tokenizer(tmp_path)
    model_cls = {
        "qwen2": transformers.Qwen2ForTokenClassification,
        "llama": transformers.LlamaForTokenClassification,
    }[kind]
    model = randomize(torch, model_cls(small_config(transformers, kind, vocab, num_labels=labels)))
    model.save_pretrained(tmp_path)
    prm = load_prm(tmp_path)
    assert prm.layout == "value_head"
    reference = reference_tokenizer(transformers, tmp_path)
    actual = prm.head_logits(PROMPTS, STEPS)
    for prompt, steps, logits in zip(PROMPTS, STEPS, actual, strict=True):
        ids = reference.encode(prompt + "\n" + "\n\n".join(steps))
        ends = []  # the last token of each step: the end of the prefix that stops there
        for i in range(len(steps)):
            prefix = reference.encode(prompt + "\n" + "\n\n".join(steps[: i + 1]))
            assert ids[: len(prefix)] == prefix
            ends.append(len(prefix) - 1)
        assert prm.encode(prompt, steps) == (ids, ends)
        with torch.no_grad():
            expected = model(torch.tensor([ids])).logits[0].numpy()[ends]
        assert relative_error(logits, expected) < 1e-4
        rewards = 1 / (1 + np.exp(-expected[:, 0])) if labels == 1 else softmax(expected)[:, 1]
        np.testing.assert_allclose(prm.rewards_from_logits(logits), rewards, rtol=1e-4)


# --- without PyTorch: a causal LM of our own as a Math-Shepherd PRM ------------------------


def write_shepherd_checkpoint(directory: Path) -> Path:
    """The tiny byte-level LM saved as `LlamaForCausalLM`: "ки" is four byte tokens there."""
    lm = tiny_language_model(jax.random.key(3), tiny_config(context_length=CONTEXT))
    write_hf_directory(directory, lm)
    config = json.loads((directory / "config.json").read_text())
    config["architectures"] = ["LlamaForCausalLM"]
    (directory / "config.json").write_text(json.dumps(config))
    return directory


@pytest.fixture(scope="module")
def shepherd_dir(tmp_path_factory):
    return write_shepherd_checkpoint(tmp_path_factory.mktemp("shepherd"))


def test_math_shepherd_reads_the_lm_logits_at_the_tags(shepherd_dir):
    prm = load_prm(shepherd_dir)
    lm = LanguageModel.load(shepherd_dir)
    good, bad = (lm.tokenizer.encode(t, add_special_tokens=False)[0] for t in "+-")
    for prompt, steps, logits in zip(PROMPTS, STEPS, prm.head_logits(PROMPTS, STEPS), strict=True):
        ids, positions = prm.encode(prompt, steps)
        assert len(positions) == len(steps)
        for position in positions:  # the last of the tag's byte tokens
            assert lm.tokenizer.decode(ids[position - 3 : position + 1]) == "ки"
        expected = np.asarray(lm.logits(ids))[positions][:, [good, bad]]
        np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)


def test_batches_pad_without_changing_rewards_and_long_candidates_get_nan(shepherd_dir):
    prm = load_prm(shepherd_dir, batch_size=2)
    alone = [prm.step_rewards([p], [s])[0] for p, s in zip(PROMPTS, STEPS, strict=True)]
    too_long = ["word " * CONTEXT]
    together = prm.step_rewards([*PROMPTS, PROMPTS[0], "x"], [*STEPS, too_long, ["y"]])
    for single, batched in zip(alone, together[:2], strict=True):
        np.testing.assert_allclose(batched, single, rtol=1e-5)
    assert np.isnan(together[2]).all() and together[2].shape == (1,)
    assert np.isfinite(together[3]).all() and ((together[3] > 0) & (together[3] < 1)).all()
    assert [bucket_width(n) for n in (1, 32, 33, 100, 1000)] == [32, 32, 36, 104, 1024]


def test_qwen2_math_prm_head_on_our_backbone(tmp_path):
    """Without PyTorch: the head's math and the separator positions, chat and plain."""
    config = tiny_config(
        vocab_size=269, architecture="qwen2", attention_bias=True, context_length=CONTEXT
    )
    lm = tiny_language_model(jax.random.key(5), config)
    directory = write_hf_directory(tmp_path, lm)
    assert write_tokenizer(directory) == config.vocab_size
    rng = np.random.default_rng(0)
    d = config.hidden_size
    head = {
        "score.0.weight": rng.normal(0, 0.3, (d, d)),
        "score.0.bias": rng.normal(0, 0.3, d),
        "score.2.weight": rng.normal(0, 0.3, (2, d)),
        "score.2.bias": rng.normal(0, 0.3, 2),
    }
    tensors = load_file(str(directory / "model.safetensors"))
    tensors.update({k: v.astype(np.float32) for k, v in head.items()})
    save_file(tensors, str(directory / "model.safetensors"))
    separator = 267  # the id of <extra_0>
    plain = load_prm(directory, QwenMathFormat(chat=False))
    ids, positions = plain.encode(PROMPTS[1], STEPS[1])
    assert ids == plain.tokenizer.encode(
        PROMPTS[1] + "\n" + "<extra_0>".join(STEPS[1]) + "<extra_0>"
    )
    assert positions == [i for i, t in enumerate(ids) if t == separator] and len(positions) == 2
    prm = load_prm(directory)
    ids, positions = prm.encode(PROMPTS[1], STEPS[1])
    assert positions == [i for i, t in enumerate(ids) if t == separator] and len(positions) == 2
    assert prm.tokenizer.decode(ids).startswith("<|im_start|>system\nPlease reason step by step")
    cache = init_cache(lm.config, 1, 0)
    hidden, _ = forward(lm.params, lm.config, jnp.asarray([ids]), cache, jnp.asarray([len(ids)]))
    h = np.asarray(hidden[0], np.float64)[positions]
    z = np.maximum(h @ head["score.0.weight"].T + head["score.0.bias"], 0)
    z = z @ head["score.2.weight"].T + head["score.2.bias"]
    logits = prm.head_logits(PROMPTS[1:], STEPS[1:])[0]
    np.testing.assert_allclose(logits, z, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(prm.rewards_from_logits(logits), softmax(z)[:, 1], rtol=1e-4)
    (directory / "tokenizer_config.json").write_text("{}")
    with pytest.raises(ModelLoadError, match="no chat template; pass QwenMathFormat.chat=False."):
        load_prm(directory)
    write_tokenizer_files(directory, lm)  # the byte tokenizer: no <extra_0>, fewer tokens
    with pytest.raises(ModelLoadError, match="the step separator '<extra_0>' is not one token"):
        load_prm(directory)


# --- bad input ------------------------------------------------------------------------------


def test_a_head_of_no_known_layout_is_named_with_the_layouts(shepherd_dir, tmp_path):
    directory = tmp_path / "classifier"
    directory.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (directory / name).write_bytes((shepherd_dir / name).read_bytes())
    config = json.loads((shepherd_dir / "config.json").read_text())
    config["architectures"] = ["LlamaForSequenceClassification"]
    (directory / "config.json").write_text(json.dumps(config))
    tensors = load_file(str(shepherd_dir / "model.safetensors"))
    tensors["score.weight"] = np.zeros((3, config["hidden_size"]), np.float32)
    save_file(tensors, str(directory / "model.safetensors"))
    with pytest.raises(ModelLoadError) as error:
        load_prm(directory)
    message = str(error.value)
    assert "no known process reward head" in message and "LlamaForSequenceClassification" in message
    assert "['score.weight']" in message
    for layout in ("qwen2_math_prm", "math_shepherd", "value_head"):
        assert layout in message
    config["architectures"] = ["LlamaForTokenClassification"]  # 3 labels: not a value head
    (directory / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match="a value head has 1 label .or 2., score.weight has 3"):
        load_prm(directory)
    with pytest.raises(ModelLoadError, match="process reward model directory not found"):
        load_prm(tmp_path / "absent")


def test_a_format_of_another_layout_is_refused(shepherd_dir):
    with pytest.raises(ValueError, match="math_shepherd layout, which takes a MathShepherdFormat"):
        load_prm(shepherd_dir, ValueHeadFormat())
    with pytest.raises(ModelLoadError, match="'plus' is not one token"):
        load_prm(shepherd_dir, MathShepherdFormat(good_token="plus"))
