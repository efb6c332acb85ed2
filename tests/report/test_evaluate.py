import pytest
import torch
from datasets import Dataset
from torch import nn
from transformers import BertConfig, BertForSequenceClassification

from kdkit.errors import ConfigError, DataError
from kdkit.report.calibration import expected_calibration_error
from kdkit.report.evaluate import count_parameters, evaluate_classifier, measure_latency
from kdkit.tasks.classification import DataCollator


@pytest.fixture(scope="module")
def tiny_bert():
    torch.manual_seed(0)
    config = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=37, num_labels=2)
    return BertForSequenceClassification(config)


@pytest.fixture(scope="module")
def examples():
    g = torch.Generator().manual_seed(1)
    rows = []
    for i in range(13):
        ids = [2] + torch.randint(5, 100, (int(torch.randint(1, 9, (1,), generator=g)),), generator=g).tolist()
        rows.append({"input_ids": ids, "attention_mask": [1] * len(ids), "labels": i % 2, "text": "unused"})
    return Dataset.from_list(rows)


def test_count_parameters_counts_shared_tensors_once(tiny_bert):
    assert count_parameters(tiny_bert) == sum(p.numel() for p in tiny_bert.parameters())
    tied = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 10, bias=False))
    tied[1].weight = tied[0].weight
    assert count_parameters(tied) == 40


def test_accuracy_matches_unpadded_one_by_one_predictions(tiny_bert, examples):
    tiny_bert.train()
    result = evaluate_classifier(tiny_bert, examples, DataCollator(pad_token_id=0), batch_size=4, progress=False)
    assert tiny_bert.training  # the caller's mode is restored
    tiny_bert.eval()
    with torch.no_grad():
        probs = torch.cat([tiny_bert(input_ids=torch.tensor([row["input_ids"]])).logits.softmax(-1)
                           for row in examples])
    labels = torch.tensor([row["labels"] for row in examples])
    hits = (probs.argmax(-1) == labels).int().tolist()
    correct = sum(hits)
    ece = expected_calibration_error(probs, labels)
    top = probs.argmax(-1).bincount().max().item()
    assert result == {"accuracy": pytest.approx(correct / 13), "ece": pytest.approx(ece, abs=1e-6), "n": 13,
                      "correct": hits, "top_share": pytest.approx(top / 13)}


def test_a_collapsed_classifier_has_top_share_one(examples):
    class Constant(nn.Module):  # always class 1, whatever the input
        def __init__(self):  # evaluation puts the inputs on the device of the model's parameters
            super().__init__()
            self.unused = nn.Parameter(torch.zeros(1))

        def forward(self, input_ids, attention_mask=None):
            return torch.tensor([[0.0, 1.0]]).expand(len(input_ids), 2)

    class Alternating(Constant):  # class (first token id) % 2: both classes occur
        def forward(self, input_ids, attention_mask=None):
            return nn.functional.one_hot(input_ids[:, 1] % 2, 2).float()

    collator = DataCollator(pad_token_id=0)
    assert evaluate_classifier(Constant(), examples, collator, progress=False)["top_share"] == 1.0
    assert evaluate_classifier(Alternating(), examples, collator, progress=False)["top_share"] < 1.0


def test_empty_dataset_is_a_data_error(tiny_bert, examples):
    with pytest.raises(DataError, match="no examples"):
        evaluate_classifier(tiny_bert, examples.select([]), DataCollator(0), progress=False)


class _Counting(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(3, 2)
        self.calls = 0

    def forward(self, input_ids, attention_mask):
        self.calls += 1
        return self.linear(input_ids.float())


def test_latency_runs_warmup_plus_repeats_and_only_passes_model_inputs():
    model = _Counting()
    batch = {"input_ids": torch.ones(2, 3, dtype=torch.long), "attention_mask": torch.ones(2, 3, dtype=torch.long),
             "labels": torch.zeros(2, dtype=torch.long), "teacher_input_ids": torch.ones(2, 5, dtype=torch.long)}
    result = measure_latency(model, batch, repeats=5, warmup=2)
    assert model.calls == 7
    assert set(result) == {"median_s", "p90_s"}
    assert 0 < result["median_s"] <= result["p90_s"]


def test_latency_on_a_real_model_is_in_inference_mode(tiny_bert, examples):
    batch = DataCollator(0)([examples[i] for i in range(4)])
    result = measure_latency(tiny_bert, batch, repeats=3, warmup=1)
    assert 0 < result["median_s"] < 1.0


def test_latency_needs_at_least_one_repeat():
    with pytest.raises(ConfigError, match="repeats 0"):
        measure_latency(_Counting(), {"input_ids": torch.ones(1, 3), "attention_mask": torch.ones(1, 3)}, repeats=0)
