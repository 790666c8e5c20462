"""Soft prompts on CLIP's text encoder (CoOp, CoCoOp), over open_clip's CLIP.

As in CoOp's `PromptLearner` (KaiyangZhou/CoOp trainers/coop.py): the prompt of class c is
"X X ... X {c}." tokenized; the embeddings of the X tokens are replaced by learned context
vectors (one set for all classes, or one per class), the class name at the end, in the middle
or in front; the text encoder runs on the embeddings and pools at the end-of-text token.
"""

from __future__ import annotations

import torch
from torch import nn

from descriptor_gen.describe.prompts import wordify
from descriptor_gen.errors import DescgenError
from descriptor_gen.score.features import ClipModel


def text_tower(clip: ClipModel) -> nn.Module:
    """The CLIP whose text tower takes token embeddings (open_clip's own CLIP class)."""
    from open_clip.model import CLIP

    model = clip.model
    if not isinstance(model, CLIP):
        raise DescgenError(f"learned text prompts need open_clip's CLIP text tower; this model"
                           f" is a {type(model).__name__}")
    return model


def encode_embedded(model: nn.Module, embeddings: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """open_clip's `encode_text` from the token embeddings on (their `TextEncoder`)."""
    from open_clip.transformer import text_global_pool

    cast = model.transformer.get_cast_dtype()
    x = embeddings.to(cast) + model.positional_embedding.to(cast)
    x = model.transformer(x, attn_mask=model.attn_mask)
    x = model.ln_final(x)
    x = text_global_pool(x, tokens, model.text_pool_type,
                         eos_token_id=getattr(model, "text_eos_id", None))
    if model.text_projection is not None:
        x = model.text_projection(x) if isinstance(model.text_projection, nn.Linear) else x @ model.text_projection
    return x


MAPLE_INIT_MAX = 4  # MaPLe and IVLP initialise from ctx_init only for n_ctx <= 4


class PromptLearner(nn.Module):
    """Context vectors and the frozen token embeddings around them, per class.

    Args:
        n_ctx: context tokens (ignored when `ctx_init` gives the words, unless `first_tokens`).
        ctx_init: words that initialise the context ("a photo of a"), else N(0, 0.02²).
        first_tokens: MaPLe's and IVLP's form: the prompt holds all of `ctx_init`'s words and
            only its first `n_ctx` tokens are learned (their `VLPromptLearner`); with more than
            4 context tokens the context is random, as theirs.
        csc: class-specific contexts (one set per class).
        position: where the class name goes: `end`, `middle` or `front`.
    """

    def __init__(self, clip: ClipModel, classes: list[str], n_ctx: int = 16,
                 ctx_init: str | None = None, csc: bool = False, position: str = "end",
                 seed: int = 0, first_tokens: bool = False) -> None:
        super().__init__()
        model = text_tower(clip)
        tokenizer = clip.tokenizer
        width = model.ln_final.weight.shape[0]
        device = next(model.parameters()).device
        if first_tokens and ctx_init and n_ctx > MAPLE_INIT_MAX:
            ctx_init = None  # theirs: `if ctx_init and n_ctx <= 4`, else a random context
        with torch.no_grad():
            if ctx_init:
                words = " ".join(ctx_init.replace("_", " ").split())
                n_words = int((tokenizer([words])[0] != 0).sum()) - 2
                if first_tokens and n_ctx > n_words:
                    raise DescgenError(f"n_ctx {n_ctx}: ctx_init {words!r} has {n_words} tokens"
                                       " to initialise the context from")
                n_ctx = n_ctx if first_tokens else len(words.split(" "))
                init = model.token_embedding(tokenizer([words]).to(device))[0, 1 : 1 + n_ctx].float()
                ctx = init.unsqueeze(0).repeat(len(classes), 1, 1) if csc else init
                prefix = words
            else:
                generator = torch.Generator().manual_seed(seed)
                shape = (len(classes), n_ctx, width) if csc else (n_ctx, width)
                ctx = torch.empty(shape).normal_(0, 0.02, generator=generator).to(device)
                prefix = " ".join(["X"] * n_ctx)
            names = [wordify(c) for c in classes]
            tokens = tokenizer([f"{prefix} {name}." for name in names]).to(device)
            embedded = model.token_embedding(tokens).float()
            name_tokens = tokenizer(names)
            self.name_lens = [int((row != 0).sum()) - 2 for row in name_tokens]
        _check_fits(tokens, names, self.name_lens, n_ctx)
        self.ctx = nn.Parameter(ctx.clone())
        self.register_buffer("token_prefix", embedded[:, :1, :], persistent=False)
        self.register_buffer("token_suffix", embedded[:, 1 + n_ctx :, :], persistent=False)
        self.register_buffer("tokens", tokens, persistent=False)
        self.n_ctx, self.position = n_ctx, position
        if position not in ("end", "middle", "front"):
            raise DescgenError(f"position {position!r}: choose end, middle or front")

    def forward(self, shift: torch.Tensor | None = None) -> torch.Tensor:
        """(C, L, D) prompt embeddings; with `shift` (B, D) from CoCoOp's meta-network,
        (B, C, L, D): the context moved per image."""
        ctx = self.ctx
        if ctx.dim() == 2:
            ctx = ctx.unsqueeze(0).expand(self.token_prefix.shape[0], -1, -1)
        if shift is None:
            return self.assemble(ctx)
        return torch.stack([self.assemble(ctx + s.view(1, 1, -1)) for s in shift])

    def assemble(self, ctx: torch.Tensor) -> torch.Tensor:
        """(C, L, D) prompts around a (C, n_ctx, D) context."""
        prefix, suffix = self.token_prefix, self.token_suffix
        if self.position == "end":
            return torch.cat([prefix, ctx, suffix], dim=1)
        rows = []
        half = self.n_ctx // 2
        for i, length in enumerate(self.name_lens):
            name, rest = suffix[i : i + 1, :length], suffix[i : i + 1, length:]
            if self.position == "middle":
                parts = [prefix[i : i + 1], ctx[i : i + 1, :half], name, ctx[i : i + 1, half:], rest]
            else:
                parts = [prefix[i : i + 1], name, ctx[i : i + 1], rest]
            rows.append(torch.cat(parts, dim=1))
        return torch.cat(rows, dim=0)


def _check_fits(tokens: torch.Tensor, names: list[str], name_lens: list[int], n_ctx: int) -> None:
    """Every class's prompt must end inside the text tower's context: the tokenizer would cut
    a longer one silently (a row whose last position is used was cut or just fits; both are
    refused, as CoOp's own context has no room left for the period)."""
    length = tokens.shape[1]
    full = (tokens[:, -1] != 0).nonzero().flatten().tolist()
    if full:
        i = full[0]
        room = length - 3 - name_lens[i]  # start, the name, ".", end
        raise DescgenError(f"n_ctx {n_ctx}: the prompt of class {names[i]!r} does not fit the"
                           f" text tower's {length} tokens (at most {max(room, 0)} context"
                           " tokens with this class)")


class MetaNet(nn.Module):
    """CoCoOp's meta-network: image feature -> a shift of the context (Linear, ReLU, Linear,
    hidden width 1/16 of the image feature's)."""

    def __init__(self, vis_dim: int, ctx_dim: int) -> None:
        super().__init__()
        hidden = max(vis_dim // 16, 1)
        self.linear1 = nn.Linear(vis_dim, hidden)
        self.relu = nn.ReLU()
        self.linear2 = nn.Linear(hidden, ctx_dim)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear2(self.relu(self.linear1(features)))
