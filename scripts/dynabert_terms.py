"""Issue 16: how large each distillation term and its gradient is for every depth of a DynaBERT depth stage, at the
stage's start (the width stage's student) — to see why a depth-0.5 sub-network trained with CKD's relation terms
ends up predicting one class while the same sub-network trained with KD alone does not.

For the stage recipe given (a run's ``stage-1/recipe.yaml``, whose student is the width stage's exported student)
and the fine-tuned teacher found in kdkit's cache, one batch of ``--batch`` training reviews (the first of the
training split) runs through the full-width student at each depth of the recipe, and each term is printed as the
run computes it (kdkit's terms, with the recipe's weights): its value, its weighted value, and the L2 norm over all
student parameters of the gradient of the weighted term; the last column divides by the gradient norm of the
logits term (``kd``). Dropout is off (eval mode), so the numbers are deterministic.

Run: .venv/bin/python scripts/dynabert_terms.py runs/results/dynabert-rt/ckd/seed-0/stage-1/recipe.yaml
"""

import argparse

from ckd_magnitudes import gradient_norm  # scripts/ is on the path when this file runs

from kdkit.config import load_recipe
from kdkit.engine.adaptive import full_index
from kdkit.students.adaptive import kept_layers, sub_network
from kdkit.tasks import get_task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe", help="a DynaBERT depth stage's recipe.yaml")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--width", type=float, default=1.0)
    args = parser.parse_args()

    task = get_task("classification")
    recipe = load_recipe(args.recipe)
    prep, splits, _ = task.prepare_all(recipe)  # the fine-tuned teacher is found in the cache, not trained again
    train = splits["train"]
    batch = task.collator(prep)([train[i] for i in range(args.batch)])
    teacher = task.signal_source(prep, None)(batch)  # the live teacher: no signal cache is built
    module = prep.module
    student = prep.student.eval()
    params = [p for p in student.parameters() if p.requires_grad]
    n_layers = student.config.num_hidden_layers
    print(f"{args.recipe}: width {args.width}, one batch of {args.batch} training reviews, eval mode\n")
    print("| depth | term | value | weight | weighted | gradient norm (weighted) | vs kd's |")
    print("|---|---|---|---|---|---|---|")
    for depth in recipe.student_adaptive().depths:
        with sub_network(student, args.width, depth):
            reps = module.student_forward(batch)
        reps = full_index(reps, kept_layers(n_layers, depth), n_layers)
        values = {term.name: (term, term(reps, teacher, batch)) for term in module.terms}
        norms = {name: gradient_norm(term.weight * value, params) for name, (term, value) in values.items()}
        for name, (term, value) in values.items():
            print(f"| {depth:g} | {name} | {value.item():.5f} | {term.weight:g} | {term.weight * value.item():.4f} | "
                  f"{norms[name]:.4f} | {norms[name] / norms['kd']:.1f}x |")


if __name__ == "__main__":
    main()
