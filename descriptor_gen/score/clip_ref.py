"""A CLIP named but not yet loaded: its cache identity without building it, the model only
when something must be encoded. A re-evaluation whose image and text features are all cached
then loads no model, and imports neither torch nor open_clip.

The identity of a loaded CLIP (`features.ClipModel.identity`: the model, the weights, the
precision and open_clip's preprocessing) is remembered in the cache (`clip_identities.sqlite`)
under what names it without loading: the model name (or its config file's hash), the weights
(a tag, `none`, or a checkpoint file by its path, size and date), the precision and the
versions of open_clip and torchvision (which build the preprocessing). Not remembered yet, the
model is loaded to learn it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from descriptor_gen.errors import DescgenError
from descriptor_gen.score.caches import IdentityMemo, clip_digest, memo_key, preprocess_settings
from descriptor_gen.score.engine_options import check_device_name

def remember(clip: Any, cache_dir: Path) -> None:
    """Put a loaded CLIP's identity in the memo (a CLIP built by `load_clip` knows its key;
    one made otherwise is not remembered)."""
    key = getattr(clip, "memo_key", None)
    if key is None or getattr(clip, "spec_identity", None) is None:
        return
    memo = IdentityMemo(cache_dir)
    if memo.get(key) is None:
        memo.put(key, _memo_value(clip))


def _memo_value(clip: Any) -> dict[str, Any]:
    """What the memo keeps of a loaded CLIP (its preprocessing's settings, when open_clip
    gave them: `ClipRef.remembered_preprocess`)."""
    value = {"identity": clip.identity, "embed_width": clip.embed_width,
             "clip_identity": clip.spec_identity}
    if getattr(clip, "preprocess_cfg", None) is not None:
        value["preprocess_cfg"] = clip.preprocess_cfg
    return value


class ClipRef:
    """Quacks like `features.ClipModel`: `identity`, `precision`, `embed_width` and
    `clip_identity` come from the memo when it knows them; `model`, `preprocess`, `tokenizer`,
    `device` and encoding load the CLIP (once)."""

    def __init__(self, model: str, pretrained: str, device: str, precision: str,
                 cache_dir: Path) -> None:
        check_device_name(device)
        self.spec = (model, pretrained, device, precision)
        self.precision = precision
        self._memo = IdentityMemo(cache_dir)
        self._key = memo_key(model, pretrained, precision)
        self._known = self._memo.get(self._key)
        self._clip: Any = None

    @property
    def loaded(self) -> bool:
        return self._clip is not None

    @property
    def known(self) -> bool:
        """Whether its identity is remembered (else asking it loads the CLIP)."""
        return self._known is not None

    def load(self) -> Any:
        """The `features.ClipModel`, built now if not yet; the memo learns its identity. An
        identity that differs from the remembered one (a library changed under the same
        versions) is refused: features looked up by the old one may already be in use."""
        if self._clip is None:
            from descriptor_gen.score.features import load_clip

            model, pretrained, device, precision = self.spec
            clip = load_clip(model, pretrained, device, precision)
            value = _memo_value(clip)
            self._memo.put(self._key, value)
            if self._known is not None and self._known["identity"] != clip.identity:
                raise DescgenError(f"CLIP {model} / {pretrained}: its identity changed since it"
                                   " was remembered; the memo is updated, run again")
            self._known, self._clip = value, clip
        return self._clip

    def remembered_preprocess(self) -> Any | None:
        """The CLIP's preprocessing made from the memo's settings without building the model
        (imports open_clip), for reading images while it is built; None when it is built
        already, the memo has no settings, or what they make is not what the remembered
        identity names."""
        settings = (self._known or {}).get("preprocess_cfg")
        if self._clip is not None or self._known is None or settings is None:
            return None
        from open_clip.transform import PreprocessCfg, image_transform_v2

        try:
            preprocess = image_transform_v2(PreprocessCfg(**preprocess_settings(settings)),
                                            is_train=False)
        except (TypeError, ValueError, KeyError):  # settings of another open_clip's making
            return None
        same = clip_digest(self._known["clip_identity"], preprocess) == self._known["identity"]
        return preprocess if same else None

    @property
    def identity(self) -> str:
        return self._known["identity"] if self._known else self.load().identity

    @property
    def embed_width(self) -> int | None:
        return self._known.get("embed_width") if self._known else self.load().embed_width

    def clip_identity(self) -> dict[str, str]:
        """`features.clip_identity` of this CLIP (what a learned run records)."""
        if self._known is None:
            self.load()
        assert self._known is not None
        return dict(self._known["clip_identity"])

    @property
    def device(self) -> str:
        return self.load().device

    @property
    def requested_device(self) -> str:
        """The device as asked (`auto` resolved only by loading)."""
        return self._clip.device if self._clip is not None else self.spec[2]

    @property
    def model(self) -> Any:
        return self.load().model

    @property
    def preprocess(self) -> Any:
        return self.load().preprocess

    @property
    def tokenizer(self) -> Any:
        return self.load().tokenizer

    def encode_texts(self, texts: list[str], batch_size: int = 1024) -> Any:
        return self.load().encode_texts(texts, batch_size)
