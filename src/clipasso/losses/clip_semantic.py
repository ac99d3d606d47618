"""CLIP semantic term: embedding cosine distance of augmented sketches to the target or a text prompt.

.. math::

    L_b = \\frac{1}{V} \\sum_{v} \\big(1 - \\cos(e(\\mathrm{aug}_v(s_b)),\\; \\tau)\\big)

with :math:`e` the CLIP image embedding, :math:`\\mathrm{aug}_v` the random views of
:class:`~clipasso.augment.ReferenceViews` *without* the identity view (reference: 4 random views,
sketch only), and the target embedding :math:`\\tau` either the embedding of the un-augmented target
image (view 0, no gradient) or of a text prompt (``text="a drawing of a cat"``; several prompts:
the mean distance over prompts). In eval mode the sketch's view 0 only is used.

This is the reference's optional ViT-B/32 term (METHOD §4, ``clip_weight``, switched on after
``start_clip`` iterations): ``CLIPSemanticLoss("ViT-B/32", weight=w).after(start_clip)``. Note: it is
written as a mean of ``1 - cos`` over views, the distance the method describes.

Example:
    >>> import torch
    >>> from clipasso.testing import tiny_clip
    >>> from clipasso.losses import CLIPSemanticLoss
    >>> loss = CLIPSemanticLoss(tiny_clip("vit"), text="a cat")
    >>> loss(torch.rand(1, 3, 224, 224), torch.rand(1, 3, 224, 224))["clip_semantic"].shape
    torch.Size([1])
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..augment import ReferenceViews, base_view, clip_normalize
from ..errors import InputError
from ..models import visual_of
from .base import CLIPModelRef, LossContext, RunSettings, SketchLoss, configure_views, register_loss

__all__ = ["CLIPSemanticLoss"]


@register_loss("clip_semantic")
class CLIPSemanticLoss(SketchLoss):
    """``1 - cos`` between CLIP image embeddings of augmented sketches and the target image or a text.

    Args:
        model: A CLIP model or its ``.visual`` tower (shared, frozen on adoption), or a name/path loaded
            lazily on first use (default ``"ViT-B/32"``). A text target needs the full CLIP model.
        text: Optional prompt (or prompts) used as the target instead of the target image.
        num_views: Random sketch views in train mode (reference: 4). Unset: a Sketcher run sets it
            from its config (:meth:`configure`); standalone, 4.
        augment: A custom :class:`~clipasso.augment.ReferenceViews` (overrides ``num_views``/``seed``).
        seed: Seed of the augmentation's own generator (used when the context gives none).
        cache_dir: Weights cache for lazy loading.
        weight: Factor on the term.

    Term: ``"clip_semantic"``, ``[B]``.
    """

    name = "clip_semantic"
    aligned_views = False  # augmented sketches vs the un-augmented target

    def __init__(
        self,
        model: nn.Module | str | os.PathLike[str] = "ViT-B/32",
        *,
        text: str | Sequence[str] | None = None,
        num_views: int | None = None,
        augment: ReferenceViews | None = None,
        seed: int = 0,
        cache_dir: str | os.PathLike[str] | None = None,
        weight: float = 1.0,
    ) -> None:
        super().__init__(weight=weight)
        if text is not None:
            prompts = [text] if isinstance(text, str) else list(text)
            if not prompts or not all(isinstance(p, str) and p for p in prompts):
                raise InputError(f"text must be a non-empty string or list of strings, got {text!r}")
            if isinstance(model, nn.Module) and not hasattr(model, "encode_text"):
                raise InputError(
                    "a text target needs the full CLIP model (with encode_text), not its .visual"
                )
            self.prompts: list[str] | None = prompts
        else:
            self.prompts = None
        self.model = CLIPModelRef(model, cache_dir=cache_dir)
        #: The run settings given to the constructor: :meth:`configure` leaves them as they are.
        self.fixed: frozenset[str] = frozenset(
            {"num_views"} if num_views is not None or augment is not None else ()
        )
        self.view_seed = seed
        if augment is None:  # random views only (view 0 alone when num_views is 0)
            views = 4 if num_views is None else num_views
            augment = ReferenceViews(views, identity_view=views == 0, seed=seed)
        self.augment = augment
        self._tokens: Tensor | None = None  # the prompts, tokenised once
        self._text_cache: dict[tuple[torch.device, torch.dtype], Tensor] = {}

    def spreads_views(self) -> bool:
        return self.augment.num_views > 0  # with no random views the prefixes would get no signal

    def extra_repr(self) -> str:
        return f"model={self.model!r}, text={self.prompts!r}, weight={self.weight}"

    def configure(self, settings: RunSettings) -> None:
        """Adopt a run's ``num_views`` unless given to the constructor."""
        super().configure(settings)
        configure_views(self, settings)

    @staticmethod
    def _embed(visual: nn.Module, images: Tensor) -> Tensor:
        dtype = next(visual.parameters()).dtype
        out: Tensor = visual(images.to(dtype))
        return out

    def text_tokens(self) -> Tensor:
        """The prompts as CLIP tokens ``[T, 77]`` (CPU; tokenised on first use, once).

        Prompts longer than CLIP's 77-token context are truncated."""
        if self.prompts is None:
            raise InputError("this CLIPSemanticLoss has no text target")
        if self._tokens is None:
            import clip

            self._tokens = clip.tokenize(self.prompts, truncate=True)
        return self._tokens

    def text_embedding(self, device: torch.device, dtype: torch.dtype = torch.float32) -> Tensor:
        """Embeddings of the prompts, ``[T, E]`` (the text tower runs once per device and dtype, with
        no gradient; the prompts are tokenised once)."""
        if self.prompts is None:
            raise InputError("this CLIPSemanticLoss has no text target")
        key = (device, dtype)
        if key not in self._text_cache:
            model = self.model.get(device)
            if not hasattr(model, "encode_text"):
                raise InputError(
                    "a text target needs the full CLIP model (with encode_text), not its .visual"
                )
            encode_text: Callable[[Tensor], Tensor] = getattr(model, "encode_text")  # noqa: B009
            with torch.no_grad():
                self._text_cache[key] = encode_text(self.text_tokens().to(device)).to(dtype)
        return self._text_cache[key]

    def compute(self, sketch: Tensor, target: Tensor, context: LossContext) -> Tensor:
        model = self.model.get(sketch.device)
        visual = visual_of(model)
        sources = context.sources_for(self.augment.num_outputs(context.train))
        xs, _ = self.augment(sketch, None, context.generators, train=context.train, sources=sources)
        batch, views = xs.shape[:2]
        ex = self._embed(visual, xs.flatten(0, 1)).to(sketch.dtype).reshape(batch, views, 1, -1)
        if self.prompts is not None:
            ey = self.text_embedding(sketch.device, sketch.dtype)[None, None]  # [1, 1, T, E]
        else:
            with torch.no_grad():
                ty = clip_normalize(base_view(target, self.augment.size))
                ey = self._embed(visual, ty).to(sketch.dtype)[:, None, None]  # [Bt, 1, 1, E]
        dist = (1.0 - F.cosine_similarity(ex, ey, dim=-1)).clamp_min(0.0)  # [B, V, T]
        return dist.flatten(1).mean(dim=1)
