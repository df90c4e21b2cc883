"""The fine-tuning networks: the ELECTRA encoder under a task head. Sequence classification
([CLS], two heads: transformers' and the original's), token classification, and span
question answering with an optional answerability head; each exports to its transformers
`ElectraFor...` class (hf.KINDS)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from electra_jax.model import Array, ElectraConfig, ElectraModel, dense, gelu


class ClassificationHead(nn.Module):
    """HF's `ElectraClassificationHead`: [CLS] -> dropout -> dense(hidden) -> gelu -> dropout
    -> out_proj(num_labels). The default, because a fine-tuned model exports to
    `ElectraForSequenceClassification` and predicts the same there.

    The original TF fine-tuning code has one dense layer instead: `OriginalClassificationHead`.
    """

    config: ElectraConfig
    num_labels: int

    @nn.compact
    def __call__(self, hidden: Array, deterministic: bool) -> Array:
        cfg = self.config
        dropout = nn.Dropout(cfg.hidden_dropout)
        cls_vector = dropout(hidden[:, 0], deterministic=deterministic)  # [B, H]
        cls_vector = gelu(dense(cfg.hidden_size, ("hidden", None), cfg, "dense")(cls_vector))
        cls_vector = dropout(cls_vector, deterministic=deterministic)
        return dense(self.num_labels, (None, None), cfg, "out_proj")(cls_vector)  # [B, num_labels]


class OriginalClassificationHead(nn.Module):
    """google-research/electra's head (`classification_tasks.py`): the raw final [CLS] vector
    -> dropout -> dense(num_labels). ELECTRA's `get_pooled_output` is `sequence_output[:, 0]`:
    unlike BERT's there is no pooler dense + tanh. The kernel is Glorot-uniform, the default of
    the `tf.layers.dense` it uses. transformers has no class with this head, so it does not
    export to `ElectraForSequenceClassification`."""

    config: ElectraConfig
    num_labels: int

    @nn.compact
    def __call__(self, hidden: Array, deterministic: bool) -> Array:
        cfg = self.config
        cls_vector = nn.Dropout(cfg.hidden_dropout)(hidden[:, 0], deterministic=deterministic)  # [B, H]
        out = dense(self.num_labels, ("hidden", None), cfg, "out_proj", nn.initializers.glorot_uniform())
        return out(cls_vector)  # [B, num_labels]


# config value -> the [CLS] head of SequenceClassifier
CLASSIFIER_HEADS = {"hf": ClassificationHead, "original": OriginalClassificationHead}


class SequenceClassifier(nn.Module):
    """HF `ElectraForSequenceClassification`: the discriminator encoder + a [CLS] head
    (`head`: a CLASSIFIER_HEADS key).

    Returns [B, num_labels] logits (num_labels=1: a regression score, as STS-B).
    """

    config: ElectraConfig
    num_labels: int
    head: str = "hf"

    def setup(self):
        self.electra = ElectraModel(self.config)
        self.classifier = CLASSIFIER_HEADS[self.head](self.config, self.num_labels)

    def __call__(self, input_ids, attention_mask=None, token_type_ids=None, deterministic=True):
        hidden = self.electra(input_ids, attention_mask, token_type_ids, deterministic)
        return self.classifier(hidden, deterministic)


class TokenClassifier(nn.Module):
    """HF `ElectraForTokenClassification`: the discriminator encoder -> dropout ->
    `classifier` dense(num_labels) on every token. Returns [B, S, num_labels] logits."""

    config: ElectraConfig
    num_labels: int

    def setup(self):
        self.electra = ElectraModel(self.config)
        self.dropout = nn.Dropout(self.config.hidden_dropout)
        self.classifier = dense(self.num_labels, ("hidden", None), self.config, "classifier")

    def __call__(self, input_ids, attention_mask=None, token_type_ids=None, deterministic=True):
        hidden = self.electra(input_ids, attention_mask, token_type_ids, deterministic)
        return self.classifier(self.dropout(hidden, deterministic=deterministic))


def span_candidates(attention_mask: Array, token_type_ids: Array) -> Array:
    """[B, S] bool: where an answer span may start or end in `[CLS] question [SEP] context
    [SEP]` inputs: the context (segment 1, real tokens) and [CLS], which stands for "no
    answer" (google-research/electra `qa_tasks.py`'s `answer_mask`)."""
    is_cls = jnp.arange(attention_mask.shape[-1]) == 0
    return (attention_mask * token_type_ids).astype(bool) | is_cls


class AnswerabilityHead(nn.Module):
    """ELECTRA's SQuAD 2.0 answerable classifier (google-research/electra
    `finetune/qa/qa_tasks.py`, `answerable_uses_start_logits=True`): the [CLS] vector
    concatenated with the start-probability-weighted average of the hidden states ->
    dense(512) -> gelu -> dense(1). Trained on `is_impossible`, so its logit scores "no
    answer". transformers' `ElectraForQuestionAnswering` has no such head."""

    config: ElectraConfig
    hidden_size: int = 512  # the original's width

    @nn.compact
    def __call__(self, hidden: Array, start_logits: Array, candidates: Array) -> Array:
        cfg = self.config
        masked = jnp.where(candidates, start_logits.astype(jnp.float32), -1e9)
        start_probs = jax.nn.softmax(masked, axis=-1).astype(hidden.dtype)  # [B, S]
        start_feature = jnp.einsum("bs,bsh->bh", start_probs, hidden)
        features = jnp.concatenate([hidden[:, 0], start_feature], axis=-1)  # [B, 2H]
        features = gelu(dense(self.hidden_size, (None, None), cfg, "dense")(features))
        return dense(1, (None, None), cfg, "out_proj")(features)[:, 0]  # [B]


class QuestionAnswerer(nn.Module):
    """HF `ElectraForQuestionAnswering`: the discriminator encoder + `qa_outputs` dense(2)
    giving start and end logits per token; with `answerable_head`, also ELECTRA's SQuAD 2.0
    `AnswerabilityHead` (not part of the HF model).

    Returns {"start_logits": [B, S], "end_logits": [B, S] (+ "no_answer_logits": [B])},
    unmasked as in HF; losses and decoding restrict spans with `span_candidates`.
    """

    config: ElectraConfig
    answerable_head: bool = False

    def setup(self):
        self.electra = ElectraModel(self.config)
        self.qa_outputs = dense(2, ("hidden", None), self.config, "qa_outputs")
        if self.answerable_head:
            self.answerable_classifier = AnswerabilityHead(self.config)

    def __call__(self, input_ids, attention_mask=None, token_type_ids=None, deterministic=True):
        if attention_mask is None:
            attention_mask = jnp.ones_like(input_ids)
        if token_type_ids is None:
            token_type_ids = jnp.zeros_like(input_ids)
        hidden = self.electra(input_ids, attention_mask, token_type_ids, deterministic)
        span_logits = self.qa_outputs(hidden)  # [B, S, 2]
        outputs = {"start_logits": span_logits[..., 0], "end_logits": span_logits[..., 1]}
        if self.answerable_head:
            outputs["no_answer_logits"] = self.answerable_classifier(
                hidden, outputs["start_logits"], span_candidates(attention_mask, token_type_ids)
            )
        return outputs
