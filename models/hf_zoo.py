"""Tiny transformers built from local configs (random weights, seed 0) and their ONNX exports.

Sizes are small so a test exports and prunes each in seconds, but every structural feature is
kept: several heads, GQA, gated FFNs, tied embeddings, shared ALBERT layers, windows in Swin.
Weights are drawn with a larger std than the default so that pruning changes outputs visibly
(the oracle would be weak if everything were near zero).
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch

ENCODER, DECODER, VISION, AUDIO = "encoder", "decoder", "vision", "audio"

_TEXT = dict(vocab_size=128, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
             max_position_embeddings=64)
_LLM = dict(vocab_size=128, hidden_size=64, num_hidden_layers=2, num_attention_heads=8, intermediate_size=128,
            max_position_embeddings=64, tie_word_embeddings=False)
_VIT = dict(image_size=32, patch_size=8, num_channels=3, hidden_size=32, num_hidden_layers=2,
            num_attention_heads=4, intermediate_size=64, num_labels=10)


def _specs() -> dict:
    """name → (config class name, config kwargs, model class name, optimum task, kind)."""
    return {
        "bert": ("BertConfig", _TEXT, "BertModel", "feature-extraction", ENCODER),
        "roberta": ("RobertaConfig", dict(_TEXT, pad_token_id=1), "RobertaModel", "feature-extraction", ENCODER),
        "distilbert": ("DistilBertConfig", dict(vocab_size=128, dim=32, n_layers=2, n_heads=4, hidden_dim=64,
                                                max_position_embeddings=64), "DistilBertModel",
                       "feature-extraction", ENCODER),
        "albert": ("AlbertConfig", dict(_TEXT, embedding_size=16), "AlbertModel", "feature-extraction", ENCODER),
        "electra": ("ElectraConfig", dict(_TEXT, embedding_size=32), "ElectraModel", "feature-extraction", ENCODER),
        "deberta-v2": ("DebertaV2Config", dict(_TEXT, relative_attention=True, position_buckets=16,
                                               pos_att_type=["p2c", "c2p"], max_relative_positions=32),
                       "DebertaV2Model", "feature-extraction", ENCODER),
        "gpt2": ("GPT2Config", dict(vocab_size=128, n_embd=32, n_layer=2, n_head=4, n_inner=64, n_positions=64),
                 "GPT2LMHeadModel", "text-generation", DECODER),
        "gpt-neox": ("GPTNeoXConfig", dict(_LLM, rotary_pct=0.5), "GPTNeoXForCausalLM", "text-generation",
                     DECODER),
        "opt": ("OPTConfig", dict(vocab_size=128, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                  ffn_dim=64, max_position_embeddings=64, word_embed_proj_dim=32),
                "OPTForCausalLM", "text-generation", DECODER),
        "llama": ("LlamaConfig", dict(_LLM, num_key_value_heads=4), "LlamaForCausalLM", "text-generation", DECODER),
        "mistral": ("MistralConfig", dict(_LLM, num_key_value_heads=4, sliding_window=None),
                    "MistralForCausalLM", "text-generation", DECODER),
        "qwen2": ("Qwen2Config", dict(_LLM, num_key_value_heads=4), "Qwen2ForCausalLM", "text-generation", DECODER),
        "phi3": ("Phi3Config", dict(_LLM, num_key_value_heads=4, pad_token_id=0), "Phi3ForCausalLM",
                 "text-generation", DECODER),
        "gemma": ("GemmaConfig", dict(_LLM, num_key_value_heads=1, head_dim=8), "GemmaForCausalLM",
                  "text-generation", DECODER),
        "t5-encoder": ("T5Config", dict(vocab_size=128, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                                        relative_attention_num_buckets=8), "T5EncoderModel",
                       "feature-extraction", ENCODER),
        "vit": ("ViTConfig", _VIT, "ViTForImageClassification", "image-classification", VISION),
        "deit": ("DeiTConfig", _VIT, "DeiTForImageClassification", "image-classification", VISION),
        "swin": ("SwinConfig", dict(image_size=32, patch_size=2, num_channels=3, embed_dim=16, depths=[1, 1],
                                    num_heads=[2, 4], window_size=4, num_labels=10), "SwinForImageClassification",
                 "image-classification", VISION),
        "convnext": ("ConvNextConfig", dict(num_channels=3, num_stages=2, hidden_sizes=[16, 32], depths=[1, 1], num_labels=10,
                                            image_size=32), "ConvNextForImageClassification",
                     "image-classification", VISION),
        "clip-text": ("CLIPTextConfig", dict(_TEXT, projection_dim=16), "CLIPTextModel", "feature-extraction",
                      ENCODER),
        "clip-vision": ("CLIPVisionConfig", dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
                                                 num_attention_heads=4, intermediate_size=64, projection_dim=16),
                        "CLIPVisionModel", "feature-extraction", VISION),
        "whisper-encoder": ("WhisperConfig", dict(vocab_size=128, d_model=32, encoder_layers=2, decoder_layers=1,
                                                  encoder_attention_heads=4, decoder_attention_heads=4,
                                                  encoder_ffn_dim=64, decoder_ffn_dim=64, num_mel_bins=16,
                                                  max_source_positions=16, max_target_positions=16),
                            "WhisperEncoder", "feature-extraction", AUDIO),
    }


SPECS = _specs()
NAMES = list(SPECS)
#: Fast representative subset for `make test`: an encoder, a GQA decoder with rotary and SwiGLU,
#: a vision transformer.
SUBSET = ["bert", "llama", "vit"]
#: optimum exports these only as part of a larger model (T5 with its decoder, CLIP both towers,
#: Whisper with its decoder): the torch path exports them on their own.
OPTIMUM_UNSUPPORTED = ("t5-encoder", "clip-text", "whisper-encoder")


def task_of(name: str) -> str:
    return SPECS[name][3]


def kind_of(name: str) -> str:
    return SPECS[name][4]


def build(name: str, seed: int = 0):
    """The randomly initialised model (eval mode)."""
    import transformers

    config_cls, kwargs, model_cls, _, _ = SPECS[name]
    config = getattr(transformers, config_cls)(**kwargs)
    config.initializer_range = 0.2  # visible differences after pruning
    if model_cls == "WhisperEncoder":
        from transformers.models.whisper.modeling_whisper import WhisperEncoder as cls
    else:
        cls = getattr(transformers, model_cls)
    torch.manual_seed(seed)
    model = cls(config).eval()
    _spread_norms(model, seed)
    return model


def _spread_norms(model, seed: int) -> None:
    """Random norm scales and biases: at their defaults (1, 0) they would hide sliced mistakes."""
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for module in model.modules():
            if "norm" in type(module).__name__.lower():
                weight = getattr(module, "weight", None)
                if isinstance(weight, torch.nn.Parameter):
                    weight.copy_(1 + 0.2 * torch.randn(weight.shape, generator=g))
                bias = getattr(module, "bias", None)
                if isinstance(bias, torch.nn.Parameter):
                    bias.copy_(0.1 * torch.randn(bias.shape, generator=g))


def default_cache_dir() -> Path:
    return Path(os.environ.get("SPA_ZOO_CACHE", Path(__file__).resolve().parents[1] / "build" / "hf_zoo"))


def cached_export(name: str, exporter: str = "optimum", cache: Path | None = None) -> Path:
    """The exported folder (model.onnx + config.json), built once and reused."""
    from spa.exporters.hf import export

    folder = (cache or default_cache_dir()) / f"{name}-{exporter}"
    if (folder / "model.onnx").is_file():
        return folder
    if folder.exists():
        shutil.rmtree(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    model = build(name)
    export(model, folder, task=task_of(name), exporter=exporter)
    return folder
