"""Converts a llama-architecture GGUF file into an MLX model folder that ``mlx_lm.load`` reads.

Three facts make the result answer correctly: tensors renamed to
mlx-lm's llama names, ``rope_traditional`` (GGUF keeps llama.cpp's interleaved
Q/K rows), tied embeddings, and a tokenizer rebuilt from the GGUF metadata.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np

WEIGHT_FORMATS = ("float32", "float16", "q8", "q4")
GGUF_GROUP_SIZE = 32
_CONTROL_TOKEN = 3

_LAYER_NAMES = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
}
_TOP_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm"}
_BLOCK = re.compile(r"^blk\.(\d+)\.(\w+)$")


class GGUFConversionError(ValueError):
    """The GGUF file is not a llama model this converter understands."""


def mlx_name(gguf_base: str) -> str:
    """``blk.3.attn_q`` -> ``model.layers.3.self_attn.q_proj``."""
    if gguf_base in _TOP_NAMES:
        return _TOP_NAMES[gguf_base]
    match = _BLOCK.match(gguf_base)
    if not match or match.group(2) not in _LAYER_NAMES:
        raise GGUFConversionError(f"unexpected GGUF tensor {gguf_base!r}")
    return f"model.layers.{match.group(1)}.{_LAYER_NAMES[match.group(2)]}"


def _scalar(metadata: dict, key: str) -> int | float:
    if key not in metadata:
        raise GGUFConversionError(f"GGUF metadata lacks {key!r}")
    return metadata[key].item()


def model_config(metadata: dict) -> dict:
    """The mlx-lm ``config.json`` of the llama model described by the GGUF metadata."""
    if metadata.get("general.architecture") != "llama":
        raise GGUFConversionError(f"only llama GGUF files are supported, got {metadata.get('general.architecture')!r}")
    heads = int(_scalar(metadata, "llama.attention.head_count"))
    hidden = int(_scalar(metadata, "llama.embedding_length"))
    return {
        "model_type": "llama",
        "hidden_size": hidden,
        "num_hidden_layers": int(_scalar(metadata, "llama.block_count")),
        "intermediate_size": int(_scalar(metadata, "llama.feed_forward_length")),
        "num_attention_heads": heads,
        "num_key_value_heads": int(_scalar(metadata, "llama.attention.head_count_kv")),
        "head_dim": hidden // heads,
        "rms_norm_eps": float(_scalar(metadata, "llama.attention.layer_norm_rms_epsilon")),
        "vocab_size": len(metadata["tokenizer.ggml.tokens"]),
        "rope_theta": float(_scalar(metadata, "llama.rope.freq_base")),
        "rope_traditional": True,
        "tie_word_embeddings": True,
        "max_position_embeddings": int(_scalar(metadata, "llama.context_length")),
        "bos_token_id": int(_scalar(metadata, "tokenizer.ggml.bos_token_id")),
        "eos_token_id": int(_scalar(metadata, "tokenizer.ggml.eos_token_id")),
    }


def _packed_bits(weight: mx.array, scales: mx.array) -> int:
    columns = scales.shape[-1] * GGUF_GROUP_SIZE
    return weight.shape[-1] * 32 // columns


def float_weights(tensors: dict[str, mx.array]) -> dict[str, mx.array]:
    """Every tensor dequantised to float32, keyed by mlx-lm names."""
    bases = sorted({name.rsplit(".", 1)[0] for name in tensors})
    weights: dict[str, mx.array] = {}
    for base in bases:
        weight = tensors[f"{base}.weight"]
        if f"{base}.scales" in tensors:
            scales = tensors[f"{base}.scales"].astype(mx.float32)
            biases = tensors[f"{base}.biases"].astype(mx.float32)
            weight = mx.dequantize(
                weight, scales, biases, group_size=GGUF_GROUP_SIZE, bits=_packed_bits(weight, scales)
            )
        weights[f"{mlx_name(base)}.weight"] = weight.astype(mx.float32)
    return weights


def shipped_quantized_weights(tensors: dict[str, mx.array]) -> tuple[dict[str, mx.array], dict]:
    """The GGUF's own quantised tensors with float32 scales, and mlx-lm's per-layer quantisation config.

    Scales stay float32 on purpose: float16 scales make activations float16, and
    MLX's quantised matmul on float16 input is about 30x slower on the CPU.
    """
    weights: dict[str, mx.array] = {}
    quantization: dict = {"group_size": GGUF_GROUP_SIZE, "bits": 4}
    for name, tensor in tensors.items():
        base, kind = name.rsplit(".", 1)
        target = mlx_name(base)
        weights[f"{target}.{kind}"] = tensor.astype(mx.float32) if kind != "weight" else tensor
        if kind == "scales":
            bits = _packed_bits(tensors[f"{base}.weight"], tensor)
            if bits != quantization["bits"]:
                quantization[target] = {"group_size": GGUF_GROUP_SIZE, "bits": bits}
    return weights, quantization


def convert_weights(tensors: dict[str, mx.array], weights_format: str) -> tuple[dict[str, mx.array], dict | None]:
    """Weights in ``weights_format`` and the quantisation config to record (None when not quantised)."""
    if weights_format == "q4":
        return shipped_quantized_weights(tensors)
    weights = float_weights(tensors)
    if weights_format == "float32":
        return weights, None
    if weights_format == "float16":
        return {name: w.astype(mx.float16) for name, w in weights.items()}, None
    if weights_format == "q8":
        quantized: dict[str, mx.array] = {}
        for name, weight in weights.items():
            if weight.ndim == 2:
                base = name.rsplit(".", 1)[0]
                q, scales, biases = mx.quantize(weight, group_size=GGUF_GROUP_SIZE, bits=8)
                quantized.update({f"{base}.weight": q, f"{base}.scales": scales, f"{base}.biases": biases})
            else:
                quantized[name] = weight
        return quantized, {"group_size": GGUF_GROUP_SIZE, "bits": 8}
    raise ValueError(f"weights format must be one of {', '.join(WEIGHT_FORMATS)}, got {weights_format!r}")


def write_tokenizer(
    metadata: dict, out_dir: Path, added_tokens: Sequence[str] = (), config: dict[str, Any] | None = None
) -> None:
    """``tokenizer.json`` and ``tokenizer_config.json`` built from the GGUF's BPE vocabulary, torch-free;
    ``added_tokens`` become special tokens after the vocabulary, ``config`` overrides tokenizer-config keys."""
    from tokenizers import AddedToken, Tokenizer, decoders, pre_tokenizers
    from tokenizers.models import BPE

    if metadata.get("tokenizer.ggml.model") != "gpt2":
        raise GGUFConversionError("only byte-level BPE ('gpt2') GGUF tokenizers are supported")
    tokens: list[str] = metadata["tokenizer.ggml.tokens"]
    merges = [tuple(merge.split(" ", 1)) for merge in metadata["tokenizer.ggml.merges"]]
    token_types = np.array(metadata["tokenizer.ggml.token_type"])
    tokenizer = Tokenizer(BPE(vocab={token: i for i, token in enumerate(tokens)}, merges=merges))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    specials = [tokens[i] for i in np.nonzero(token_types == _CONTROL_TOKEN)[0]]
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in [*specials, *added_tokens]])
    tokenizer.save(str(out_dir / "tokenizer.json"))

    def token(key: str) -> str:
        return tokens[int(_scalar(metadata, key))]

    tokenizer_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": token("tokenizer.ggml.bos_token_id"),
        "eos_token": token("tokenizer.ggml.eos_token_id"),
        "unk_token": token("tokenizer.ggml.unknown_token_id"),
        "pad_token": token("tokenizer.ggml.padding_token_id"),
        "add_bos_token": bool(_scalar(metadata, "tokenizer.ggml.add_bos_token")),
        "add_prefix_space": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": int(_scalar(metadata, "llama.context_length")),
        "additional_special_tokens": specials,
        "chat_template": metadata.get("tokenizer.chat_template"),
        **(config or {}),
    }
    (out_dir / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2))


def convert_gguf(
    gguf_path: Path,
    out_dir: Path,
    weights_format: str = "float32",
    progress: Callable[[str], None] = print,
) -> None:
    """Writes ``config.json``, ``model.safetensors`` and the tokenizer files of ``gguf_path`` into ``out_dir``."""
    progress(f"reading {gguf_path.name}")
    tensors, metadata = mx.load(str(gguf_path), return_metadata=True)
    config = model_config(metadata)
    progress(f"converting {len(tensors)} tensors to {weights_format}")
    weights, quantization = convert_weights(tensors, weights_format)
    if quantization is not None:
        config["quantization"] = quantization
    out_dir.mkdir(parents=True, exist_ok=True)
    mx.save_safetensors(str(out_dir / "model.safetensors"), weights, metadata={"format": "mlx"})
    (out_dir / "config.json").write_text(json.dumps(config, indent=2))
    progress("building the tokenizer from the GGUF metadata")
    write_tokenizer(metadata, out_dir)
