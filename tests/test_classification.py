"""lmviz.analyses.classification: seed 002's logits -> labels and the loss per label, against plain transformers.
"""


import pytest
import torch
import torch.nn.functional as F
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    BertForSequenceClassification,
    GPT2ForSequenceClassification,
)

from lmviz.analyses import classification
from lmviz.model import models
from lmviz.present.tables import heads as tables
from lmviz.errors import LmvizError
from tests import bounds

# ---------------------------------------------------------- classification


def test_classifier_logits_labels_and_losses(tiny_classifier_dirs):
    lm = models.load(tiny_classifier_dirs["bert"])
    reference = BertForSequenceClassification.from_pretrained(tiny_classifier_dirs["bert"]).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_classifier_dirs["bert"])
    inputs = tokenizer("this is an example", return_tensors="pt")
    with torch.no_grad():
        logits = reference(**inputs).logits[0]
        pooled = reference.bert(**inputs).pooler_output[0]  # seed 002: o.pooler_output
    own = pooled @ reference.classifier.weight.T + reference.classifier.bias  # logitsOwnCalculation
    result = classification.classify(lm, "this is an example")
    assert result.labels == ("negative", "positive") and not result.generic_labels
    # one forward pass on each side, the same operations on the same input
    assert torch.equal(result.logits, logits) and torch.equal(result.pooled, pooled)
    bounds.assert_linear_close(result.logits_by_hand, own, pooled, reference.classifier.weight, reference.classifier.bias)
    eps = bounds.log_softmax_bound(logits)
    p = torch.softmax(logits.double(), -1)
    assert ((result.probs.double() - p).abs() <= bounds.prob_bound(p, eps)).all()
    expected = -torch.log_softmax(logits.double(), -1)  # the loss if each label were the true one
    assert ((torch.tensor(result.loss_per_label.tolist()) - expected).abs() <= 2 * eps).all()
    assert tables.classification_table(result)["label"].tolist() == ["negative", "positive"]


def test_classifier_without_label_names_and_decoder_classifier(tiny_classifier_dirs):
    unnamed = classification.classify(models.load(tiny_classifier_dirs["bert_unnamed"]), "paris")
    assert unnamed.generic_labels and unnamed.labels == ("LABEL_0", "LABEL_1")
    lm = models.load(tiny_classifier_dirs["gpt2"])
    reference = GPT2ForSequenceClassification.from_pretrained(tiny_classifier_dirs["gpt2"]).eval()
    ids = torch.tensor([lm.tokenizer("The capital of France")["input_ids"]])
    with torch.no_grad():
        out = reference(input_ids=ids, output_hidden_states=True)
    result = classification.classify(lm, "The capital of France")
    assert len(result.labels) == 3 and result.generic_labels
    assert torch.equal(result.logits, out.logits[0])  # one forward pass on each side, the same operations
    last = out.hidden_states[-1][0, -1]
    bounds.assert_linear_close(result.logits_by_hand, last @ reference.score.weight.T, last, reference.score.weight)


def test_random_head_like_nn_linear(tiny_dirs, tiny_gpt2):
    head = classification.random_head(tiny_gpt2, ["negative", "positive"], pooling="last", seed=3)
    assert head.weight.shape == (2, 32) and head.bias.shape == (2,)
    bound = 1 / 32**0.5  # nn.Linear's default init: U(-1/sqrt(in), 1/sqrt(in))
    assert head.weight.abs().max() <= bound and head.bias.abs().max() <= bound
    assert torch.equal(classification.random_head(tiny_gpt2, ["a", "b"], seed=3).weight, head.weight)
    assert not torch.equal(classification.random_head(tiny_gpt2, ["a", "b"], seed=4).weight, head.weight)
    reference = AutoModelForCausalLM.from_pretrained(tiny_dirs["gpt2"])
    text = "The capital of France is"
    ids = torch.tensor([tiny_gpt2.tokenizer(text)["input_ids"]])
    with torch.no_grad():
        hidden = reference(ids, output_hidden_states=True).hidden_states[-1][0]
    for pooling, pooled in [("last", hidden[-1]), ("first", hidden[0]), ("mean", hidden.mean(0))]:
        head = classification.random_head(tiny_gpt2, ["negative", "positive"], pooling=pooling, seed=3)
        result = classification.classify_with_head(tiny_gpt2, head, text)
        logits = pooled @ head.weight.T + head.bias
        # pooled from the trace (the same forward pass) in float32, here too; the head's product in another order
        bounds.assert_linear_close(result.logits, logits, pooled, head.weight, head.bias)
        eps = bounds.log_softmax_bound(logits, float(bounds.linear_bound(pooled, head.weight, head.bias).max()))
        p = torch.softmax(logits.double(), -1)
        assert ((result.probs.double() - p).abs() <= bounds.prob_bound(p, 2 * eps)).all()
        assert result.loss_per_label.tolist() == pytest.approx(
            [float(F.cross_entropy(logits[None], torch.tensor([i]))) for i in range(2)], abs=1e-5)


def test_fitted_head_on_embedded_model(smollm):
    examples = classification.parse_examples(
        "positive: What a lovely day, I enjoyed every minute.\n"
        "positive: The food was delicious and the staff were friendly.\n"
        "\n"
        "negative: This was a terrible waste of time.\n"
        "negative: The service was awful and the room was dirty.\n"
    )
    head = classification.fit_head(smollm, examples, pooling="last")
    assert head.labels == ("positive", "negative") and head.train_accuracy == 1.0
    features = []
    for _, sentence in examples:
        ids = torch.tensor([smollm.tokenizer(sentence)["input_ids"]])
        with torch.no_grad():
            features.append(smollm.model(ids, output_hidden_states=True).hidden_states[-1][0, -1])
    logits = torch.stack(features) @ head.weight.T + head.bias
    assert logits.argmax(-1).tolist() == [0, 0, 1, 1]
    assert classification.fit_head(smollm, examples, pooling="last") is head  # cached
    happy = classification.classify_with_head(smollm, head, "I really enjoyed the concert, it was great.")
    sad = classification.classify_with_head(smollm, head, "The hotel was dirty and the staff were rude.")
    assert happy.probs[0] > sad.probs[0]


def test_classification_bad_input(tiny_gpt2, tiny_classifier_dirs):
    with pytest.raises(LmvizError, match="two labels"):
        classification.random_head(tiny_gpt2, ["only"])
    with pytest.raises(LmvizError, match="differ"):
        classification.random_head(tiny_gpt2, ["a", "a"])
    with pytest.raises(LmvizError, match="empty"):
        classification.random_head(tiny_gpt2, ["a", " "])
    with pytest.raises(LmvizError, match="Line 2"):
        classification.parse_examples("good: fine\nno colon here")
    with pytest.raises(LmvizError, match="two labels"):
        classification.fit_head(tiny_gpt2, [("good", "fine"), ("good", "great")])
    with pytest.raises(LmvizError, match="pooling"):
        classification.random_head(tiny_gpt2, ["a", "b"], pooling="max")
    with pytest.raises(LmvizError, match="not a sequence classifier"):
        classification.classify(tiny_gpt2, "hello")
