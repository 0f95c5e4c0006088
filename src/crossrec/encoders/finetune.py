"""The sentence encoder inside the training loop (`encoder.finetune` other than `frozen`).

Modes: `top_layers` (the last `encoder.top_layers` transformer layers train), `full` (every
weight trains), `lora` (low-rank updates on the attention's query and value projections, PyPI
`peft`; the base weights stay frozen). The trained weights get their own learning rate
(`encoder.lr`).

How it is used (the flagship's item tower): item vectors are read from a cache of every item's
text vector (`text_`); in a training batch the positive items (at most `encoder.train_items`,
distinct) are encoded afresh with gradients, so the loss reaches the encoder; after every epoch
the whole catalogue is re-encoded into the cache, which is what validation, evaluation and the
saved artifact read. The encoder itself is dropped when training ends: the artifact holds the
final vectors, not the language model.

Example:
    >>> live = LiveTextEncoder(EncoderConfig(finetune="lora"), texts)   # doctest: +SKIP
    >>> live(torch.tensor([0, 5])).shape                                # [2, 384]  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from crossrec.encoders.config import EncoderConfig
from crossrec.encoders.text import load_text_model
from crossrec.errors import ConfigError
from crossrec.extras import require


def _open_weights(model: Any, cfg: EncoderConfig) -> Any:
    """Set requires_grad by mode; returns the module that holds the transformer (peft-wrapped for lora)."""
    transformer = model[0]  # sentence-transformers: Transformer, Pooling, [Normalize]
    auto = transformer.auto_model
    for p in model.parameters():
        p.requires_grad_(cfg.finetune == "full")
    if cfg.finetune == "top_layers":
        layers = auto.encoder.layer
        for layer in layers[max(0, len(layers) - cfg.top_layers) :]:
            for p in layer.parameters():
                p.requires_grad_(True)
    elif cfg.finetune == "lora":
        require("text", "encoder.finetune='lora'", "peft")
        from peft import LoraConfig, get_peft_model

        # peft annotates lora_alpha as int; it only divides by r, and encoder.lora_alpha is a float
        lora = LoraConfig(
            r=cfg.lora_r,
            lora_alpha=cfg.lora_alpha,
            target_modules=["query", "value"],
            lora_dropout=0.0,
            bias="none",
        )
        transformer.auto_model = get_peft_model(auto, lora)
    return model


class LiveTextEncoder(nn.Module):
    """Item ids -> L2-normalised text vectors through a trainable sentence encoder.

    The item texts are tokenised once (`texts`, rows in item-id order); `forward(items)` runs the
    encoder on those rows, `encode_all()` on every item without gradients.
    """

    # buffers (nn.Module's attribute lookup cannot type them)
    input_ids_: Tensor
    attention_mask_: Tensor
    present_: Tensor

    def __init__(self, cfg: EncoderConfig, texts: Sequence[str]) -> None:
        super().__init__()
        if cfg.finetune == "frozen":
            raise ConfigError("encoder.finetune=frozen uses cached vectors; there is nothing to train")
        self.cfg = cfg
        self.model = _open_weights(load_text_model(cfg), cfg)
        tok = self.model.tokenize(list(texts))  # padded to the longest text, capped at max_tokens
        self.register_buffer("input_ids_", tok["input_ids"].to(torch.int64), persistent=False)
        self.register_buffer("attention_mask_", tok["attention_mask"].to(torch.int64), persistent=False)
        self.register_buffer("present_", torch.tensor([bool(t) for t in texts]), persistent=False)
        self.extra = {k: v for k, v in tok.items() if k not in ("input_ids", "attention_mask")}

    def trainable(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def forward(self, items: Tensor) -> Tensor:
        """[N] item ids -> [N, k] vectors (zeros for items without text)."""
        mask = self.attention_mask_[items]
        width = int(mask.sum(1).max().clamp_min(1))  # trim the padding this batch does not need
        features = {"input_ids": self.input_ids_[items, :width], "attention_mask": mask[:, :width]}
        if "token_type_ids" in self.extra:
            features["token_type_ids"] = torch.zeros_like(features["input_ids"])
        out = self.model(features)["sentence_embedding"]
        return F.normalize(out, dim=-1) * self.present_[items].unsqueeze(-1)

    @torch.no_grad()
    def encode_all(self) -> Tensor:
        """[n_items, k] every item's vector with the current weights (eval mode, batched)."""
        was = self.training
        self.eval()
        n, bs = len(self.input_ids_), self.cfg.batch_size
        # longest texts first keeps each batch's padding small
        order = torch.argsort(self.attention_mask_.sum(1), descending=True)
        parts = [self(order[i : i + bs]) for i in range(0, n, bs)]
        out = torch.empty(n, parts[0].shape[1], device=parts[0].device)
        out[order] = torch.cat(parts)
        self.train(was)
        return out
