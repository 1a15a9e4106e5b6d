"""The embedded default model (SmolLM2-135M-Instruct GGUF): a sensible answer, and agreement
with transformers' independent implementation on the same dequantized weights (logits within
1e-3 relative, identical greedy continuations, identical tokenization)."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from ppl.models.lm import SamplingParams

pytestmark = pytest.mark.default_model

CHAT_PROMPT = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
PROMPTS = [
    CHAT_PROMPT,
    "Once upon a time, in a small village by the sea,",
    "def fibonacci(n):\n    ",
    "Question: 17 + 25 = ? Answer step by step.\n\n",
]
TOKENIZER_SAMPLE = [
    "Hello, world!",
    "1234567890 and 3.14159, 1e-5, $1,000,000",
    "spaces:  two   three    four\ttab\nnewline\n\n\nthree newlines",
    "unicode: café naïve Ωμέγα 漢字 日本語 emoji 🤖🚀 ümlaut",
    "<|im_start|>user\nhi<|im_end|>\n<|endoftext|>",
    "   leading and trailing   ",
    "don't can't I'm we'll they're",
    "x" * 50 + " " + "ab" * 20,
    "",
]


def test_chat_answer_is_sensible(default_lm):
    result = default_lm.generate(
        jax.random.key(0),
        ["What is the capital of France?"],
        chat=True,
        max_new_tokens=32,
        sampling=SamplingParams(0.0),
    )
    assert result.texts[0] == "The capital of France is Paris."
    assert result.finish_reasons == ["eos"]


def test_chat_template_from_gguf(default_lm):
    text = default_lm.tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}])
    assert text.endswith("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
    assert text.startswith("<|im_start|>system\n")


@pytest.fixture(scope="module")
def hf_reference(default_model_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    directory, name = str(default_model_path.parent), default_model_path.name
    model = transformers.AutoModelForCausalLM.from_pretrained(
        directory, gguf_file=name, dtype=torch.float32
    ).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(directory, gguf_file=name)
    return torch, model, tokenizer


@pytest.mark.reference
def test_tokenizer_matches_reference(default_lm, hf_reference):
    _, _, reference = hf_reference
    for text in TOKENIZER_SAMPLE:
        ids = default_lm.tokenizer.encode(text)
        assert ids == reference(text)["input_ids"], text
        assert default_lm.tokenizer.decode(ids) == reference.decode(ids), text


@pytest.mark.reference
def test_logits_match_reference(default_lm, hf_reference):
    torch, model, _ = hf_reference
    for prompt in PROMPTS:
        ids = default_lm.tokenizer.encode(prompt)
        with torch.no_grad():
            expected = model(torch.tensor([ids])).logits[0].numpy()
        actual = np.asarray(default_lm.logits(ids))
        relative = np.abs(actual - expected).max() / np.abs(expected).max()
        assert relative < 1e-3, (prompt, relative)


@pytest.mark.reference
def test_greedy_continuations_match_reference(default_lm, hf_reference):
    """32 greedy tokens (end-of-sequence not special-cased) are the reference's argmax at every
    position, so the reference's own greedy decoding gives the same 32 tokens."""
    torch, model, _ = hf_reference
    lm = default_lm
    token_ids = lm.encode_prompts(PROMPTS)
    logits, cache = lm.prefill(token_ids, 128)
    out = lm.decode(jax.random.key(0), cache, logits, 32, SamplingParams(0.0), stop_at_eos=False)
    for prompt_ids, generated in zip(token_ids, np.asarray(out.tokens), strict=True):
        sequence = list(prompt_ids) + generated.tolist()
        with torch.no_grad():
            reference = model(torch.tensor([sequence])).logits[0].numpy()
        argmax = reference[len(prompt_ids) - 1 : -1].argmax(axis=-1)
        np.testing.assert_array_equal(generated, argmax)
