"""descriptor_gen: CLIP zero-shot classification by LLM-written class descriptors."""

from descriptor_gen.errors import DescgenError

__all__ = ["DescgenError", "__version__"]
__version__ = "0.1.0"
