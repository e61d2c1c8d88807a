"""A tiny random Llama and a real byte-level BPE tokenizer, built in-process for tests (``hf`` extra).

No file is read or downloaded: the tokenizer is trained on a few sentences by the ``tokenizers``
library (byte-level BPE, so any text round-trips), given ChatML special tokens and a ChatML chat
template like SmolLM2's; the model is a ``LlamaForCausalLM`` (RoPE, grouped-query attention) with
random weights from a seed. A build takes well under a second, and the same seed gives the same
weights, hence the same :func:`~memos_agents.models.fingerprint.fingerprint`.
"""

from __future__ import annotations

from typing import Any

from memos_agents.errors import require

#: ChatML, as SmolLM2-Instruct's template renders it (without the default system prompt).
CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_CORPUS = [
    "Caroline moved to Lisbon in May 2023 and adopted a dog named Max.",
    "Melanie paints landscapes on weekends; her favourite colour is blue.",
    "What does the user remember about the trip to Warsaw last summer?",
    "The meeting is on Tuesday at 10:00. Bring the quarterly report.",
    "[8 May 2023] user: I started learning the violin. assistant: That is great!",
    "0123456789 .,;:!?'\"()[]{}<>-_/+=*&%$#@ abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ",
]


def tiny_tokenizer(vocab_size: int = 400) -> Any:
    """Return a ``PreTrainedTokenizerFast`` (byte-level BPE, ChatML specials and template)."""
    try:
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
        from transformers import PreTrainedTokenizerFast
    except ImportError as exc:
        raise require("transformers", "hf") from exc
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>", pad_token="<|endoftext|>"
    )
    fast.chat_template = CHATML_TEMPLATE
    return fast


def tiny_llama(
    seed: int = 0, *, layers: int = 2, dtype: str = "float32", vocab_size: int = 400, initializer_range: float = 0.2
) -> tuple[Any, Any]:
    """Return ``(model, tokenizer)``: a random ``LlamaForCausalLM`` (eval mode) and :func:`tiny_tokenizer`.

    Args:
        seed: Torch seed of the weights (same seed, same weights).
        layers: Decoder layers (default 2).
        dtype: ``"float32"`` (default) or ``"bfloat16"``.
        vocab_size: Vocabulary of the tokenizer and the model (default 400).
        initializer_range: Std of the random weights (default 0.2: large enough that greedy
            decoding does not repeat one token, so output comparisons mean something).

    """
    try:
        import torch
        from transformers import LlamaConfig, LlamaForCausalLM
    except ImportError as exc:
        raise require("transformers", "hf") from exc
    tokenizer = tiny_tokenizer(vocab_size)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
        initializer_range=initializer_range,
    )
    config.name_or_path = f"tiny-llama-seed{seed}"
    gen = torch.random.fork_rng()
    with gen:
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model = model.to(getattr(torch, dtype)).eval()
    return model, tokenizer
