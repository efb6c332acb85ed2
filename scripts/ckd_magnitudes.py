"""Issue 16, deliver 1 (first measurement): how large each CKD term and its gradient are at the start of training.

One batch of 32 Rotten Tomatoes training reviews (max length 64) through the pretrained MiniLM-L6 (the teacher of
docs/results.md's narrow tables before its fine-tuning) and two students: the random-init 4 x 192 student of
minilm_narrow_rt.yaml (CKD's emb+skip map 6 -> 4) and a 3-layer student made of the teacher's layers 1, 3, 5 (map
6 -> 3, the "already distilled" start of CKD's task-specific stage). Each term is printed with the weight the CKD
runs of docs/results.md use (the paper's: 100 for the pair terms, 1000 for the angle terms; CE and KD 0.5) and the
L2 norm of the weighted term's gradient over all student parameters, once with kdkit's default normaliser
("valid") and once with the released code's divisors ("authors", kdkit.losses.relation).
Run: .venv/bin/python scripts/ckd_magnitudes.py
"""

import copy

import torch
import torch.nn.functional as F
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

from kdkit import losses
from kdkit.assets import resolve_model
from kdkit.maps import emb_skip
from kdkit.tasks.classification.data import load_named_dataset

WEIGHTS = {"ce": 0.5, "kd": 0.5, "wr_pair": 100.0, "wr_angle": 1000.0, "ltr_pair": 100.0, "ltr_angle": 1000.0}


def terms(s_out, t_out, pairs, mask, labels, normaliser, temperature=2.0):
    """Each term's unweighted value, as kdkit's terms compute it (WR averaged over the mapped layer pairs)."""
    log_p = F.log_softmax(s_out.logits / temperature, -1)
    kd = F.kl_div(log_p, F.softmax(t_out.logits / temperature, -1), reduction="batchmean") * temperature ** 2
    s_hidden, t_hidden = s_out.hidden_states, t_out.hidden_states

    def word(fn):
        return sum(fn(s_hidden[s], t_hidden[t], mask, normaliser=normaliser) for t, s in pairs) / len(pairs)

    s_stack = torch.stack([s_hidden[s] for _, s in pairs], 1)
    t_stack = torch.stack([t_hidden[t] for t, _ in pairs], 1)
    return {"ce": F.cross_entropy(s_out.logits, labels), "kd": kd,
            "wr_pair": word(losses.word_relation_pair), "wr_angle": word(losses.word_relation_angle),
            "ltr_pair": losses.layer_relation_pair(s_stack, t_stack, mask, normaliser=normaliser),
            "ltr_angle": losses.layer_relation_angle(s_stack, t_stack, mask, normaliser=normaliser)}


def table(title, student, t_out, pairs, batch, labels, normaliser):
    params = [p for p in student.parameters() if p.requires_grad]
    torch.manual_seed(0)  # the same dropout masks for both normalisers
    values = terms(student(**batch, output_hidden_states=True), t_out, pairs, batch["attention_mask"], labels,
                   normaliser)
    print(f"\n{title} (layer map {pairs}), normaliser {normaliser}\n")
    print("| term | value | weight | weighted | gradient norm (weighted) | vs CE's |")
    print("|---|---|---|---|---|---|")
    norms = {}
    for name, value in values.items():
        grads = torch.autograd.grad(WEIGHTS[name] * value, params, retain_graph=True, allow_unused=True)
        norms[name] = torch.sqrt(sum(g.pow(2).sum() for g in grads if g is not None)).item()
    for name, value in values.items():
        print(f"| {name} | {value.item():.5f} | {WEIGHTS[name]:g} | {WEIGHTS[name] * value.item():.4f} | "
              f"{norms[name]:.4f} | {norms[name] / norms['ce']:.1f}x |")


def main():
    torch.manual_seed(0)
    path = resolve_model("minilm-l6")
    tokenizer = AutoTokenizer.from_pretrained(path)
    teacher = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2).eval()
    rows = load_named_dataset("rotten_tomatoes").splits["train"].select(range(32))
    batch = tokenizer(list(rows["text"]), max_length=64, truncation=True, padding=True, return_tensors="pt")
    labels = torch.tensor(rows["label"])
    with torch.no_grad():
        t_out = teacher(**batch, output_hidden_states=True)
    narrow = AutoModelForSequenceClassification.from_config(AutoConfig.from_pretrained(
        path, num_labels=2, num_hidden_layers=4, hidden_size=192, intermediate_size=768, num_attention_heads=12))
    layers = copy.deepcopy(teacher).train()
    layers.bert.encoder.layer = torch.nn.ModuleList([layers.bert.encoder.layer[i] for i in (1, 3, 5)])
    layers.config.num_hidden_layers = 3
    for normaliser in losses.relation.NORMALISERS:
        table("Random-init 4 x 192 student", narrow, t_out, emb_skip(6, 4), batch, labels, normaliser)
        table("3-layer student from the teacher's layers 1, 3, 5", layers, t_out, emb_skip(6, 3), batch, labels,
              normaliser)


if __name__ == "__main__":
    main()
