import json

import pytest
import torch
from kdkit.errors import ConfigError
from kdkit.export import export_onnx
from tiny import run_cli

pytest.importorskip("onnxruntime")


def test_a_classifier_exports_with_parity_and_timing(tiny_teacher, tmp_path):
    report = export_onnx(str(tiny_teacher), tmp_path / "onnx", length=12, batch_sizes=(1, 2), repeats=2)
    assert report["kind"] == "sequence classifier"
    assert report["parity_max_abs_difference"] < 1e-4
    assert set(report["latency_ms"]) == {"1", "2"} and report["latency_ms"]["1"]["onnxruntime_ms"] > 0
    assert (tmp_path / "onnx" / "model.onnx").is_file() and (tmp_path / "onnx" / "tokenizer_config.json").is_file()
    assert json.loads((tmp_path / "onnx" / "onnx_report.json").read_text())["kind"] == "sequence classifier"


@pytest.mark.slow  # ~35 s on 2 cores (torch.onnx export of a causal LM); the classifier parity test stays default
def test_a_compressed_causal_lm_exports_and_runs_in_onnxruntime(tmp_path):
    import onnxruntime
    from transformers import AutoModelForCausalLM

    from kdkit.students import embedding as ec
    from tiny import make_tiny_lm

    folder = make_tiny_lm(tmp_path / "lm")
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    matrix = ec.embedding_matrix(model)
    v, d = matrix.shape
    ec.replace_embedding(model, ec.compress_embedding(matrix, ec.frequency_scores([[4, 4, 5]], v), (v + d) * 5))
    ec.save_with_code(model, tmp_path / "student")
    for file in ("tokenizer.json", "tokenizer_config.json"):
        (tmp_path / "student" / file).write_bytes((folder / file).read_bytes())
    report = export_onnx(str(tmp_path / "student"), tmp_path / "onnx", length=10, batch_sizes=(1,), repeats=2)
    assert report["kind"] == "causal LM" and report["compressed_embedding"]
    session = onnxruntime.InferenceSession(str(tmp_path / "onnx" / "model.onnx"))
    ids = torch.tensor([[3, 5, 7, 2, 9]])
    got = session.run(None, {"input_ids": ids.numpy(), "attention_mask": torch.ones_like(ids).numpy()})[0]
    with torch.no_grad():
        assert torch.allclose(torch.from_numpy(got), model(ids).logits, atol=1e-4)


def test_refusals_leave_nothing_behind(tiny_teacher, tmp_path):
    from tiny import make_tiny_t5

    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("x")
    with pytest.raises(ConfigError, match="not empty"):
        export_onnx(str(tiny_teacher), tmp_path / "full")
    with pytest.raises(ConfigError, match="encoder-decoder"):
        export_onnx(str(make_tiny_t5(tmp_path / "t5")), tmp_path / "t5-onnx")
    assert not (tmp_path / "t5-onnx").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full", "t5"]


def test_cli_export_errors_are_one_line_exit_2(tmp_path, capsys):
    code, _, err = run_cli(["export", str(tmp_path / "missing"), "--onnx", str(tmp_path / "out")], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "MODEL" in err and "does not exist" in err
    assert not (tmp_path / "out").exists()


def test_cli_export_prints_parity_and_latency(tiny_teacher, tmp_path, capsys):
    code, out, _ = run_cli(["export", str(tiny_teacher), "--onnx", str(tmp_path / "o"), "--length", "8",
                            "--repeats", "2"], capsys)
    assert code == 0 and "max |logit difference|" in out and "batch 8, 8 tokens" in out
