"""Prompt tokens inside CLIP's transformers (VPT, IVLP, MaPLe), over open_clip's modules.

As in the multimodal-prompt-learning repository's clip/model.py (muzairkhattak/
multimodal-prompt-learning, `VisionTransformer`, `ResidualAttentionBlock_IVLP`,
`ResidualAttentionBlock_MaPLe`):
- vision: the first layer's prompts are appended after the patch tokens, after the positional
  embedding and before `ln_pre`; a deep prompt of layer i >= 1 replaces the last n tokens
  (the previous layer's prompt outputs) before that layer runs; the class token is pooled.
- text: the first layer's prompts are the context tokens of the prompt embeddings (CoOp's);
  a deep prompt of layer i >= 1 replaces tokens 1 .. n before that layer runs.
`deep[i]` is layer i's prompt (None: the layer runs on what the previous one gave).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from descriptor_gen.errors import DescgenError

Put = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def put_last(x: torch.Tensor, prompt: torch.Tensor) -> torch.Tensor:
    """Vision: the last len(prompt) tokens of (B, L, D) become the prompt."""
    n = prompt.shape[0]
    return torch.cat([x[:, : x.shape[1] - n], prompt.to(x.dtype).expand(x.shape[0], -1, -1)], dim=1)


def put_after_start(x: torch.Tensor, prompt: torch.Tensor) -> torch.Tensor:
    """Text: tokens 1 .. len(prompt) of (C, 77, D) become the prompt."""
    n = prompt.shape[0]
    return torch.cat([x[:, :1], prompt.to(x.dtype).expand(x.shape[0], -1, -1), x[:, 1 + n :]], dim=1)


def run_blocks(transformer: nn.Module, x: torch.Tensor, deep: list[torch.Tensor | None],
               put: Put, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
    """open_clip's `Transformer.forward` on (N, L, D) with layer i's prompt put in first."""
    batch_first = getattr(transformer, "batch_first", True)
    for i, block in enumerate(transformer.resblocks):
        if i > 0 and i < len(deep) and deep[i] is not None:
            x = put(x, deep[i])  # type: ignore[arg-type]
        if batch_first:
            x = block(x, attn_mask=attn_mask)
        else:
            x = block(x.transpose(0, 1), attn_mask=attn_mask).transpose(0, 1)
    return x


def vision_tower(model: nn.Module) -> nn.Module:
    """The ViT whose token sequence takes prompts (open_clip's own, class-token pooled)."""
    from open_clip.transformer import VisionTransformer

    visual = getattr(model, "visual", None)
    if not isinstance(visual, VisionTransformer):
        raise DescgenError("vision prompts need open_clip's ViT image tower; this model's is a"
                           f" {type(visual).__name__} (a ResNet or a timm tower has no tokens to"
                           " prompt)")
    if visual.attn_pool is not None or visual.pool_type != "tok":
        raise DescgenError(f"vision prompts need a ViT pooled at its class token; this one pools"
                           f" by {'attention' if visual.attn_pool is not None else visual.pool_type}")
    return visual


def vision_layers(model: nn.Module) -> tuple[int, int]:
    """(layers, width) of the image tower."""
    visual = vision_tower(model)
    return len(visual.transformer.resblocks), int(visual.conv1.out_channels)


def text_layers(model: nn.Module) -> tuple[int, int]:
    return len(model.transformer.resblocks), int(model.ln_final.weight.shape[0])


def _vit_tokens(visual: nn.Module, images: torch.Tensor, first: torch.Tensor | None,
                deep: list[torch.Tensor | None]) -> torch.Tensor:
    """The ViT's token sequence after its blocks (class token first), prompts put in."""
    x = visual.conv1(images.to(visual.conv1.weight.dtype))
    x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
    cls = visual.class_embedding.view(1, 1, -1).expand(x.shape[0], -1, -1).to(x.dtype)
    x = torch.cat([cls, x], dim=1) + visual.positional_embedding.to(x.dtype)
    if first is not None:
        x = torch.cat([x, first.to(x.dtype).expand(x.shape[0], -1, -1)], dim=1)
    x = visual.ln_pre(x)
    return run_blocks(visual.transformer, x, deep, put_last)


def encode_image_prompted(model: nn.Module, images: torch.Tensor, first: torch.Tensor | None,
                          deep: list[torch.Tensor | None]) -> torch.Tensor:
    """open_clip's `encode_image` with `first` (n, width) appended to the input tokens and
    `deep` prompts put into the later layers (unnormalised features)."""
    visual = vision_tower(model)
    pooled, _ = visual._pool(_vit_tokens(visual, images, first, deep))
    return pooled @ visual.proj if visual.proj is not None else pooled


def encode_image_local(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """(B, 1 + M, D): the pooled feature and M local features in the embedding space.

    A ResNet: its attention pool run for every query, not only the mean token's (PLOT's
    modified `AttentionPool2d`, which returns all HW + 1 outputs); a ViT (class-token pooled):
    every token through `ln_post` and the projection (PLOT releases the ResNet form only)."""
    from open_clip.modified_resnet import ModifiedResNet

    visual = getattr(model, "visual", None)
    if isinstance(visual, ModifiedResNet):
        x = visual.stem(images.to(visual.conv1.weight.dtype))
        x = visual.layer4(visual.layer3(visual.layer2(visual.layer1(x))))
        return _attention_pool_all(visual.attnpool, x).permute(1, 0, 2)
    visual = vision_tower(model)
    x = visual.ln_post(_vit_tokens(visual, images, None, []))
    return x @ visual.proj if visual.proj is not None else x


def _attention_pool_all(pool: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """open_clip's `AttentionPool2d.forward` without its final `[0]`: (HW + 1, B, D)."""
    from torch.nn import functional as F

    x = x.reshape(x.shape[0], x.shape[1], x.shape[2] * x.shape[3]).permute(2, 0, 1)
    x = torch.cat([x.mean(dim=0, keepdim=True), x], dim=0)
    x = x + pool.positional_embedding[:, None, :].to(x.dtype)
    out, _ = F.multi_head_attention_forward(
        query=x, key=x, value=x, embed_dim_to_check=x.shape[-1], num_heads=pool.num_heads,
        q_proj_weight=pool.q_proj.weight, k_proj_weight=pool.k_proj.weight,
        v_proj_weight=pool.v_proj.weight, in_proj_weight=None,
        in_proj_bias=torch.cat([pool.q_proj.bias, pool.k_proj.bias, pool.v_proj.bias]),
        bias_k=None, bias_v=None, add_zero_attn=False, dropout_p=0.0,
        out_proj_weight=pool.c_proj.weight, out_proj_bias=pool.c_proj.bias,
        use_separate_proj_weight=True, training=False, need_weights=False)
    return out


def encode_text_prompted(model: nn.Module, embeddings: torch.Tensor, tokens: torch.Tensor,
                         deep: list[torch.Tensor | None]) -> torch.Tensor:
    """open_clip's `encode_text` from the token embeddings (context in tokens 1 .. n), with
    `deep` prompts put into the later layers."""
    from open_clip.transformer import text_global_pool

    cast = model.transformer.get_cast_dtype()
    x = embeddings.to(cast) + model.positional_embedding.to(cast)
    x = run_blocks(model.transformer, x, deep, put_after_start, attn_mask=model.attn_mask)
    x = model.ln_final(x)
    x = text_global_pool(x, tokens, model.text_pool_type,
                         eos_token_id=getattr(model, "text_eos_id", None))
    if model.text_projection is not None:
        x = (model.text_projection(x) if isinstance(model.text_projection, nn.Linear)
             else x @ model.text_projection)
    return x


def prompt_list(n: int, n_ctx: int, width: int, generator: torch.Generator) -> nn.ParameterList:
    """n prompts of (n_ctx, width), each N(0, 0.02²) (their `nn.init.normal_(std=0.02)`)."""
    return nn.ParameterList([nn.Parameter(torch.empty(n_ctx, width).normal_(0, 0.02, generator=generator))
                             for _ in range(n)])


def check_depth(depth: int, layers: int, tower: str) -> None:
    if depth > layers:
        raise DescgenError(f"prompt depth {depth}: the {tower} tower has {layers} layers")


def as_layers(first: torch.Tensor | None, later: list[torch.Tensor]) -> list[torch.Tensor | None]:
    """deep[i] for layers 0 .. len(later): layer 0's prompt is in the input."""
    return [None, *later] if first is not None or later else []
