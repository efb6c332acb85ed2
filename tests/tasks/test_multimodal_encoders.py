"""The multimodal encoders, inputs and masking rules (issue 19): image scaling and compositing, tabular
standardisation and vocabularies, masked views, the fusion classifier on tiny encoders, EfficientNet-Lite0's
ImageNet weights."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from transformers import AutoModel, AutoTokenizer

from kdkit.errors import DataError
from kdkit.tasks.multimodal.data import MISSING, Modality
from kdkit.tasks.multimodal.encoders import (FusionClassifier, ImageEncoder, TabularEncoder, TabularSpec,
                                             TextEncoder, masked_inputs, modality_inputs, read_images)
from tiny import make_tiny_teacher


def test_images_are_scaled_like_efficientnet_lite_and_transparency_becomes_white(tmp_path):
    Image.new("RGBA", (4, 4), (255, 0, 0, 255)).save(tmp_path / "red.png")
    Image.new("RGBA", (4, 4), (0, 0, 0, 0)).save(tmp_path / "clear.png")
    pixels = read_images([str(tmp_path / "red.png"), str(tmp_path / "clear.png")], size=8)
    assert pixels.shape == (2, 3, 8, 8)
    assert torch.allclose(pixels[0, 0], torch.full((8, 8), 1.0))  # red: (255 - 127) / 128
    assert torch.allclose(pixels[0, 1], torch.full((8, 8), -127 / 128))
    assert torch.allclose(pixels[1], torch.full((3, 8, 8), 1.0))  # fully transparent -> white -> (255-127)/128
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"^image '.*bad\.png' cannot be read: UnidentifiedImageError$"):
        read_images([str(tmp_path / "bad.png")])


TABLE = Modality("tabular", numeric=("age", "likes"), categorical=("shop",))


def test_tabular_inputs_are_standardised_on_train_with_missing_indicators_and_ids():
    train = pd.DataFrame({"age": [20.0, 40.0, np.nan], "likes": [1.0, 1.0, 1.0], "shop": ["b", "a", MISSING]})
    spec = TabularSpec.from_train(train, TABLE)
    assert spec.vocab == (("a", "b"),) and spec.mean.tolist() == [30.0, 1.0] and spec.std.tolist() == [10.0, 1.0]
    other = pd.DataFrame({"age": [50.0, np.nan], "likes": [3.0, 1.0], "shop": ["a", "unseen"]})
    inputs = spec.inputs(other)
    assert inputs["numeric"].tolist() == [[2.0, 2.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]]  # likes: std 0 -> 1
    assert inputs["categorical"].tolist() == [[1], [0]]  # "a" is id 1; unseen and missing share 0
    masked = masked_inputs("tabular", inputs)
    assert masked["numeric"].tolist() == [[0.0, 0.0, 1.0, 1.0]] * 2 and masked["categorical"].tolist() == [[0], [0]]


@pytest.fixture(scope="module")
def tiny_text(tmp_path_factory):
    folder = make_tiny_teacher(tmp_path_factory.mktemp("mm") / "bert", layers=2)
    return AutoTokenizer.from_pretrained(folder), AutoModel.from_pretrained(folder)


def test_fusion_classifier_on_every_modality_and_on_masked_views(tmp_path, tiny_text):
    tokenizer, bert = tiny_text
    for i, colour in enumerate([(255, 0, 0), (0, 0, 255), (0, 255, 0)]):
        Image.new("RGB", (9, 9), colour).save(tmp_path / f"{i}.png")
    frame = pd.DataFrame({"image": [str(tmp_path / f"{i}.png") for i in range(3)],
                          "text": ["good great", "bad", ""], "age": [20.0, np.nan, 30.0], "likes": [1.0, 2.0, 3.0],
                          "shop": ["a", "b", MISSING], "label": [0, 1, 0]})
    modalities = {"picture": Modality("image", ("image",)), "words": Modality("text", ("text",)), "table": TABLE}
    spec = TabularSpec.from_train(frame, TABLE)
    inputs = modality_inputs(frame, modalities, specs={"table": spec}, tokenizers={"words": tokenizer}, image_size=16)
    assert inputs["picture"]["pixels"].shape == (3, 3, 16, 16) and inputs["words"]["input_ids"].shape[0] == 3
    torch.manual_seed(0)
    model = FusionClassifier({"picture": ImageEncoder("small_cnn", width=8), "words": TextEncoder(bert),
                              "table": TabularEncoder(spec, dim=16)}, num_labels=2).eval()
    logits = model(inputs)
    assert logits.shape == (3, 2) and torch.isfinite(logits).all()
    masked = {**inputs, "words": masked_inputs("text", inputs["words"], tokenizer)}
    assert masked["words"]["input_ids"].shape == (3, 2)  # [CLS] [SEP]: the empty text
    assert torch.equal(masked["words"]["input_ids"][2], inputs["words"]["input_ids"][2][:2])  # row 3 was empty already
    changed = model(masked)
    assert torch.allclose(changed[2], logits[2], atol=1e-6) and not torch.allclose(changed[0], logits[0])
    blank = {**inputs, "picture": masked_inputs("image", inputs["picture"])}
    assert not torch.allclose(model(blank), logits)


def test_efficientnet_lite0_loads_its_imagenet_weights():
    torch.manual_seed(0)
    encoder = ImageEncoder().eval()
    assert encoder.dim == 1280 and sum(p.numel() for p in encoder.parameters()) == 4_652_008
    with torch.no_grad():
        features = encoder(torch.zeros(1, 3, 72, 72))
    untrained = ImageEncoder(pretrained=False).eval()
    with torch.no_grad():
        assert features.shape == (1, 1280) and not torch.allclose(features, untrained(torch.zeros(1, 3, 72, 72)))


def test_all_views_at_once_equal_one_pass_per_view(tiny_text, tmp_path):
    from kdkit.tasks.multimodal.encoders import empty_text, masked_view, only_view, removed_view

    tokenizer, bert = tiny_text
    Image.new("RGBA", (8, 8), (255, 0, 0, 255)).save(tmp_path / "a.png")
    Image.new("RGBA", (8, 8), (0, 0, 255, 255)).save(tmp_path / "b.png")
    frame = pd.DataFrame({"path": [str(tmp_path / "a.png"), str(tmp_path / "b.png")], "words": ["good fun", "bad"],
                          "age": [20.0, np.nan], "likes": [1.0, 2.0], "shop": ["a", "b"]})
    modalities = {"picture": Modality("image", ("path",)), "words": Modality("text", ("words",)), "table": TABLE}
    spec = TabularSpec.from_train(frame, TABLE)
    inputs = modality_inputs(frame, modalities, specs={"table": spec}, tokenizers={"words": tokenizer},
                             image_size=16)
    torch.manual_seed(0)
    model = FusionClassifier({"picture": ImageEncoder("small_cnn", width=4), "words": TextEncoder(bert),
                              "table": TabularEncoder(spec, embed=2, dim=4)}, num_labels=3, hidden=8).eval()
    kinds = {name: m.kind for name, m in modalities.items()}
    empty = {"words": empty_text(tokenizer)}
    with torch.no_grad():
        out = model(inputs, masked_view(inputs, kinds, empty))
        separate = [model(inputs)] + [model(only_view(inputs, m, kinds, empty)) for m in kinds] + \
            [model(removed_view(inputs, m, kinds, empty)) for m in kinds]
    assert out.shape == (7, 2, 3)
    assert torch.allclose(out, torch.stack(separate), atol=1e-5)
    assert not torch.allclose(out[1], out[2])  # the views differ
