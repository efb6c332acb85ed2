from kdkit.report.results import metric_header, metric_names, metrics_of, percent, primary_of


def test_metrics_of_reads_new_and_old_entries():
    assert metrics_of({"metrics": {"mrr@10": 0.3}, "accuracy": 0.9}) == {"mrr@10": 0.3}
    assert metrics_of({"accuracy": 0.8, "ece": 0.05}) == {"accuracy": 0.8, "ece": 0.05}
    assert metrics_of({"accuracy": 0.8}) == {"accuracy": 0.8}
    assert metrics_of({"accuracy": 0.8, "ece": None}) == {"accuracy": 0.8}  # old generations rows stored None


def test_primary_of_defaults_to_accuracy_for_old_results():
    assert primary_of({"primary_metric": "rouge_l"}) == "rouge_l"
    assert primary_of({"student": {"accuracy": 0.8}}) == "accuracy"


def test_metric_names_put_the_primary_first_then_first_appearance():
    entries = [{"metrics": {"ece": 0.1, "accuracy": 0.8}}, {"metrics": {"f1": 0.7, "accuracy": 0.7, "ece": 0.2}}]
    assert metric_names("accuracy", entries) == ["accuracy", "ece", "f1"]


def test_headers_use_the_name_as_is_and_mark_lower_is_better():
    assert metric_header("mrr@10") == "mrr@10 (%)" and metric_header("rouge_l") == "rouge_l (%)"
    assert metric_header("ece") == "ece (%) ↓"
    assert percent(0.82825) == "82.83" and percent(None) == "—"
