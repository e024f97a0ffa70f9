"""Token ids to text and to words with time stamps, as ESPnet's ``Speech2Text`` does it.

An encoder frame ``j`` starts at ``j * subsampling * hop / fs`` seconds (``hop`` of the STFT,
``subsampling`` of the encoder's input layer). A word spans from the first frame of its first
token to the end of its last token's frames (``TokenSpan.end``, exclusive).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence

from espnet2.text.build_tokenizer import build_tokenizer
from espnet2.text.token_id_converter import TokenIDConverter

from espnet_ssm.streaming.ctc_greedy import TokenSpan

SPM_SPACE = "\u2581"  # sentencepiece's word-start marker
CHAR_SPACE = "<space>"


@dataclass
class WordStamp:
    """A recognised word and its time span in seconds."""

    word: str
    start: float
    end: float


class TokenText:
    """Token ids -> token strings -> text, with the model's token list and tokenizer.

    Args:
        token_list: the model's token list (``asr_model.token_list``).
        token_type: ``bpe``, ``char``, ``word`` or ``phn``... (``asr_train_args.token_type``).
        bpemodel: sentencepiece model for ``bpe``.
    """

    def __init__(self, token_list: Sequence[str], token_type: Optional[str],
                 bpemodel: Optional[str] = None):
        self.token_type = token_type
        self.bpemodel = bpemodel
        self.converter = TokenIDConverter(token_list=list(token_list))
        if token_type is None:
            self.tokenizer = None
        elif token_type == "bpe":
            self.tokenizer = build_tokenizer(token_type="bpe", bpemodel=bpemodel) if bpemodel \
                else None
        else:
            self.tokenizer = build_tokenizer(token_type=token_type)

    def tokens(self, ids: Sequence[int]) -> List[str]:
        """Token strings of ``ids``."""
        return self.converter.ids2tokens(list(ids))

    def text(self, ids: Sequence[int]) -> Optional[str]:
        """Detokenised text (None without a tokenizer, as in ESPnet's inference)."""
        return self.text_of_tokens(self.tokens(ids))

    def text_of_tokens(self, tokens: Sequence[str]) -> Optional[str]:
        """Detokenised text of token strings (None without a tokenizer)."""
        return None if self.tokenizer is None else self.tokenizer.tokens2text(list(tokens))

    def starts_word(self, token: str) -> bool:
        """Whether a word boundary lies just before ``token`` (the grouping of :meth:`words`):
        the space symbol for characters, the word-start marker for sentencepiece, every token
        for word or phone units."""
        if self.token_type == "char":
            return token == CHAR_SPACE
        if self.token_type == "bpe":
            return token.startswith(SPM_SPACE)
        return True

    def words(self, spans: Sequence[TokenSpan], frame_seconds: float) -> List[WordStamp]:
        """Group decoded tokens into words and give each its time span.

        ``frame_seconds`` is the duration of one encoder frame (subsampling * hop / fs).
        """
        out: List[WordStamp] = []
        group: List[TokenSpan] = []

        def flush() -> None:
            if not group:
                return
            word = self.text([s.token for s in group])
            if word is None:
                word = "".join(self.tokens([s.token for s in group]))
            word = word.strip()
            if word:
                out.append(WordStamp(word, group[0].start * frame_seconds,
                                     group[-1].end * frame_seconds))
            group.clear()

        strings = self.tokens([s.token for s in spans])
        for span, token in zip(spans, strings):
            if self.starts_word(token):
                flush()
                if self.token_type == "char":  # the space itself belongs to no word
                    continue
            group.append(span)
        flush()
        return out
