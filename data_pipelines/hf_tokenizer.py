"""The tokenizer files transformers' `AutoTokenizer.from_pretrained(DIR)` opens, written
beside every export, so an exported model comes with a tokenizer that gives our ids.

    save_pretrained(tokenizer, out_dir, model_max_length=512)

A WordPiece vocabulary goes as vocab.txt + tokenizer_config.json (ElectraTokenizer with our
casing: do_lower_case, strip_accents). A sentencepiece model goes as the .model file (our
loaders read it) + tokenizer.json, built with the `tokenizers` library from the model's own
pieces, scores and normalizer spec, so that it encodes as `SentencePieceProcessor.encode`
does (the construction of transformers' SpmConverter), + tokenizer_config.json. Both add
[CLS] A [SEP] (B [SEP]) around the text, as `Tokenizer.encode_pair` does. One difference
for both kinds: transformers reads a literal "[MASK]" (any special token) in the text as that
token, as fill-mask needs; our sentencepiece `encode` reads it as plain text.
"""

from __future__ import annotations

import os
import re

from etils import epath
from sentencepiece import sentencepiece_model_pb2
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

from data_pipelines import files
from data_pipelines import tokenizer as tokenizer_lib

CONFIG_FILE = "tokenizer_config.json"
TOKENIZER_FILE = "tokenizer.json"
_TOKEN_KEYS = ("pad_token", "unk_token", "cls_token", "sep_token", "mask_token")  # SPECIAL_TOKENS' order
_NORMAL, _USER_DEFINED = 1, 4  # sentencepiece ModelProto.SentencePiece.Type


def save_pretrained(tokenizer: tokenizer_lib.Tokenizer, out_dir: str, model_max_length: int) -> list[str]:
    """Writes `tokenizer`'s files into `out_dir` (see the module docstring); returns their paths."""
    written = [tokenizer_lib.copy_tokenizer_file(tokenizer.path, out_dir)]
    config = {
        **dict(zip(_TOKEN_KEYS, tokenizer_lib.SPECIAL_TOKENS)),
        "model_max_length": model_max_length,
        "model_input_names": ["input_ids", "token_type_ids", "attention_mask"],  # what the model takes
    }
    if isinstance(tokenizer, tokenizer_lib.WordPieceTokenizer):
        config.update(
            tokenizer_class="ElectraTokenizer",
            do_lower_case=tokenizer.do_lower_case,
            strip_accents=tokenizer.strip_accents,
            tokenize_chinese_chars=True,
        )
    elif isinstance(tokenizer, tokenizer_lib.SentencePieceTokenizer):
        path = os.path.join(out_dir, TOKENIZER_FILE)
        files.write_text(path, sentencepiece_to_tokenizers(tokenizer.path).to_str())
        written.append(path)
        config["tokenizer_class"] = "PreTrainedTokenizerFast"
    else:
        raise TypeError(f"no transformers format for a {type(tokenizer).__name__}")
    written.append(os.path.join(out_dir, CONFIG_FILE))
    files.write_json(written[-1], config, sort_keys=True)
    return written


def sentencepiece_to_tokenizers(model_path: str):
    """A `tokenizers.Tokenizer` that encodes as the sentencepiece model at `model_path`
    (unigram or BPE, no byte fallback) and adds ELECTRA's [CLS] / [SEP]."""
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(epath.Path(model_path).read_bytes())
    spec, trainer = proto.normalizer_spec, proto.trainer_spec
    if trainer.byte_fallback:
        raise ValueError(f"{model_path} uses byte_fallback, which this export does not convert")
    pieces = [(p.piece, p.score) for p in proto.pieces]
    user_defined = [p.piece for p in proto.pieces if p.type == _USER_DEFINED]
    if trainer.model_type == trainer.UNIGRAM:
        model = models.Unigram(pieces, trainer.unk_id, False)
    elif trainer.model_type == trainer.BPE:
        model = models.BPE(
            {piece: i for i, (piece, _) in enumerate(pieces)},
            _bpe_merges(proto),
            unk_token=trainer.unk_piece,
            fuse_unk=True,
            ignore_merges=bool(user_defined),
        )
    else:
        raise ValueError(f"{model_path}: sentencepiece model_type {trainer.model_type}; only unigram and BPE convert")
    hf = Tokenizer(model)
    # sentencepiece's own order: character map, then only spaces are trimmed and collapsed
    steps = [normalizers.Precompiled(spec.precompiled_charsmap)] if spec.precompiled_charsmap else []
    if spec.remove_extra_whitespaces:
        steps += [normalizers.Replace(Regex(r"\A +| +\z"), ""), normalizers.Replace(Regex(" {2,}"), " ")]
    if spec.escape_whitespaces:
        steps.append(normalizers.Replace(" ", "▁"))
    if spec.add_dummy_prefix:  # Metaspace adds no prefix to a text that starts with "▁"; sentencepiece does
        steps.append(normalizers.Replace(Regex(r"\A▁"), "▁▁"))
    hf.normalizer = normalizers.Sequence(steps)
    # "always", not "first": "first" skips the prefix when leading spaces were trimmed
    metaspace = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=False)
    splits = [metaspace] if spec.add_dummy_prefix else []
    if user_defined:  # emitted whole, never merged
        pattern = "|".join(re.escape(piece) for piece in sorted(user_defined, key=len, reverse=True))
        splits.append(pre_tokenizers.Split(Regex(pattern), behavior="isolated"))
    if splits:
        hf.pre_tokenizer = pre_tokenizers.Sequence(splits)
    hf.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.Fuse(), decoders.Strip(content=" ", left=int(spec.add_dummy_prefix))]
    )
    hf.add_special_tokens([AddedToken(token, special=True, normalized=False) for token in tokenizer_lib.SPECIAL_TOKENS])
    cls, sep = tokenizer_lib.CLS, tokenizer_lib.SEP
    hf.post_processor = processors.TemplateProcessing(
        single=f"{cls} $A {sep}",
        pair=f"{cls} $A {sep} $B:1 {sep}:1",
        special_tokens=[(cls, hf.token_to_id(cls)), (sep, hf.token_to_id(sep))],
    )
    return hf


def _bpe_merges(proto) -> list[tuple[str, str]]:
    """BPE merges ranked by the merged piece's score, as sentencepiece applies them."""
    normal = {p.piece: (p.score, i) for i, p in enumerate(proto.pieces) if p.type == _NORMAL}
    ranked = [
        (-score, i, piece[:cut], piece[cut:])
        for piece, (score, i) in normal.items()
        for cut in range(1, len(piece))
        if piece[:cut] in normal and piece[cut:] in normal
    ]
    return [(left, right) for _, _, left, right in sorted(ranked)]
