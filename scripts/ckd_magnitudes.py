"""Issue 16, deliver 1: how large each CKD term, and TinyBERT's attention-score MSE, and their gradients are at the
start of training.

One batch of 32 Rotten Tomatoes training reviews (max length 64) through the pretrained MiniLM-L6 (the teacher of
docs/results.md's narrow tables before its fine-tuning) and two students: the random-init 4 x 192 student of
minilm_narrow_rt.yaml (CKD's emb+skip map 6 -> 4) and a 3-layer student made of the teacher's layers 1, 3, 5 (map
6 -> 3, the "already distilled" start of CKD's task-specific stage). Each term is printed with the weight the CKD
runs of docs/results.md use (the paper's: 100 for the pair terms, 1000 for the angle terms; CE and KD 0.5) and the
L2 norm of the weighted term's gradient over all student parameters, once with kdkit's default normaliser
("valid") and once with the released code's divisors ("authors", kdkit.losses.relation).

The TinyBERT part (``--tinybert``) measures the one-stage sum of docs/results.md ("tinybert hidden+attn": 0.5 CE +
0.5 KD + hidden-state MSE + attention-score MSE on the uniform map) on the batch padded to 64 tokens, as TinyBERT's
released code pads, for the 3-layer student of teacher layers 0, 2, 4 (recipe tinybert), the random-init 4 x 192
student (random projection 192 -> 384, as kdkit adds one) and MPNet-base -> MiniLM-L6 (12 -> 6, projection
384 -> 768), each with kdkit's
reduction (mean over real tokens / real query-key pairs, averaged over layer pairs) and with the released code's
(MSE over every position of the padded batch, padded keys' scores zeroed, summed over layer pairs).
Run: .venv/bin/python scripts/ckd_magnitudes.py [--tinybert]
"""

import argparse
import copy

import torch
import torch.nn.functional as F
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

from kdkit import losses
from kdkit.assets import resolve_model
from kdkit.capture import attention_modules, attention_scores, num_heads
from kdkit.maps import emb_skip, uniform
from kdkit.tasks.classification.data import load_named_dataset

WEIGHTS = {"ce": 0.5, "kd": 0.5, "wr_pair": 100.0, "wr_angle": 1000.0, "ltr_pair": 100.0, "ltr_angle": 1000.0}


def base_terms(s_out, t_out, labels, temperature=2.0):
    """The 0.5·CE + 0.5·KD base every table shares: CE and T²-scaled KL at T 2 (unweighted)."""
    log_p = F.log_softmax(s_out.logits / temperature, -1)
    kd = F.kl_div(log_p, F.softmax(t_out.logits / temperature, -1), reduction="batchmean") * temperature ** 2
    return {"ce": F.cross_entropy(s_out.logits, labels), "kd": kd}


def terms(s_out, t_out, pairs, mask, labels, normaliser):
    """Each term's unweighted value, as kdkit's terms compute it (WR averaged over the mapped layer pairs)."""
    s_hidden, t_hidden = s_out.hidden_states, t_out.hidden_states

    def word(fn):
        return sum(fn(s_hidden[s], t_hidden[t], mask, normaliser=normaliser) for t, s in pairs) / len(pairs)

    s_stack = torch.stack([s_hidden[s] for _, s in pairs], 1)
    t_stack = torch.stack([t_hidden[t] for t, _ in pairs], 1)
    return {**base_terms(s_out, t_out, labels),
            "wr_pair": word(losses.word_relation_pair), "wr_angle": word(losses.word_relation_angle),
            "ltr_pair": losses.layer_relation_pair(s_stack, t_stack, mask, normaliser=normaliser),
            "ltr_angle": losses.layer_relation_angle(s_stack, t_stack, mask, normaliser=normaliser)}


def gradient_norm(loss, params):
    """L2 norm over ``params`` of the gradient of ``loss`` (the graph is kept for the next term)."""
    grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    return torch.sqrt(sum(g.pow(2).sum() for g in grads if g is not None)).item()


def print_table(values, weights, params):
    """One markdown row per term: value, weight, weighted value, gradient norm of the weighted term, ratio to CE's."""
    print("| term | value | weight | weighted | gradient norm (weighted) | vs CE's |")
    print("|---|---|---|---|---|---|")
    norms = {}
    for name, value in values.items():
        norms[name] = gradient_norm(weights[name] * value, params)
    for name, value in values.items():
        print(f"| {name} | {value.item():.5f} | {weights[name]:g} | {weights[name] * value.item():.4f} | "
              f"{norms[name]:.4f} | {norms[name] / norms['ce']:.1f}x |")


def table(title, student, t_out, pairs, batch, labels, normaliser):
    params = [p for p in student.parameters() if p.requires_grad]
    torch.manual_seed(0)  # the same dropout masks for both normalisers
    values = terms(student(**batch, output_hidden_states=True), t_out, pairs, batch["attention_mask"], labels,
                   normaliser)
    print(f"\n{title} (layer map {pairs}), normaliser {normaliser}\n")
    print_table(values, WEIGHTS, params)


TINYBERT_WEIGHTS = {"ce": 0.5, "kd": 0.5, "hidden_mse": 1.0, "attention_mse": 1.0}


def hooked_scores(model, batch):
    """Forward with hooks on every block's Q and K linears; returns (output, pre-softmax scores per block)."""
    modules = dict(model.named_modules())
    seen, handles, blocks = {}, [], attention_modules(model)
    for block in blocks:
        for role in ("query", "key"):
            handles.append(modules[block[role]].register_forward_hook(
                lambda _m, _a, out, key=block[role]: seen.__setitem__(key, out)))
    out = model(**batch, output_hidden_states=True)
    for handle in handles:
        handle.remove()
    heads = num_heads(model)
    return out, [attention_scores(seen[b["query"]], seen[b["key"]], heads) for b in blocks]


def tinybert_terms(s_out, s_scores, t_out, t_scores, pairs, project, mask, labels, reduction):
    """The one-stage TinyBERT sum's terms; ``pairs`` is the uniform map with (0, 0) for the embedding output, which
    the released code's hidden loss includes and docs/results.md's kdkit runs (hidden_mse on `uniform`) do not."""
    hidden, attention = [], []
    for t, s in pairs:
        h = project(s_out.hidden_states[s])
        if reduction == "kdkit":
            if s > 0:
                hidden.append(losses.hidden_mse(h, t_out.hidden_states[t], mask=mask))
        else:  # every position of the padded batch, padded tokens' states included
            hidden.append(F.mse_loss(h, t_out.hidden_states[t]))
        if s == 0:
            continue
        s_att, t_att = s_scores[s - 1], t_scores[t - 1]
        if reduction == "kdkit":
            attention.append(losses.attention_score_mse(s_att, t_att, mask=mask))
        else:  # released code: scores at padded keys zeroed (the additive mask), every other entry counted
            keys = mask[:, None, None, :].bool()
            attention.append(F.mse_loss(s_att * keys, t_att * keys))
    combine = (lambda xs: sum(xs) / len(xs)) if reduction == "kdkit" else sum
    return {**base_terms(s_out, t_out, labels), "hidden_mse": combine(hidden),
            "attention_mse": combine(attention)}


def tinybert_tables(teacher, t_batch, student, s_batch, labels, title, project=None):
    n_t, n_s = teacher.config.num_hidden_layers, student.config.num_hidden_layers
    pairs = uniform(n_t, n_s, include_embedding=True)
    project = project or torch.nn.Identity()
    params = [p for p in [*student.parameters(), *project.parameters()] if p.requires_grad]
    with torch.no_grad():
        t_out, t_scores = hooked_scores(teacher, t_batch)
    for reduction in ("kdkit", "released"):
        torch.manual_seed(0)
        s_out, s_scores = hooked_scores(student, s_batch)
        values = tinybert_terms(s_out, s_scores, t_out, t_scores, pairs, project, s_batch["attention_mask"],
                                labels, reduction)
        print(f"\n{title} (uniform map {pairs}), reduction {reduction}\n")
        print_table(values, TINYBERT_WEIGHTS, params)


def tinybert_main(path, tokenizer, teacher, rows, labels, narrow):
    batch = tokenizer(list(rows["text"]), max_length=64, truncation=True, padding="max_length", return_tensors="pt")
    layers = copy.deepcopy(teacher).train()
    layers.bert.encoder.layer = torch.nn.ModuleList([layers.bert.encoder.layer[i] for i in (0, 2, 4)])
    layers.config.num_hidden_layers = 3
    tinybert_tables(teacher, batch, layers, batch, labels, "3-layer student from the teacher's layers 0, 2, 4")
    tinybert_tables(teacher, batch, narrow, batch, labels, "Random-init 4 x 192 student",
                    project=torch.nn.Linear(192, 384))
    mpnet_path = resolve_model("mpnet-base")
    mpnet = AutoModelForSequenceClassification.from_pretrained(mpnet_path, num_labels=2).eval()
    m_batch = AutoTokenizer.from_pretrained(mpnet_path)(list(rows["text"]), max_length=64, truncation=True,
                                                         padding="max_length", return_tensors="pt")
    if not torch.equal(m_batch["attention_mask"], batch["attention_mask"]):
        raise SystemExit("MPNet and MiniLM tokenizations differ in length on this batch")
    student = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2).train()
    tinybert_tables(mpnet, dict(m_batch), student, batch, labels, "MPNet-base teacher, pretrained MiniLM-L6 student",
                    project=torch.nn.Linear(384, 768))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tinybert", action="store_true", help="TinyBERT's terms instead of CKD's")
    args = parser.parse_args()
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
    if args.tinybert:
        return tinybert_main(path, tokenizer, teacher, rows, labels, narrow)
    layers = copy.deepcopy(teacher).train()
    layers.bert.encoder.layer = torch.nn.ModuleList([layers.bert.encoder.layer[i] for i in (1, 3, 5)])
    layers.config.num_hidden_layers = 3
    for normaliser in losses.relation.NORMALISERS:
        table("Random-init 4 x 192 student", narrow, t_out, emb_skip(6, 4), batch, labels, normaliser)
        table("3-layer student from the teacher's layers 1, 3, 5", layers, t_out, emb_skip(6, 3), batch, labels,
              normaliser)


if __name__ == "__main__":
    main()
